// Sending: the user's unacknowledged messages go out one at a time, in the order they were typed
// (the server keeps one sender's messages in the order it receives them, so nothing typed offline
// or during a reconnect can overtake an earlier message). The next one is written when the one
// in flight is acked or refused; one unacknowledged for too long is written again with its id
// (the server acks a repeated id again and stores it once).

import { ctx } from "./state.js";

const RESEND_AFTER_MS = 15_000;
let inFlight = null; // { id, at }: the message written to the current socket and not yet answered

export function resetOutbox() {
  inFlight = null;
}

function frameOf(m) {
  return m.group != null
    ? { type: "send", id: m.id, group: m.group, body: m.body }
    : { type: "send", id: m.id, to: m.to, body: m.body };
}

/** Writes the oldest unsent message unless one is in flight; call after any change to the outbox. */
export function pump({ force = false } = {}) {
  const { store, conn } = ctx;
  if (!store || !conn?.isOpen) return;
  const head = store.outbox()[0];
  if (!head) {
    inFlight = null;
    return;
  }
  if (!force && inFlight?.id === head.id) return;
  if (conn.send(frameOf(head))) inFlight = { id: head.id, at: Date.now() };
}

/** On every (re)connection: nothing is in flight on the new socket. */
export function resendAll() {
  inFlight = null;
  pump();
}

export function resendStale() {
  if (inFlight && Date.now() - inFlight.at > RESEND_AFTER_MS) pump({ force: true });
}
