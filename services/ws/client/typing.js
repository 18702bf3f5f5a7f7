// "… is typing": sent while the user types (at most one frame per conversation every SEND_EVERY_MS),
// shown from the server's typing frames until they expire (the frame says when) or the typist's
// message arrives.

import { $ } from "./dom.js";
import { ctx } from "./state.js";

/** Below the server's limit (one per conversation per 2 s) and well inside the 5 s a frame lasts. */
export const SEND_EVERY_MS = 3000;

const lastSent = new Map(); // conversation key -> ms
const pending = new Map(); // conversation key -> timer of a send held back by the throttle
const typists = new Map(); // conversation key -> Map(user -> expiry timer)

function send(key) {
  pending.delete(key);
  if (!ctx.conn?.isOpen) return;
  lastSent.set(key, Date.now());
  ctx.conn.send(key.startsWith("g:") ? { type: "typing", group: key.slice(2) } : { type: "typing", to: key.slice(2) });
}

/**
 * The user typed in conversation `key`: a frame now, or, within SEND_EVERY_MS of the last one,
 * one when that time is up (so typing that goes on is always reported).
 */
export function noteTyping(key) {
  if (!key || key === `d:${ctx.store?.me}` || pending.has(key)) return;
  const wait = (lastSent.get(key) ?? -Infinity) + SEND_EVERY_MS - Date.now();
  if (wait <= 0) send(key);
  else pending.set(key, setTimeout(() => send(key), wait));
}

/** The user sent a message in `key`, or emptied the box: no held-back frame after it. */
export function noteSent(key) {
  clearTimeout(pending.get(key));
  pending.delete(key);
}

/** A `typing` frame. */
export function applyTyping(f) {
  const me = ctx.store?.me;
  if (!me || f.from === me || (f.group == null && f.to !== me)) return;
  const key = f.group != null ? `g:${f.group}` : `d:${f.from}`;
  let users = typists.get(key);
  if (!users) typists.set(key, (users = new Map()));
  clearTimeout(users.get(f.from));
  const ms = Number.isFinite(f.ttlMs) ? Math.min(Math.max(f.ttlMs, 0), 30_000) : 5000;
  users.set(f.from, setTimeout(() => stopTyping(key, f.from), ms));
  renderTyping();
}

/** `user` stopped typing in `key` (their message came, or their frame expired). */
export function stopTyping(key, user) {
  const users = typists.get(key);
  if (!users?.has(user)) return;
  clearTimeout(users.get(user));
  users.delete(user);
  if (!users.size) typists.delete(key);
  renderTyping();
}

export function typingText(users) {
  if (users.length === 0) return "";
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}

/** The line above the composer of the open conversation. */
export function renderTyping() {
  const el = $("typing");
  const users = [...(typists.get(ctx.activeKey)?.keys() ?? [])].sort();
  el.textContent = typingText(users);
  el.hidden = users.length === 0;
}

export function resetTyping() {
  for (const users of typists.values()) for (const t of users.values()) clearTimeout(t);
  typists.clear();
  for (const t of pending.values()) clearTimeout(t);
  pending.clear();
  lastSent.clear();
  renderTyping();
}
