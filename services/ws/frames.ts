import type { ServerFrame } from "../../shared/protocol.ts";
import type { Conn } from "./connections.ts";

// Outgoing frames are coalesced per connection: frames written during one turn of the event loop
// (an ack batch, the deliveries of a tick) go out together in one corked write (one syscall)
// at the next setImmediate, in the order they were written. Outside Bun's own callbacks every
// `send` is otherwise a write of its own, and those writes were a quarter of a gateway's CPU
// (docs/benchmarks.md). Anything that closes a connection flushes it first (`closeConn`).
const dirty = new Set<Conn>();
let scheduled = false;

function flushAll() {
  scheduled = false;
  for (const ws of dirty) flush(ws);
  dirty.clear();
}

/** Writes what waits for this connection now. */
export function flush(ws: Conn) {
  const out = ws.data.outbox;
  if (!out) return;
  ws.data.outbox = undefined;
  if (out.length === 1) ws.send(out[0]!);
  else
    ws.cork(() => {
      for (const s of out) ws.send(s);
    });
}

/** Queues a text frame for this connection; frames keep the order they were sent in. */
export function sendText(ws: Conn, s: string) {
  // connections that cannot cork (test doubles) are written at once
  if (typeof ws.cork !== "function") {
    ws.send(s);
    return;
  }
  const out = ws.data.outbox;
  if (out) {
    out.push(s);
    return;
  }
  ws.data.outbox = [s];
  dirty.add(ws);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}

export function sendFrame(ws: Conn, f: ServerFrame) {
  sendText(ws, JSON.stringify(f));
}

/** Closes a connection after writing the frames queued for it. */
export function closeConn(ws: Conn, code: number, reason: string) {
  flush(ws);
  dirty.delete(ws);
  ws.close(code, reason);
}
