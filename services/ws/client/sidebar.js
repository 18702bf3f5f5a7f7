// The conversation list and the forms above it (new chat, new group).

import { $, fmtFull, fmtShort, h, paintAvatar, reconcile } from "./dom.js";
import { presenceDot, presenceOf } from "./presence.js";
import { receiptOf } from "./receipts.js";
import { api, ctx } from "./state.js";
import { USER_ID_RE } from "./store.js";
import { resolveUsers } from "./users.js";

const convEls = new Map(); // key -> { li, sig }

export function resetSidebar() {
  $("conv-list").replaceChildren();
  delete $("conv-list").dataset.server;
  convEls.clear();
}

export function convName(c) {
  const { store } = ctx;
  if (c.kind === "g") return store.groups.get(c.peer)?.name || c.name || c.peer;
  return c.peer === store.me ? `${c.peer} (you)` : c.peer;
}

function convContent(c, name, last, unread) {
  const me = ctx.store.me;
  const av = h("span", { class: "avatar", "aria-hidden": "true" });
  paintAvatar(av, c.kind === "g" ? name : c.peer, c.kind === "g");
  let preview = "No messages yet";
  if (last) {
    const tick = !last.notice && last.from === me && last.status === "sent" ? { sent: "✓ ", delivered: "✓✓ ", read: "✓✓ " }[receiptOf(last).state] : "";
    const who = last.notice ? "" : last.from === me ? `${tick}You: ` : c.kind === "g" ? `${last.from}: ` : "";
    preview = (last.status === "failed" ? "⚠ " : "") + who + (last.deletedAt != null ? "message deleted" : last.body.replace(/\s+/g, " "));
  }
  return [
    h("span", { class: "avatar-wrap" }, av,
      c.kind === "d" ? presenceDot(c.peer, { "data-testid": "presence-dot" }) : null),
    h("span", { class: "conv-main" },
      h("span", { class: "conv-top" },
        h("span", { class: "conv-name", "data-testid": "conv-name" }, name),
        last ? h("time", { class: "conv-time", title: fmtFull(last.ts) }, fmtShort(last.ts)) : null),
      h("span", { class: "conv-bottom" },
        h("span", { class: "conv-preview", "data-testid": "conv-preview" }, preview),
        unread
          ? h("span", { class: "badge", "data-testid": "conv-unread" },
              h("span", { "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)),
              h("span", { class: "sr-only" }, `, ${unread} unread message${unread === 1 ? "" : "s"}`))
          : null)),
  ];
}

export function renderSidebar() {
  const { store, activeKey } = ctx;
  if (!store) return;
  const convs = store.conversations();
  const live = new Set();
  const nodes = convs.map((c) => {
    const last = store.lastMessage(c);
    const unread = store.unread(c);
    const name = convName(c);
    const active = c.key === activeKey;
    const receipt = last?.from === store.me && last.status === "sent" ? receiptOf(last).state : null;
    const sig = JSON.stringify([name, last?.key, last?.status, last?.ts, unread, active, c.kind === "d" && presenceOf(c.peer), last && fmtShort(last.ts), receipt, last?.body]);
    let e = convEls.get(c.key);
    if (!e) {
      const li = h(
        "li",
        { class: "conv", "data-testid": "conv-item", dataset: { conv: c.key } },
        h("button", { type: "button", class: "conv-btn" }),
        h("button", { type: "button", class: "ghost conv-close", "data-testid": "conv-close", title: "Remove from the list" }, "×"),
      );
      e = { li, sig: "" };
      convEls.set(c.key, e);
    }
    if (e.sig !== sig) {
      e.sig = sig;
      e.li.classList.toggle("active", active);
      e.li.classList.toggle("has-unread", unread > 0);
      e.li.dataset.unread = String(unread);
      const btn = e.li.firstElementChild;
      if (active) btn.setAttribute("aria-current", "true");
      else btn.removeAttribute("aria-current");
      btn.replaceChildren(...convContent(c, name, last, unread));
      e.li.lastElementChild.setAttribute("aria-label", `Remove ${name} from the list`);
    }
    live.add(c.key);
    return e.li;
  });
  for (const k of convEls.keys()) if (!live.has(k)) convEls.delete(k);
  reconcile($("conv-list"), nodes);
  $("conv-empty").hidden = convs.length > 0;
  const total = store.totalUnread();
  document.title = total ? `(${total}) Relay` : "Relay";
}

function sideError(text) {
  $("side-error").textContent = text;
}

/** `openConv(key)` opens a conversation, `closeConv(key)` removes one from the list. */
export function initSidebar({ openConv, closeConv }) {
  $("conv-list").addEventListener("click", (e) => {
    const li = e.target.closest("[data-conv]");
    if (!li) return;
    if (e.target.closest(".conv-close")) closeConv(li.dataset.conv);
    else openConv(li.dataset.conv);
  });

  $("new-chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sideError("");
    const input = $("new-chat-input");
    const id = input.value.trim();
    if (!USER_ID_RE.test(id)) {
      sideError("A user id is 1 to 64 letters, digits, or _ . -");
      return;
    }
    input.value = "";
    // Usernames are unique regardless of case: "Bob" opens the chat with "bob".
    const { canonical } = await resolveUsers([id]);
    if (ctx.store) openConv(`d:${canonical[0] ?? id}`);
  });

  $("new-group").addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || !$("new-group").open) return;
    e.stopPropagation();
    $("new-group").open = false;
    $("new-group").querySelector("summary").focus();
  });

  $("new-group-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sideError("");
    const { store } = ctx;
    const name = $("new-group-name").value.trim();
    const members = [...new Set($("new-group-members").value.split(/[\s,;]+/).filter(Boolean))];
    if (!name) return sideError("Give the group a name.");
    const bad = members.find((u) => !USER_ID_RE.test(u));
    if (bad) return sideError(`"${bad}" is not a valid user id.`);
    const button = e.submitter ?? $("new-group-form").querySelector("button");
    button.disabled = true;
    try {
      const { canonical, unknown } = await resolveUsers(members.filter((u) => u.toLowerCase() !== store.me.toLowerCase()));
      if (unknown.length) {
        sideError(`No registered user ${unknown.map((u) => `"${u}"`).join(", ")}. Check the name${unknown.length > 1 ? "s" : ""}.`);
        return;
      }
      const g = await api.createGroup(name, canonical);
      store.setGroups([...store.groups.values()].filter((x) => x.groupId !== g.groupId).concat([g]));
      store.touch(`g:${g.groupId}`);
      $("new-group-name").value = "";
      $("new-group-members").value = "";
      $("new-group").open = false;
      openConv(`g:${g.groupId}`);
    } catch (ex) {
      sideError(`Could not create the group: ${ex.message}`);
    } finally {
      button.disabled = false;
    }
  });
}
