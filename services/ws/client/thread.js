// The open conversation: its header, the message thread with history paging, and navigation
// (the URL hash names the open conversation).

import { ApiError } from "./api.js";
import { draftOf, syncComposer } from "./composer.js";
import { $, dayKey, fmtDay, fmtFull, fmtTime, h, hue, linkify, paintAvatar, reconcile } from "./dom.js";
import { renderMembers } from "./groups.js";
import { ERROR_TEXT, RETRYABLE, toast } from "./notify.js";
import { pump } from "./outbox.js";
import { isOnline, pollPresence, presenceOf } from "./presence.js";
import { convName, renderSidebar } from "./sidebar.js";
import { loadReceipts, receiptOf, receiptText } from "./receipts.js";
import { api, ctx } from "./state.js";
import { renderTyping } from "./typing.js";
import { lookupUsers, userInfo } from "./users.js";

const NEAR_BOTTOM_PX = 80;
const NEAR_TOP_PX = 120;

const msgEls = new Map(); // key -> { el, sig }
const keyOf = new WeakMap(); // a message's row -> its key
const MAX_BODY = 4096;

/**
 * The message menu (edit, delete) of one's own messages: which message's menu is open, which is
 * being edited (with the text typed so far), which asks to confirm its deletion. One at a time.
 */
const ui = { menu: null, editing: null, draft: "", confirming: null };

export function resetThread() {
  $("message-items").replaceChildren();
  msgEls.clear();
  Object.assign(ui, { menu: null, editing: null, draft: "", confirming: null });
}

export function keyFromHash() {
  const k = decodeURIComponent(location.hash.slice(1));
  return /^[dg]:[A-Za-z0-9_.-]{1,64}$/.test(k) ? k : null;
}

function nearBottom() {
  const s = $("message-scroll");
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

/** Marks the open conversation read, if the user can see its newest messages. */
export function markActiveRead() {
  const { store, activeKey } = ctx;
  if (activeKey && !document.hidden && store.hasConv(activeKey) && nearBottom()) store.markRead(activeKey);
}

// Opening a conversation from the list pushes one history entry, so the browser's back button
// (and ours, on narrow screens) returns to the list.
let pushedHash = false;
export function openConv(key, { push = true } = {}) {
  const { store } = ctx;
  if (!store) return;
  if (push && key !== keyFromHash()) {
    const url = key ? `#${encodeURIComponent(key)}` : location.pathname + location.search;
    if (key && !ctx.activeKey) {
      history.pushState(null, "", url);
      pushedHash = true;
    } else history.replaceState(null, "", url);
  }
  if (key) store.touch(key, { activity: key.startsWith("d:") });
  const changed = key !== ctx.activeKey;
  ctx.activeKey = key;
  $("chat-view").classList.toggle("has-active", !!key);
  $("pane-empty").hidden = !!key;
  $("conv-pane").hidden = !key;
  if (changed) {
    msgEls.clear();
    $("message-items").replaceChildren();
    $("members-panel").hidden = true;
    $("new-below").hidden = true;
    $("thread-announce").textContent = "";
    $("composer-input").value = draftOf(key);
    syncComposer();
  }
  renderSidebar();
  renderTyping();
  if (!key) return;
  renderPaneHead();
  renderMessages({ jump: changed });
  markActiveRead();
  const c = store.conv(key);
  if (c.hist === undefined) loadOlder(key);
  if (changed && matchMedia("(min-width: 721px)").matches) $("composer-input").focus();
  if (changed) pollPresence();
  if (changed) loadReceipts(key);
  if (changed && c.kind === "d" && c.peer !== store.me) {
    lookupUsers([c.peer]).then(() => ctx.store === store && ctx.activeKey === key && renderPaneHead());
  }
}

/** Removes a conversation from the list (until a new message arrives or it is opened again). */
export function closeConv(key) {
  ctx.store?.close(key);
  if (key === ctx.activeKey) openConv(null);
}

// Direct chats with an id that is not a registered account: the user confirmed writing anyway.
const confirmedUnknown = new Set();

/** Whether the server said this direct chat's peer has no account (messages to it are kept unread). */
function unknownPeer(c) {
  return c.kind === "d" && c.peer !== ctx.store.me && userInfo(c.peer)?.registered === false;
}

export function renderPaneHead() {
  const { store } = ctx;
  const c = store.conv(ctx.activeKey);
  const name = convName(c);
  $("conv-title").textContent = name;
  paintAvatar($("conv-avatar"), c.kind === "g" ? name : c.peer, c.kind === "g");
  const sub = $("conv-sub");
  const composerInput = $("composer-input");
  let canWrite = true;
  if (c.kind === "d") {
    const p = presenceOf(c.peer);
    sub.textContent = p === "unknown" ? (ctx.conn?.isOpen ? "" : "status unknown while you are offline") : p;
    sub.dataset.online = p === "unknown" ? "unknown" : String(p === "online");
    $("members-toggle").hidden = true;
    $("members-panel").hidden = true;
    const warn = unknownPeer(c);
    $("peer-warning").hidden = !warn;
    if (warn) {
      $("peer-warning-text").textContent = `"${c.peer}" is not a registered user. Messages to this id are kept, but nobody may ever read them.`;
      $("peer-warning-confirm").hidden = confirmedUnknown.has(c.key);
      if (!confirmedUnknown.has(c.key)) canWrite = false;
    }
  } else {
    $("peer-warning").hidden = true;
    const g = store.groups.get(c.peer);
    delete sub.dataset.online;
    $("members-toggle").hidden = !g;
    if (g) {
      const online = g.members.filter((u) => u !== store.me && isOnline(u)).length;
      sub.textContent = `${g.members.length} member${g.members.length === 1 ? "" : "s"}${online ? `, ${online} online` : ""}`;
      renderMembers(g);
    } else {
      const gone = c.removed;
      sub.textContent = gone
        ? gone.action === "left" ? "You left this group" : `You were removed from this group${gone.by ? ` by ${gone.by}` : ""}`
        : store.groupsLoaded ? "You are not a member of this group" : "";
      canWrite = !gone && !store.groupsLoaded;
      $("members-panel").hidden = true;
    }
  }
  composerInput.disabled = !canWrite;
  const notMember = c.kind === "g" && !store.groups.has(c.peer) && (c.removed || store.groupsLoaded);
  $("conv-gone").hidden = !notMember;
  if (notMember) $("conv-gone").textContent = `${sub.textContent}. You can read what you received but not write here.`;
  composerInput.placeholder = notMember ? "You are not a member of this group" : "Write a message…";
  syncComposer();
}

function statusText(m, receipt) {
  if (m.status === "sending") return ctx.conn?.isOpen ? "sending…" : "sending… (waiting for connection)";
  if (m.status === "sent") return receiptText(m, receipt);
  if (m.status === "failed") return "not sent";
  return "";
}

/** One's own sent message, not deleted: it has a menu button (disabled while a change of it is being saved). */
const ownSent = (m) => m.from === ctx.store.me && !!m.msgId && m.status === "sent" && m.deletedAt == null;
/** Whether the user may edit or delete `m` from here (the server still checks the window). */
const changeable = (m) => ownSent(m) && !m.pending;

const rowOf = (m) => document.querySelector(`#message-items li[data-msgid="${CSS.escape(m.msgId)}"]`);

/** Changes the menu state, renders, then focuses `selector` inside the message's row. */
function setUi(m, patch, selector) {
  Object.assign(ui, patch);
  renderMessages({ refocus: !selector });
  if (selector) rowOf(m)?.querySelector(selector)?.focus();
}

const closeMenu = (m, focusButton = true) => setUi(m, { menu: null }, focusButton ? '[data-testid="message-menu-button"]' : null);

function menuKeys(e, m) {
  const items = [...e.currentTarget.querySelectorAll('[role="menuitem"]')];
  const i = items.indexOf(document.activeElement);
  const go = (j) => items[(j + items.length) % items.length]?.focus();
  if (e.key === "ArrowDown") go(i + 1);
  else if (e.key === "ArrowUp") go(i - 1);
  else if (e.key === "Home") go(0);
  else if (e.key === "End") go(items.length - 1);
  else if (e.key === "Escape") closeMenu(m);
  else if (e.key === "Tab") return setUi(m, { menu: null });
  else return;
  e.preventDefault();
  e.stopPropagation();
}

function startEdit(m) {
  setUi(m, { menu: null, editing: m.key, draft: m.body, confirming: null }, '[data-testid="message-edit-input"]');
}

function saveEdit(m) {
  const body = ui.draft.trim();
  if (!body) return toast("A message cannot be empty: delete it instead");
  if ([...body].length > MAX_BODY) return toast(ERROR_TEXT.too_large);
  if (body === m.body) return setUi(m, { editing: null }, '[data-testid="message-menu-button"]');
  const f = ctx.store.editFrame(m, body);
  if (!ctx.conn?.send(f)) {
    ctx.store.applyOpError({ id: f.id });
    return toast("Offline: not edited. Try again when connected.");
  }
  setUi(m, { editing: null }, null);
  rowOf(m)?.querySelector('[data-testid="message-menu-button"]')?.focus();
}

function confirmDelete(m) {
  const f = ctx.store.deleteFrame(m);
  if (!ctx.conn?.send(f)) {
    ctx.store.applyOpError({ id: f.id });
    return toast("Offline: not deleted. Try again when connected.");
  }
  setUi(m, { confirming: null }, null);
}

/**
 * The "…" button of one's own message (a menu button: arrows, Home, End, Escape). Built once per
 * row and kept: `syncMenu` opens and closes its menu, so the button keeps the focus meanwhile.
 */
function menuEl(m) {
  const open = () => ui.menu === m.key;
  return h(
    "div",
    { class: "msg-actions" },
    h(
      "button",
      {
        type: "button",
        class: "menu-button",
        "data-testid": "message-menu-button",
        "aria-label": "Message actions",
        "aria-haspopup": "menu",
        onclick: () => {
          if (!changeable(m)) return;
          if (open()) closeMenu(m);
          else setUi(m, { menu: m.key, confirming: null }, '[role="menuitem"]');
        },
        onkeydown: (e) => {
          if (e.key === "ArrowDown" && !open() && changeable(m)) {
            e.preventDefault();
            setUi(m, { menu: m.key }, '[role="menuitem"]');
          }
        },
      },
      "⋯",
    ),
  );
}

/** Brings a menu button's state and its menu (open or not) up to date, in place. */
function syncMenu(actions, m) {
  const open = ui.menu === m.key && changeable(m);
  const button = actions.firstElementChild;
  button.setAttribute("aria-expanded", String(open));
  if (m.pending) button.setAttribute("aria-disabled", "true");
  else button.removeAttribute("aria-disabled");
  const menu = actions.querySelector('[role="menu"]');
  if (open && !menu) {
    actions.append(
      h(
        "ul",
        { role: "menu", class: "msg-menu", "data-testid": "message-menu", "aria-label": "Message actions", onkeydown: (e) => menuKeys(e, m) },
        h("li", { role: "none" }, h("button", { type: "button", role: "menuitem", "data-testid": "message-edit", onclick: () => startEdit(m) }, "Edit")),
        h("li", { role: "none" }, h("button", { type: "button", role: "menuitem", "data-testid": "message-delete", onclick: () => setUi(m, { menu: null, confirming: m.key }, '[data-testid="message-delete-confirm"]') }, "Delete")),
      ),
    );
  } else if (!open) menu?.remove();
}

function editorEl(m) {
  const input = h("textarea", {
    class: "edit-input",
    "data-testid": "message-edit-input",
    "aria-label": "Edit message",
    rows: "2",
    oninput: (e) => (ui.draft = e.target.value),
    onkeydown: (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        saveEdit(m);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        setUi(m, { editing: null }, '[data-testid="message-menu-button"]');
      }
    },
  });
  input.value = ui.draft;
  return h(
    "div",
    { class: "editor" },
    input,
    h(
      "div",
      { class: "editor-actions" },
      h("button", { type: "button", class: "link", "data-testid": "message-edit-cancel", onclick: () => setUi(m, { editing: null }, '[data-testid="message-menu-button"]') }, "Cancel"),
      h("button", { type: "button", class: "link", "data-testid": "message-edit-save", onclick: () => saveEdit(m) }, "Save"),
    ),
  );
}

function confirmEl(m) {
  return h(
    "div",
    { class: "msg-confirm", role: "group", "aria-label": "Delete this message?", "data-testid": "message-delete-ask" },
    h("span", {}, "Delete this message for everyone?"),
    h("button", { type: "button", class: "link destructive", "data-testid": "message-delete-confirm", onclick: () => confirmDelete(m) }, "Delete"),
    h("button", { type: "button", class: "link", "data-testid": "message-delete-cancel", onclick: () => setUi(m, { confirming: null }, '[data-testid="message-menu-button"]') }, "Cancel"),
  );
}

/** Sets `el`'s data attributes (null removes one), writing only what changed. */
function setData(el, data) {
  for (const [k, v] of Object.entries(data)) {
    if (v == null) delete el.dataset[k];
    else if (el.dataset[k] !== String(v)) el.dataset[k] = String(v);
  }
}

/**
 * Makes `parent`'s children the parts in `list` ([name, sig, build], in order), building a part
 * again only when its sig changed; `build` may return null (no such part now).
 */
function setParts(parent, parts, list) {
  const nodes = [];
  for (const [name, sig, build] of list) {
    let p = parts.get(name);
    if (!p || p.sig !== sig) parts.set(name, (p = { sig, el: build() }));
    if (p.el) nodes.push(p.el);
  }
  reconcile(parent, nodes);
}

/**
 * A message's row. It is built once and then updated in place: each part (sender, text or editor,
 * time and status, menu, deletion prompt, error) is built again only when what it shows changed,
 * so a receipt, an edit or a delivery status never takes away the keyboard focus, an open menu or
 * an edit in progress (a rebuilt element holding the focus would drop it to the page).
 */
function messageEl(m, showSender) {
  const { store } = ctx;
  let row = msgEls.get(m.key);
  const mine = m.from === store.me;
  if (row?.m !== m) {
    // tabindex -1: the row takes the focus when a change takes away the part that held it.
    msgEls.set(m.key, (row = { m, el: h("li", { class: `msg ${mine ? "mine" : "theirs"}`, "data-testid": "message", tabindex: "-1" }), parts: new Map() }));
    keyOf.set(row.el, m.key);
  }
  const deleted = m.deletedAt != null;
  const editing = ui.editing === m.key && changeable(m);
  const receipt = mine && m.status === "sent" ? receiptOf(m) : null;
  const status = mine && !deleted && !m.pending ? statusText(m, receipt) : null;
  const menu = ownSent(m) && !editing;
  const confirming = ui.confirming === m.key && changeable(m);
  const el = row.el;
  // Classes set elsewhere (search's "found", "cont") stay.
  if (row.status !== m.status) {
    if (row.status) el.classList.remove(row.status);
    el.classList.add((row.status = m.status));
  }
  el.classList.toggle("deleted", deleted);
  setData(el, { msgid: m.msgId ?? "", id: m.id ?? "", status: m.status, from: m.from, deleted: deleted ? "true" : null, edited: m.editedAt != null ? "true" : null, receipt: receipt?.state ?? "", readBy: String(receipt?.readBy ?? 0) });
  const sender = showSender && !mine;
  const error = m.status === "failed" ? `${m.error?.code}|${m.error?.message}` : "";
  setParts(el, row.parts, [
    ["sender", sender, () => (sender ? h("div", { class: "sender", style: `--h: ${hue(m.from)}` }, m.from) : null)],
    ["bubble", "", () => h("div", { class: "bubble" })],
    ["menu", menu, () => (menu ? menuEl(m) : null)],
    ["confirm", confirming, () => (confirming ? confirmEl(m) : null)],
    ["error", error, () => (error ? errorEl(m) : null)],
  ]);
  setParts(row.parts.get("bubble").el, row.parts, [
    ["body", deleted ? "deleted" : editing ? "editing" : `text|${m.body}`, () =>
      deleted
        ? h("div", { class: "body tombstone", "data-testid": "message-body" }, "message deleted")
        : editing
          ? editorEl(m)
          : h("div", { class: "body", "data-testid": "message-body" }, linkify(m.body))],
    ["meta", `${m.ts}|${deleted ? "" : m.editedAt}|${m.pending}|${status}`, () =>
      h(
        "div",
        { class: "meta" },
        h("time", { datetime: new Date(m.ts).toISOString(), title: fmtFull(m.ts) }, fmtTime(m.ts)),
        m.editedAt != null && !deleted ? h("span", { class: "edited", "data-testid": "message-edited", title: `edited ${fmtFull(m.editedAt)}` }, "edited") : null,
        m.pending ? h("span", { class: "status", "data-testid": "message-pending" }, m.pending === "edit" ? "saving…" : "deleting…") : null,
        status != null ? h("span", { class: "status", "data-testid": "message-status" }, status) : null,
      )],
  ]);
  if (menu) syncMenu(row.parts.get("menu").el, m);
  return el;
}

function errorEl(m) {
  return h(
    "div",
    { class: "msg-error", "data-testid": "message-error", dataset: { code: m.error?.code ?? "" } },
    h("span", {}, ERROR_TEXT[m.error?.code] ?? "Not sent", m.error?.message ? ` — ${m.error.message}` : ""),
    RETRYABLE.has(m.error?.code)
      ? h("button", { type: "button", class: "link", "data-testid": "message-retry", onclick: () => retry(m) }, "Retry")
      : null,
    h("button", { type: "button", class: "link", "data-testid": "message-discard", onclick: () => discard(m) }, "Discard"),
  );
}

/** A membership notice ("alice added carol") between the messages. */
function noticeEl(m) {
  const sig = `notice|${m.body}`;
  const cached = msgEls.get(m.key);
  if (cached && cached.sig === sig) return cached.el;
  const el = h(
    "li",
    { class: "notice", "data-testid": "notice", dataset: { msgid: m.msgId, action: m.notice.action, user: m.notice.user } },
    h("span", {}, m.body, " · ", h("time", { datetime: new Date(m.ts).toISOString(), title: fmtFull(m.ts) }, fmtTime(m.ts))),
  );
  if (cached) cached.el.replaceWith(el);
  msgEls.set(m.key, { el, sig });
  return el;
}

function retry(m) {
  ctx.store.markSending(m);
  pump();
}

function discard(m) {
  ctx.store.discard(m);
  announce("Message discarded.");
}

/** Says `text` to screen readers (a visually hidden status region of the thread). */
function announce(text) {
  $("thread-announce").textContent = text;
}

/**
 * Where the keyboard focus is, when it is in a message's row: the row's key and the keys of the
 * message rows after it (to go on to when the row goes).
 */
function focusInList() {
  const row = document.activeElement?.closest?.('#message-items > li[data-testid="message"]');
  if (!row) return null;
  const after = [];
  for (let n = row.nextElementSibling; n; n = n.nextElementSibling) if (keyOf.has(n)) after.push(keyOf.get(n));
  return { key: keyOf.get(row), after };
}

/**
 * After a render took away the element holding the focus (the page has it now), puts it somewhere
 * predictable: on the same message's row when it is still listed, on its **⋯** button if it has
 * one (a deletion in flight, a closed menu, an edit saved), else on the row itself (a tombstone, a
 * message sent again); when the row went (discarded), on the next message's row, else on the
 * composer (or the list when the composer is disabled).
 */
function restoreFocus(was) {
  if (document.activeElement && document.activeElement !== document.body) return;
  const row = msgEls.get(was.key)?.el;
  if (row?.isConnected) {
    (row.querySelector('[data-testid="message-menu-button"]') ?? row).focus();
    if (row.classList.contains("deleted")) announce("Message deleted.");
    return;
  }
  const next = was.after.map((k) => msgEls.get(k)?.el).find((el) => el?.isConnected);
  (next ?? ($("composer-input").disabled ? $("message-scroll") : $("composer-input"))).focus();
}

/**
 * Renders the open conversation's messages. `refocus` (the default): when the render takes away
 * the element holding the keyboard focus, `restoreFocus` puts it back; the menu's own moves
 * (`setUi` with a target) pass false.
 */
export function renderMessages({ history = false, own = false, jump = false, refocus = true } = {}) {
  const { store, activeKey } = ctx;
  if (!activeKey || !store) return;
  const focused = refocus ? focusInList() : null;
  const scroller = $("message-scroll");
  const list = $("message-items");
  const c = store.conv(activeKey);
  const atBottom = nearBottom();
  const lastBefore = list.lastElementChild;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;

  const nodes = [];
  const live = new Set();
  let prev = null;
  let day = null; // notices break a run of messages, not the day
  for (const m of c.messages) {
    const dk = dayKey(m.ts);
    const key = `day:${dk}`;
    if (day !== dk) prev = null;
    if (day !== dk && !live.has(key)) {
      let d = msgEls.get(key);
      if (!d) {
        d = { el: h("li", { class: "day" }, h("span", {}, fmtDay(m.ts))), sig: "" };
        msgEls.set(key, d);
      }
      nodes.push(d.el);
      live.add(key);
    }
    day = dk;
    if (m.notice) {
      nodes.push(noticeEl(m));
      live.add(m.key);
      prev = null;
      continue;
    }
    const cont = prev && prev.from === m.from && m.ts - prev.ts < 5 * 60_000;
    const el = messageEl(m, c.kind === "g" && !cont);
    el.classList.toggle("cont", !!cont);
    nodes.push(el);
    live.add(m.key);
    prev = m;
  }
  for (const k of msgEls.keys()) if (!live.has(k)) msgEls.delete(k);
  reconcile(list, nodes);

  if (jump || own || atBottom) {
    scroller.scrollTop = scroller.scrollHeight;
    $("new-below").hidden = true;
  } else if (history) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else if (list.lastElementChild !== lastBefore && list.lastElementChild?.classList.contains("theirs")) $("new-below").hidden = false;
  if (focused) restoreFocus(focused);
  renderHistoryStatus();
  // Still at the top (a short conversation, or a page that brought nothing new): keep going.
  if (typeof c.hist === "string" && !c.loadingHist && !c.histError && scroller.scrollTop < NEAR_TOP_PX) loadOlder(c.key);
}

function renderHistoryStatus() {
  const { store, activeKey } = ctx;
  if (!activeKey) return;
  const c = store.conv(activeKey);
  const el = $("history-status");
  el.dataset.state = c.loadingHist ? "loading" : c.histError ? "error" : c.hist === null ? "done" : "more";
  el.replaceChildren(
    c.loadingHist ? "Loading earlier messages…" :
    c.histError ? h("span", {}, "Couldn't load earlier messages. ", h("button", { type: "button", class: "link", onclick: () => loadOlder(c.key) }, "Try again")) :
    c.hist === null ? (c.messages.length ? "This is the beginning of the conversation." : "No messages yet. Say hi!") : "",
  );
}

async function loadOlder(key) {
  const s = ctx.store;
  const c = s.conv(key);
  if (c.loadingHist || c.hist === null) return;
  c.loadingHist = true;
  c.histError = false;
  if (key === ctx.activeKey) renderHistoryStatus();
  try {
    const r = await api.history(key, c.hist);
    if (s !== ctx.store) return;
    c.loadingHist = false;
    s.mergeHistory(key, r?.messages ?? [], r?.before ?? null);
  } catch (e) {
    if (s !== ctx.store) return;
    c.loadingHist = false;
    if (e instanceof ApiError && e.status === 403) c.hist = null;
    else c.histError = true;
  } finally {
    c.loadingHist = false;
  }
  if (key === ctx.activeKey) renderHistoryStatus();
}

/** Groups with nothing cached (just joined, or a new device) fetch their latest page for the list. */
export function prefetchEmptyGroups() {
  const { store } = ctx;
  for (const id of store?.groups.keys() ?? []) {
    const c = store.conv(`g:${id}`);
    if (!c.messages.length && c.hist === undefined) loadOlder(c.key);
  }
}

export function initThread() {
  $("peer-warning-confirm").addEventListener("click", () => {
    if (!ctx.activeKey) return;
    confirmedUnknown.add(ctx.activeKey);
    renderPaneHead();
    $("composer-input").focus();
  });
  $("peer-warning-close").addEventListener("click", () => ctx.activeKey && closeConv(ctx.activeKey));
  addEventListener("popstate", () => ctx.store && openConv(keyFromHash(), { push: false }));
  $("back").addEventListener("click", () => {
    if (pushedHash) {
      pushedHash = false;
      history.back();
    } else openConv(null);
  });
  addEventListener("popstate", () => (pushedHash = false));
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ctx.activeKey && !$("members-panel").hidden) $("members-panel").hidden = true;
  });
  // A click outside an open message menu closes it.
  document.addEventListener("click", (e) => {
    if (!ui.menu || e.target.closest?.(".msg-actions")) return;
    ui.menu = null;
    renderMessages({});
  });
  // The lines above the composer ("… is typing", warnings) and a growing composer shrink the list:
  // one that was at the bottom stays there, so the newest message and its receipt stay in view.
  let atBottom = true;
  new ResizeObserver(() => {
    const s = $("message-scroll");
    if (atBottom && ctx.activeKey) s.scrollTop = s.scrollHeight;
  }).observe($("message-scroll"));
  $("message-scroll").addEventListener("scroll", () => {
    atBottom = nearBottom();
    if (!ctx.activeKey) return;
    if ($("message-scroll").scrollTop < NEAR_TOP_PX) loadOlder(ctx.activeKey);
    if (nearBottom()) {
      $("new-below").hidden = true;
      markActiveRead();
    }
  }, { passive: true });
  $("new-below").addEventListener("click", () => {
    const s = $("message-scroll");
    s.scrollTop = s.scrollHeight;
    $("new-below").hidden = true;
    markActiveRead();
  });
}
