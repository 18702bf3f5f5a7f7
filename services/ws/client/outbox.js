// Sending: writes outgoing messages to the socket and resends what stays unacknowledged.

import { ctx } from "./state.js";

const RESEND_AFTER_MS = 15_000;
const sentAt = new Map(); // client id -> when last written to a socket (this page only)

export function resetOutbox() {
  sentAt.clear();
}

function frameOf(m) {
  return m.group != null
    ? { type: "send", id: m.id, group: m.group, body: m.body }
    : { type: "send", id: m.id, to: m.to, body: m.body };
}

export function transmit(m) {
  if (ctx.conn.send(frameOf(m))) sentAt.set(m.id, Date.now());
}

/** On every (re)connection: resend what was never acked, with the same ids. */
export function resendAll() {
  for (const m of ctx.store.outbox()) transmit(m);
}

export function resendStale() {
  if (!ctx.conn?.isOpen) return;
  const now = Date.now();
  for (const m of ctx.store.outbox()) if (now - (sentAt.get(m.id) ?? 0) > RESEND_AFTER_MS) transmit(m);
}
