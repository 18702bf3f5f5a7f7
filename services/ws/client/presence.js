// Who is online: pushed `presence` frames for the watched contacts, with GET /api/presence as a
// slow fallback.

import { h } from "./dom.js";
import { activeGroup, api, ctx } from "./state.js";

const presence = new Map();
let watched = "";
let onChange = () => {};

/** `changed()` runs whenever someone's presence may have changed. */
export function initPresence({ changed }) {
  onChange = changed;
}

export function resetPresence() {
  presence.clear();
  watched = "";
}

/** The watch list must be sent again (a new connection). */
export function rewatch() {
  watched = "";
}

/**
 * "online" | "offline" | "unknown": unknown before the server said, and for everyone else while
 * this tab's own connection is down (what it knew may be stale).
 */
export function presenceOf(user) {
  const open = !!ctx.conn?.isOpen;
  if (user === ctx.store?.me) return open ? "online" : "offline";
  const known = presence.get(user);
  return !open || known === undefined ? "unknown" : known ? "online" : "offline";
}

export const isOnline = (user) => presenceOf(user) === "online";

const WORDS = { online: "online", offline: "offline", unknown: "status unknown" };

/** A presence dot (data-online "true", "false" or "unknown"), its state in words for screen readers. */
export function presenceDot(user, attrs = {}) {
  const p = presenceOf(user);
  return h(
    "span",
    { class: "dot", ...attrs, dataset: { online: p === "unknown" ? "unknown" : String(p === "online") } },
    h("span", { class: "sr-only" }, WORDS[p]),
  );
}

/** The connection opened or closed: while it is down nothing is known of the others. */
export function connectionChanged() {
  if (!ctx.conn?.isOpen) presence.clear();
  onChange();
}

export function applyPresence(f) {
  if (typeof f.user !== "string") return;
  presence.set(f.user, !!f.online);
  onChange();
}

export async function pollPresence() {
  const { store, conn } = ctx;
  if (!store || document.hidden) return;
  const users = new Set();
  for (const c of store.conversations()) if (c.kind === "d") users.add(c.peer);
  const g = activeGroup();
  for (const u of g?.members ?? []) users.add(u);
  users.delete(store.me);
  const list = [...users].slice(0, 100);
  // Ask the server to push changes of these users (presence frames); the HTTP poll stays as a
  // fallback for servers without push.
  const key = list.sort().join(",");
  if (key !== watched && conn?.isOpen && conn.send({ type: "watch", users: list })) watched = key;
  if (!list.length) return;
  try {
    const r = await api.presence(list);
    for (const [u, online] of Object.entries(r?.online ?? {})) presence.set(u, !!online);
    onChange();
  } catch {}
}
