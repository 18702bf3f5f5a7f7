// Group management: the group list from the server, the members panel, adding, removing, leaving.

import { $, h } from "./dom.js";
import { presenceDot } from "./presence.js";
import { activeGroup, api, ctx } from "./state.js";
import { USER_ID_RE } from "./store.js";
import { lookupUsers, resolveUsers, userInfo } from "./users.js";

let groupsTimer = null;
let onLoaded = () => {};
export function refreshGroupsSoon() {
  if (groupsTimer) return;
  groupsTimer = setTimeout(() => {
    groupsTimer = null;
    refreshGroups();
  }, 300);
}

export async function refreshGroups() {
  const s = ctx.store;
  if (!s) return;
  try {
    const r = await api.groups();
    if (s !== ctx.store) return;
    s.setGroups(r?.groups ?? []);
    onLoaded();
  } catch {}
}

export function renderMembers(g) {
  const me = ctx.store.me;
  const creator = g.creator;
  $("members-list").replaceChildren(
    ...g.members.map((u) =>
      h(
        "li",
        { dataset: { user: u } },
        presenceDot(u),
        h("span", { class: "member-name" }, u === me ? `${u} (you)` : u),
        creator === u ? h("span", { class: "muted small" }, "creator") : null,
        userInfo(u)?.registered === false ? h("span", { class: "muted small", "data-testid": "member-unknown" }, "not registered") : null,
        creator === me && u !== me
          ? h("button", { type: "button", class: "ghost small", "data-testid": "member-remove", "aria-label": `Remove ${u}`, onclick: () => removeMember(g.groupId, u) }, "Remove")
          : null,
      ),
    ),
  );
}

async function removeMember(groupId, userId) {
  try {
    await api.removeMember(groupId, userId);
    await refreshGroups();
  } catch (e) {
    $("members-error").textContent = e.message;
  }
}

let leaveArmed = null;
function resetLeave() {
  clearTimeout(leaveArmed);
  leaveArmed = null;
  $("leave-group").textContent = "Leave group";
}

/** `openConv(key)` opens a conversation (null: none); `loaded()` runs after each group list. */
export function initGroups({ openConv, loaded }) {
  onLoaded = loaded;
  $("members-toggle").addEventListener("click", () => {
    const p = $("members-panel");
    p.hidden = !p.hidden;
    $("members-error").textContent = "";
    resetLeave();
    // Flag members without an account (groups made before the client checked, or by other clients).
    const g = activeGroup();
    if (!p.hidden && g) {
      refreshGroups();
      lookupUsers(g.members).then(() => {
        const now = activeGroup();
        if (now?.groupId === g.groupId) renderMembers(now);
      });
    }
  });

  $("add-member-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("add-member-input");
    const userId = input.value.trim();
    const err = $("members-error");
    err.textContent = "";
    const g = activeGroup();
    if (!g) return;
    if (!USER_ID_RE.test(userId)) {
      err.textContent = "Not a valid user id.";
      return;
    }
    try {
      const { canonical, unknown } = await resolveUsers([userId]);
      if (unknown.length) {
        err.textContent = `No registered user "${userId}". Check the name.`;
        return;
      }
      await api.addMember(g.groupId, canonical[0]);
      input.value = "";
      await refreshGroups();
    } catch (ex) {
      err.textContent = ex.status === 403 ? "Only members can add people." : ex.message;
    }
  });

  $("leave-group").addEventListener("click", async () => {
    const g = activeGroup();
    if (!g) return;
    if (!leaveArmed) {
      $("leave-group").textContent = "Click again to leave";
      leaveArmed = setTimeout(resetLeave, 4000);
      return;
    }
    resetLeave();
    try {
      await api.removeMember(g.groupId, ctx.store.me);
      ctx.store.groups.delete(g.groupId);
      ctx.store.forget(`g:${g.groupId}`);
      openConv(null);
      refreshGroups();
    } catch (e) {
      $("members-error").textContent = e.message;
    }
  });
}
