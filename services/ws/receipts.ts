import type { Db } from "../../shared/db/index.ts";
import { conversationKey } from "../../shared/db/messages.ts";
import { advanceDelivered, advanceRead, entryAt, sendersBetween, type Marker } from "../../shared/db/receipts.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { ChatMessage, ReadFrame } from "../../shared/protocol.ts";
import { formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";

/** A receipt to put in users' streams: `by` read (kind "read") or had delivered (kind "delivered") the conversation up to `marker`. */
export interface ReceiptEvent {
  kind: "read" | "delivered";
  by: string;
  /** The conversation: `to` the other user of a direct one, or `group`. */
  to?: string;
  group?: string;
  marker: Marker;
  /** Read only: the marker as a cursor of `by`'s own stream (their devices compare it with their positions). */
  upTo?: string;
  /** Whose streams it enters. */
  rcpt: string[];
}

export class ReadError extends Error {
  constructor(
    readonly code: "bad_request" | "unavailable",
    message: string,
  ) {
    super(message);
  }
}

/** How often delivered markers are written and announced: at most one event per (user, conversation) per interval. */
export const DELIVERED_INTERVAL_MS = 1000;

/**
 * Read and delivery receipts at the gateway. Reads come from the reader's `read` frames; deliveries
 * are noted (a Map write) wherever a message frame is handed to a connection (live, gap repair,
 * sync) and written and announced in batches, off the send path.
 */
export function createReceipts(opts: {
  db: () => Db;
  /** Read-your-writes for the reader's stream (the entry a cursor names may not be stored yet). */
  awaitWritten: (user: string) => Promise<void>;
  /** Puts a receipt into its recipients' streams. */
  publish: (e: ReceiptEvent) => Promise<void>;
  log: Logger;
  metrics: Metrics;
  intervalMs?: number;
}) {
  const reads = opts.metrics.counter("ws_read_receipts_total", "Read markers moved forward");
  const deliveredEvents = opts.metrics.counter("ws_delivered_receipts_total", "Delivered markers moved forward");

  /** Handles a `read` frame of `user`. Rejects with a ReadError. */
  async function read(user: string, f: ReadFrame): Promise<void> {
    const target = "group" in f ? { group: f.group } : { to: f.to };
    const conv = conversationKey({ from: user, ...target });
    const p = parseCursor(f.cursor) as Position;
    let e = await entryAt(opts.db(), user, p).catch(() => {
      throw new ReadError("unavailable", "receipts are unavailable right now; retry");
    });
    if (!e) {
      // Delivered live before persist wrote it: wait until the reader's stream is stored.
      await opts.awaitWritten(user).catch(() => {
        throw new ReadError("unavailable", "receipts are unavailable right now; retry");
      });
      e = await entryAt(opts.db(), user, p);
    }
    if (!e || e.kind !== "message" || e.conv !== conv) throw new ReadError("bad_request", "cursor is not a message of this conversation in your stream");
    const marker = { msgId: e.msgId, ts: e.ts };
    const r = await advanceRead(opts.db(), user, conv, p, marker);
    if (!r.advanced) return;
    reads.inc();
    const senders = await sendersBetween(opts.db(), user, conv, r.previous, p);
    await opts.publish({ kind: "read", by: user, ...target, marker, upTo: formatPosition(p), rcpt: [user, ...senders.filter((s) => s !== user)] });
  }

  // Deliveries noted since the last flush: per "user\nconv", the latest message and its senders.
  let noted = new Map<string, { user: string; conv: string; to?: string; group?: string; marker: Marker; senders: Set<string> }>();

  /** A message frame was handed to a connection of `user`. Cheap: a Map update. */
  function delivered(user: string, m: Pick<ChatMessage, "msgId" | "ts" | "from" | "to" | "group">) {
    if (m.from === user) return;
    const conv = m.group !== undefined ? `g:${m.group}` : conversationKey({ from: user, to: m.from });
    const k = user + "\n" + conv;
    const n = noted.get(k);
    if (!n) {
      noted.set(k, { user, conv, ...(m.group !== undefined ? { group: m.group } : { to: m.from }), marker: { msgId: m.msgId, ts: m.ts }, senders: new Set([m.from]) });
      return;
    }
    n.senders.add(m.from);
    if (m.ts > n.marker.ts || (m.ts === n.marker.ts && m.msgId > n.marker.msgId)) n.marker = { msgId: m.msgId, ts: m.ts };
  }

  let flushing = false;
  async function flush() {
    if (flushing || noted.size === 0) return;
    flushing = true;
    const batch = noted;
    noted = new Map();
    try {
      const moved = await advanceDelivered(opts.db(), [...batch.values()].map((n) => ({ user: n.user, conv: n.conv, ...n.marker })));
      for (const { user, conv } of moved) {
        const n = batch.get(user + "\n" + conv)!;
        deliveredEvents.inc();
        void opts.publish({ kind: "delivered", by: user, ...(n.group !== undefined ? { group: n.group } : { to: n.to }), marker: n.marker, rcpt: [...n.senders] }).catch((err) =>
          opts.log.warn("delivered receipt not published", { err }),
        );
      }
    } catch (err) {
      // Kept for the next round (merged with what was noted meanwhile).
      opts.log.warn("delivered receipts not written; retrying", { err });
      for (const [k, n] of batch) {
        const now = noted.get(k);
        if (!now) noted.set(k, n);
        else {
          for (const s of n.senders) now.senders.add(s);
          if (n.marker.ts > now.marker.ts || (n.marker.ts === now.marker.ts && n.marker.msgId > now.marker.msgId)) now.marker = n.marker;
        }
      }
    } finally {
      flushing = false;
    }
  }
  const timer = setInterval(() => void flush(), opts.intervalMs ?? DELIVERED_INTERVAL_MS);

  return {
    read,
    delivered,
    /** Writes and announces what was noted now (tests, shutdown). */
    flush,
    stop() {
      clearInterval(timer);
      return flush();
    },
  };
}
export type Receipts = ReturnType<typeof createReceipts>;
