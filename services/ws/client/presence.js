// Who is online: pushed `presence` frames for the watched contacts, with GET /api/presence as a
// slow fallback.

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

export function isOnline(user) {
  return user === ctx.store?.me ? !!ctx.conn?.isOpen : presence.get(user) === true;
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
