import type { Db } from "../../shared/db/index.ts";
import { conversationKey } from "../../shared/db/messages.ts";
import { advanceDelivered, advanceRead, deliveredAdvances, entryAt, readMarker, sendersBetween, type Marker } from "../../shared/db/receipts.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { NewEvent } from "../../shared/events/registry.ts";
import type { ChatMessage, ReadFrame } from "../../shared/protocol.ts";
import { comparePositions, formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";

export class ReadError extends Error {
  constructor(
    readonly code: "bad_request" | "unavailable",
    message: string,
  ) {
    super(message);
  }
}

// When a `delivered` receipt goes out (docs/api.md, "Events read and delivered"). Each costs what a
// message costs, so they follow a conversation's bursts, not the clock: one once a burst has ended
// (no delivery for DELIVERED_QUIET_MS), one per DELIVERED_MAX_WAIT_MS while it never ends, never more
// than one per DELIVERED_INTERVAL_MS. A message now and then is confirmed within ~0.25-0.5 s (with a
// plain once-a-second timer it took 0-1 s); a conversation that is never quiet costs a fifth of what
// it did (docs/benchmarks.md, "Delivered receipts follow bursts").

/** At most one `delivered` event per (user, conversation) per interval (per gateway). */
export const DELIVERED_INTERVAL_MS = 1000;
/** A conversation's deliveries are announced once it has had none for this long (the end of a burst)... */
export const DELIVERED_QUIET_MS = 250;
/** ...or, in a conversation that never goes quiet (a busy group, a bot), once the first has waited this long. */
export const DELIVERED_MAX_WAIT_MS = 5000;
/** How often the gateway looks for deliveries that are due. */
export const DELIVERED_TICK_MS = 250;

/**
 * Read and delivery receipts at the gateway. Reads come from the reader's `read` frames; deliveries
 * are noted (a Map write) wherever a message frame is handed to a connection (live, gap repair,
 * sync) and written and announced in batches, off the send path.
 */
export function createReceipts(opts: {
  db: () => Db;
  /** Read-your-writes for the reader's stream (the entry a cursor names may not be stored yet). */
  awaitWritten: (user: string) => Promise<void>;
  /** Puts a receipt into its recipients' streams (pipeline.emit). */
  publish: (e: NewEvent) => Promise<unknown>;
  log: Logger;
  metrics: Metrics;
  /** DELIVERED_INTERVAL_MS, DELIVERED_QUIET_MS, DELIVERED_MAX_WAIT_MS, DELIVERED_TICK_MS unless given (tests). */
  intervalMs?: number;
  quietMs?: number;
  maxWaitMs?: number;
  tickMs?: number;
  now?: () => number;
}) {
  const interval = opts.intervalMs ?? DELIVERED_INTERVAL_MS;
  const quiet = opts.quietMs ?? DELIVERED_QUIET_MS;
  const maxWait = opts.maxWaitMs ?? DELIVERED_MAX_WAIT_MS;
  const now = opts.now ?? Date.now;
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
    // The event first, then the marker: a read whose event could not be published moved nothing,
    // and the client's retry does it all again (the event's id is derived from the position, so
    // a retry after a published event is the same event).
    const db = opts.db();
    const current = await readMarker(db, user, conv);
    if (current && comparePositions(current, p) >= 0) return;
    const senders = await sendersBetween(db, user, conv, current, p);
    const upTo = formatPosition(p);
    await opts.publish({ kind: "read", from: user, key: `${conv}\n${upTo}`, ...target, ref: marker.msgId, data: { refTs: marker.ts, upTo, rcpt: [user, ...senders] } }).catch((err) => {
      opts.log.warn("read receipt not published", { err });
      throw new ReadError("unavailable", "the read receipt could not be sent; send it again");
    });
    if ((await advanceRead(db, user, conv, p, marker)).advanced) reads.inc();
  }

  /** first: when the oldest unannounced delivery was noted; last: the latest (ms, `now`). */
  type Noted = { user: string; conv: string; to?: string; group?: string; marker: Marker; senders: Set<string>; first: number; last: number };
  /**
   * Deliveries noted and not yet announced, per user: per other party of a direct conversation and
   * per group, the latest message and its senders. Found by strings the message already carries:
   * no key is built per frame handed out (a group and a user may share a name: two maps).
   */
  type Notes = { direct: Map<string, Noted>; groups: Map<string, Noted> };
  const noted = new Map<string, Notes>();
  const notesOf = (user: string) => {
    let u = noted.get(user);
    if (!u) noted.set(user, (u = { direct: new Map(), groups: new Map() }));
    return u;
  };

  /** A message frame was handed to a connection of `user`. Cheap: Map lookups (an entry is built only for a new conversation). */
  function delivered(user: string, m: Pick<ChatMessage, "msgId" | "ts" | "from" | "to" | "group" | "kind">) {
    if (m.from === user || m.kind !== undefined) return;
    const notes = notesOf(user);
    const n = m.group !== undefined ? notes.groups.get(m.group) : notes.direct.get(m.from);
    const t = now();
    if (!n) {
      const marker = { msgId: m.msgId, ts: m.ts };
      if (m.group !== undefined) notes.groups.set(m.group, { user, conv: `g:${m.group}`, group: m.group, marker, senders: new Set([m.from]), first: t, last: t });
      else notes.direct.set(m.from, { user, conv: conversationKey({ from: user, to: m.from }), to: m.from, marker, senders: new Set([m.from]), first: t, last: t });
      return;
    }
    n.last = t;
    n.senders.add(m.from);
    if (later(m, n.marker)) n.marker = { msgId: m.msgId, ts: m.ts };
  }

  const later = (a: Marker, b: Marker) => a.ts > b.ts || (a.ts === b.ts && a.msgId > b.msgId);
  /** Puts entries back for the next round, merged with what was noted meanwhile. */
  const renote = (ns: Noted[]) => {
    for (const n of ns) {
      const notes = notesOf(n.user);
      const [slot, k] = n.group !== undefined ? [notes.groups, n.group] : [notes.direct, n.to!];
      const cur = slot.get(k);
      if (!cur) slot.set(k, n);
      else {
        for (const s of n.senders) cur.senders.add(s);
        if (later(n.marker, cur.marker)) cur.marker = n.marker;
        cur.first = Math.min(cur.first, n.first);
        cur.last = Math.max(cur.last, n.last);
      }
    }
  };

  /**
   * Announces, then stores, the delivered markers that move: an event that could not be published
   * is tried again next round (its id is derived from the marker, so a retry is the same event).
   */
  let flushing = false;
  /** When each (user, conversation) was last announced ("<user>\n<conv>"), kept for one interval. */
  const announcedAt = new Map<string, number>();
  const announcedKey = (n: Noted) => `${n.user}\n${n.conv}`;
  /** Takes the noted entries that are due (all of them with `all`) out of `noted`. */
  function takeDue(all: boolean): Noted[] {
    const t = now();
    for (const [k, at] of announcedAt) if (t - at >= interval) announcedAt.delete(k);
    const due: Noted[] = [];
    for (const [user, notes] of noted) {
      for (const slot of [notes.direct, notes.groups]) {
        for (const [k, n] of slot) {
          if (!all && ((t - n.last < quiet && t - n.first < maxWait) || announcedAt.has(announcedKey(n)))) continue;
          due.push(n);
          slot.delete(k);
        }
      }
      if (notes.direct.size === 0 && notes.groups.size === 0) noted.delete(user);
    }
    return due;
  }
  /** Announces what is due: a conversation quiet for `quiet` ms, or waiting since `maxWait` ms, not announced within `interval`. */
  const tick = () => announce(false);
  /** Writes and announces everything noted now, whatever the timing (tests, shutdown). */
  const flush = () => announce(true);
  async function announce(all: boolean) {
    if (flushing || noted.size === 0) return;
    const batch = takeDue(all);
    if (batch.length === 0) return;
    flushing = true;
    try {
      const moving = await deliveredAdvances(opts.db(), batch.map((n) => ({ ...n, ...n.marker })));
      const failed: Noted[] = [];
      const published: Noted[] = [];
      await Promise.all(
        moving.map((n) => {
          const target = n.group !== undefined ? { group: n.group } : { to: n.to! };
          const data = { refTs: n.marker.ts, rcpt: [...n.senders] };
          return opts.publish({ kind: "delivered", from: n.user, key: `${n.conv}\n${n.marker.msgId}`, ...target, ref: n.marker.msgId, data }).then(
            () => published.push(n),
            (err) => {
              opts.log.warn("delivered receipt not published; retrying", { err });
              failed.push(n);
            },
          );
        }),
      );
      const t = now();
      for (const n of published) announcedAt.set(announcedKey(n), t);
      await advanceDelivered(opts.db(), published.map((n) => ({ user: n.user, conv: n.conv, ...n.marker })));
      deliveredEvents.inc(published.length);
      renote(failed);
    } catch (err) {
      opts.log.warn("delivered receipts not written; retrying", { err });
      renote(batch);
    } finally {
      flushing = false;
    }
  }
  const timer = setInterval(() => void tick(), opts.tickMs ?? DELIVERED_TICK_MS);

  return {
    read,
    delivered,
    /** Writes and announces what was noted now (tests, shutdown). */
    flush,
    /** One round of the timer: announces what is due (tests drive it with their own clock). */
    tick,
    /** Stops the timer and announces what was noted, waiting at most `timeoutMs`. */
    async stop(timeoutMs = 2000) {
      clearInterval(timer);
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([flush(), new Promise<void>((r) => (t = setTimeout(r, timeoutMs)))]);
      clearTimeout(t);
    },
  };
}
export type Receipts = ReturnType<typeof createReceipts>;
