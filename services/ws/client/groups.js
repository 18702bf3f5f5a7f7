// Group management: the group list from the server, the members panel, adding, removing, leaving.

import { $, h } from "./dom.js";
import { pollPresence, presenceDot } from "./presence.js";
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
    const pushed = s.groupFrames;
    const r = await api.groups();
    if (s !== ctx.store) return;
    // A pushed change came in meanwhile: this answer may predate it; ask again.
    if (s.groupFrames !== pushed) return refreshGroupsSoon();
    s.setGroups(r?.groups ?? []);
    onLoaded();
  } catch {}
}

const roleOf = (g, u) => (g.owner === u ? "owner" : g.admins?.includes(u) ? "admin" : "member");

export function renderMembers(g) {
  const me = ctx.store.me;
  const mine = roleOf(g, me);
  $("members-list").replaceChildren(
    ...g.members.map((u) => {
      const role = roleOf(g, u);
      const canRemove = u !== me && (mine === "owner" || (mine === "admin" && role === "member"));
      return h(
        "li",
        { dataset: { user: u, role } },
        presenceDot(u),
        h("span", { class: "member-name" }, u === me ? `${u} (you)` : u),
        role !== "member" ? h("span", { class: "muted small", "data-testid": "member-role" }, role) : null,
        userInfo(u)?.registered === false ? h("span", { class: "muted small", "data-testid": "member-unknown" }, "not registered") : null,
        mine === "owner" && u !== me
          ? h(
              "button",
              { type: "button", class: "ghost small", "data-testid": "member-role-toggle", onclick: () => changeRole(g.groupId, u, role === "admin" ? "member" : "admin") },
              role === "admin" ? "Remove admin" : "Make admin",
            )
          : null,
        canRemove
          ? h("button", { type: "button", class: "ghost small", "data-testid": "member-remove", "aria-label": `Remove ${u}`, onclick: () => removeMember(g.groupId, u) }, "Remove")
          : null,
      );
    }),
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

async function changeRole(groupId, userId, role) {
  try {
    await api.setRole(groupId, userId, role);
    await refreshGroups();
  } catch (e) {
    $("members-error").textContent = e.message;
  }
}

let openConvFn = () => {};
/**
 * A pushed `group` frame (a membership change of one of this user's groups): the list and the
 * members panel follow at once. Leaving on another device closes the chat here too; a removed
 * member's open chat stays, says so and cannot be written to.
 */
export function applyGroupFrame(f) {
  const s = ctx.store;
  s.applyGroup(f);
  const key = `g:${f.groupId}`;
  if (f.group && ctx.activeKey === key) pollPresence(); // watch a new member at once
  if (f.group === null && f.change?.action === "left" && f.change.user === s.me) {
    s.forget(key);
    if (ctx.activeKey === key) openConvFn(null);
  } else if (f.group && f.change?.user === s.me && f.change.action === "added") onLoaded();
  else if (f.group && f.change?.action === "created") onLoaded();
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
  openConvFn = openConv;
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
