// The order of a conversation's messages: the server's positions, never timestamps.
//
// A `message` frame's cursor is that message's position in the receiving user's own stream,
// "<epoch>.<pos>" (two decimal integers, compared numerically: epoch, then pos); a legacy cursor
// is a plain decimal integer, read as epoch 0. Within one user's stream positions only increase,
// and one sender's messages keep the order they were sent in.
//
// Each message in the store carries:
// - `cursor`: its own position, from a frame received by this user (live, sync or history);
// - or `anchor`: for the user's own message acked on this connection (the sending connection gets
//   an ack, not the frame), the stream position reached when the ack arrived: it sorts just after
//   every message known by then, until a frame brings its own position;
// - neither: still pending (sending or failed), after every positioned message;
// - `seq`: a local counter, increasing in the order messages were typed or first arrived, that
//   breaks ties (equal legacy cursors; pending messages keep the order they were typed).

/** Parses a cursor into [epoch, pos] (bigints), or null when it is not one. */
export function parseCursor(c) {
  if (typeof c !== "string") return null;
  const m = /^(?:(\d{1,30})\.)?(\d{1,30})$/.exec(c);
  if (!m) return null;
  return [BigInt(m[1] ?? 0), BigInt(m[2])];
}

/** A plain decimal integer: what servers before positions per user sent. */
export const isLegacyCursor = (c) => typeof c === "string" && /^\d{1,30}$/.test(c);

/** Compares two valid cursors numerically (epoch, then pos); an invalid or missing one is lowest. */
export function compareCursors(a, b) {
  const pa = parseCursor(a);
  const pb = parseCursor(b);
  if (!pa || !pb) return (pa ? 1 : 0) - (pb ? 1 : 0);
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  return 0;
}

/** The greater of two cursors (a valid one wins over an invalid or missing one). */
export function maxCursor(a, b) {
  return compareCursors(a, b) >= 0 ? a : b;
}

/** A message's place: its own cursor, else its anchor, else null (pending). */
export const position = (m) => (parseCursor(m.cursor) ? m.cursor : parseCursor(m.anchor) ? m.anchor : null);

/** Whether the message has a place among the server's positions (its own or an anchor). */
export const isPositioned = (m) => position(m) !== null;

/** Sort order of a conversation: positioned messages by position, then pending ones as typed. */
export function compareMessages(a, b) {
  const pa = position(a);
  const pb = position(b);
  if ((pa === null) !== (pb === null)) return pa === null ? 1 : -1;
  if (pa !== null) {
    const c = compareCursors(pa, pb);
    if (c !== 0) return c;
  }
  return (a.seq ?? 0) - (b.seq ?? 0);
}
