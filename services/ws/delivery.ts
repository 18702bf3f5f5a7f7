import { sleep } from "../../shared/backoff.ts";
import type { Db } from "../../shared/db/index.ts";
import { countEntries, hasEntries, legacyPosition, readStream, type StreamMessage } from "../../shared/db/messages.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { streamFrame } from "../../shared/events/registry.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import { comparePositions, epochOpenedAtMs, formatPosition, LEGACY_EPOCH, parseCursor, type Position } from "../../shared/stream/position.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn } from "./connections.ts";
import { closeConn, sendText } from "./frames.ts";

/** One element of a connection's stream: a message or event frame without its cursor, or null for the connection's own send (it gets the ack instead). */
export interface StreamItem {
  position: Position;
  head: string | null;
}

/** Per-connection delivery state (docs/delivery.md, "Live delivery"). */
export interface StreamState {
  /** The last position delivered to (or passed by) this connection; null until its baseline is read. */
  cur: Position | null;
  /** Items after a gap, by "epoch.pos", waiting for the gap to fill; null while none waits (most connections, most of the time). */
  pending: Map<string, StreamItem> | null;
  /** While a sync (or the baseline read) runs, everything live waits here in arrival order. */
  held: StreamItem[] | null;
  repairTimer: ReturnType<typeof setTimeout> | null;
  /** When the oldest unfilled gap was first seen (0: none). */
  gapSince: number;
  /** The top seen by the last periodic check while behind it (for "behind twice in a row"). */
  behind: Position | null;
  /** A repair's target beyond the waiting items (set by the periodic check). */
  target: Position | null;
  /** Set while a sync answers. */
  syncing: boolean;
  /** Set while a gap repair reads storage. */
  repairing: boolean;
  /** When the router last offered this connection a live item (ms). */
  lastLive: number;
  /** Live items wait after connecting until the first frame (or this timer): see `init`. */
  initialHold: ReturnType<typeof setTimeout> | null;
}

export const newStreamState = (): StreamState => ({ cur: null, pending: null, held: [], repairTimer: null, gapSince: 0, behind: null, target: null, syncing: false, repairing: false, lastLive: 0, initialHold: null });

/** Bounds: items a connection may have waiting behind a gap or a running sync. */
export const MAX_PENDING_ITEMS = 10_000;
/** Close code telling a client to reconnect and sync from its last cursor. */
export const CLOSE_RESYNC = 4000;

const PAGE = 500;
/** The periodic check looks every round at connections with live traffic this recent… */
const ACTIVE_MS = 30_000;
/**
 * …and at a connection that registered this recently: long enough for every location from before
 * it registered to be gone (the change feed drops cached ones within a moment; a lookup in flight
 * times out after 3 s), short enough that a burst of connects does not make the checks ask for
 * every new user's top every second for half a minute (docs/benchmarks.md).
 */
export const NEW_CONNECTION_ACTIVE_MS = 10_000;
/** …and at every connection once in this many rounds. */
const FULL_SWEEP_EVERY = 30;
const HIGH_WATER_BYTES = 1 << 20;
const key = formatPosition;
const tail = (p: Position) => `"${formatPosition(p)}"}`;

/** The head of a record's frame (message or event) up to its cursor; each connection appends its own position. */
export function frameHead(m: ChatMessage): string {
  const s = JSON.stringify(streamFrame(m, ""));
  return s.slice(0, s.length - 3);
}

/**
 * Delivers each connection's stream in strictly increasing position order with no holes.
 * Live items arrive from the router in any order; an item after a gap waits while the gap is
 * filled from storage (after `repairDelayMs`, retried with backoff; the connection is closed with
 * CLOSE_RESYNC when it cannot be filled within `giveUpMs` or too much waits). Syncs answer from
 * storage up to the allocator's top, waiting until storage holds every position up to it.
 */
export function createDelivery(opts: {
  db: () => Db;
  allocator: StreamAllocator;
  log: Logger;
  metrics: Metrics;
  /** Local connections of a user (for the periodic check). */
  connectionsOf: (user: string) => Iterable<Conn> | undefined;
  localUsers: () => Iterable<string>;
  repairDelayMs?: number;
  giveUpMs?: number;
  /** A sync or read-your-writes wait gives up (unavailable) after this long. */
  syncTimeoutMs?: number;
  /** Holes in an epoch older than the current one are skipped once the current one is this old. */
  epochGraceMs?: number;
  checkIntervalMs?: number;
  /** How long live items wait after connecting for the client's first frame (a resuming sync). */
  initialHoldMs?: number;
  /** A stored message was handed to a connection of `user` by a sync or a gap repair (delivery receipts; must be cheap). */
  onHanded?: (user: string, m: StreamMessage) => void;
}) {
  const initialHoldMs = opts.initialHoldMs ?? 1000;
  const repairDelayMs = opts.repairDelayMs ?? 500;
  const giveUpMs = opts.giveUpMs ?? 30_000;
  const syncTimeoutMs = opts.syncTimeoutMs ?? 5000;
  const epochGraceMs = opts.epochGraceMs ?? 10_000;
  const repairs = opts.metrics.counter("ws_gap_repairs_total", "Gaps in a connection's stream filled from storage");
  const repairSeconds = opts.metrics.histogram("ws_gap_repair_seconds", "From a gap being seen to it being filled", [0.1, 0.25, 0.5, 1, 2, 5, 10, 30]);
  const resyncs = opts.metrics.counter("ws_resync_closes_total", "Connections closed to resync (gap not fillable, or too far behind)", ["reason"]);
  const tops = createTickBatcher<string, Position>(async (users) => {
    const t = await opts.allocator.tops(users);
    return users.map((u) => t[u]!);
  }, { maxItems: 5000 });
  /** Per user: the position up to which storage is known complete (read-your-writes). */
  const written = new Map<string, Position>();

  const resync = (ws: Conn, reason: string) => {
    resyncs.inc({ reason });
    opts.log.warn("closing a connection to resync", { user: ws.data.user, reason });
    drop(ws);
    closeConn(ws, CLOSE_RESYNC, "resync: reconnect and sync from your last cursor");
  };

  const emit = (ws: Conn, item: StreamItem) => {
    if (item.head !== null) sendText(ws, item.head + tail(item.position));
    ws.data.stream.cur = item.position;
  };

  /** Sends what follows `cur` contiguously; returns whether anything still waits. */
  const drainPending = (ws: Conn): boolean => {
    const st = ws.data.stream;
    const pending = st.pending;
    while (pending && pending.size > 0) {
      const cur = st.cur!;
      const next = pending.get(key({ epoch: cur.epoch, pos: cur.pos + 1 }));
      if (next) {
        pending.delete(key(next.position));
        emit(ws, next);
        continue;
      }
      const first = [...pending.values()].reduce((a, b) => (comparePositions(a.position, b.position) < 0 ? a : b));
      // Placed before a sync moved `cur` past it: already sent (or asked for again and answered).
      if (comparePositions(first.position, cur) <= 0) {
        pending.delete(key(first.position));
        continue;
      }
      // Only items of a later epoch left: the rest of the old epoch is lost to the allocator's
      // data loss once the new epoch is old enough (its entries would have been written by now).
      if (first.position.epoch > cur.epoch && Date.now() - epochOpenedAtMs(first.position.epoch) > epochGraceMs) {
        st.cur = { epoch: first.position.epoch, pos: 0 };
        continue;
      }
      break;
    }
    if (pending?.size === 0) st.pending = null;
    if (st.target && comparePositions(st.cur!, st.target) >= 0) st.target = null;
    if (!st.pending && !st.target) {
      if (st.gapSince) repairSeconds.observe((Date.now() - st.gapSince) / 1000);
      st.gapSince = 0;
      if (st.repairTimer) clearTimeout(st.repairTimer);
      st.repairTimer = null;
      return false;
    }
    return true;
  };

  const place = (ws: Conn, item: StreamItem) => {
    const st = ws.data.stream;
    const cur = st.cur!;
    if (comparePositions(item.position, cur) <= 0) return;
    if (item.position.epoch === cur.epoch && item.position.pos === cur.pos + 1) {
      emit(ws, item);
      if (st.pending) drainPending(ws);
      return;
    }
    if ((st.pending?.size ?? 0) >= MAX_PENDING_ITEMS) return resync(ws, "too_many_pending");
    (st.pending ??= new Map()).set(key(item.position), item);
    // Only a frame held back makes a gap worth reading storage for: behind the connection's own
    // (silent) sends the missing item is usually a forward still on its way, and if it never comes
    // the periodic check finds it.
    if (item.head === null) return;
    if (!st.gapSince) st.gapSince = Date.now();
    scheduleRepair(ws, repairDelayMs);
  };

  const scheduleRepair = (ws: Conn, delay: number, upTo?: Position) => {
    const st = ws.data.stream;
    if (upTo && (!st.target || comparePositions(upTo, st.target) > 0)) st.target = upTo;
    if (st.repairTimer) return;
    st.repairTimer = setTimeout(() => {
      st.repairTimer = null;
      void repair(ws);
    }, delay);
  };

  /** Fills the gap after `cur` from storage, up to the furthest waiting item (or the check's target). */
  const repair = async (ws: Conn) => {
    const st = ws.data.stream;
    if (!ws.data.open || st.held || !st.cur) return;
    if (st.repairing) return scheduleRepair(ws, repairDelayMs); // one repair per connection at a time
    st.repairing = true;
    try {
      await repairOnce(ws);
    } finally {
      st.repairing = false;
    }
  };

  const repairOnce = async (ws: Conn) => {
    const st = ws.data.stream;
    if (!st.cur) return;
    let target = st.target ?? st.cur;
    for (const it of st.pending?.values() ?? []) if (comparePositions(it.position, target) > 0) target = it.position;
    if (comparePositions(target, st.cur) <= 0) return;
    if (!st.gapSince) st.gapSince = Date.now();
    try {
      let from = st.cur;
      for (;;) {
        const page = await readStream(opts.db(), ws.data.user, from, target, PAGE);
        if (!ws.data.open || st.held) return;
        // The connection's own sends pass silently, as live (it got the ack instead).
        for (const m of page) {
          if (comparePositions(m.position, st.cur) <= 0) continue;
          (st.pending ??= new Map()).set(key(m.position), { position: m.position, head: ws.data.own.has(m.msgId) ? null : frameHead(m) });
          opts.onHanded?.(ws.data.user, m);
        }
        if (page.length < PAGE) break;
        from = page[page.length - 1]!.position;
      }
      repairs.inc();
    } catch (err) {
      opts.log.warn("gap repair read failed; retrying", { err, user: ws.data.user });
    }
    if (!drainPending(ws) && comparePositions(st.cur, target) >= 0) return;
    if (Date.now() - st.gapSince > giveUpMs) return resync(ws, "gap_not_filled");
    // Storage is behind (persist lag, or PostgreSQL down): try again.
    scheduleRepair(ws, Math.min(2000, repairDelayMs * 2));
  };

  /** Positions from a cursor; a legacy cursor maps through the migrated epoch 0. */
  const resolveCursor = async (user: string, cursor: string | undefined): Promise<Position> => {
    if (cursor === undefined) return { epoch: 0, pos: 0 };
    const c = parseCursor(cursor);
    return "legacy" in c ? legacyPosition(opts.db(), user, c.legacy) : c;
  };

  /**
   * Streams `user`'s entries in (after, top] to `send`, in order, waiting (bounded) until storage
   * holds every position of top's epoch in that range. Older epochs may have holes (lost with the
   * allocator's data); they are skipped once top's epoch is older than the grace period.
   */
  async function readUpTo(user: string, after: Position, top: Position, send: (m: StreamMessage) => void, isOpen: () => boolean): Promise<void> {
    const deadline = Date.now() + syncTimeoutMs;
    let from = after;
    let waitMs = 20;
    const oldEpochSettled = () => Date.now() - epochOpenedAtMs(top.epoch) > epochGraceMs;
    while (comparePositions(from, top) < 0 && isOpen()) {
      const page = await readStream(opts.db(), user, from, top, PAGE);
      let stalled = false;
      for (const m of page) {
        const contiguous = m.position.epoch === from.epoch ? m.position.pos === from.pos + 1 : m.position.epoch < top.epoch || m.position.pos === 1;
        if (!contiguous && (m.position.epoch === top.epoch || from.epoch === top.epoch || !oldEpochSettled())) {
          stalled = true;
          break;
        }
        send(m);
        from = m.position;
      }
      if (page.length === PAGE && !stalled) continue;
      if (comparePositions(from, top) >= 0) break;
      // Nothing more in storage yet: the rest of top's epoch is still being written.
      // Leaving an older epoch with nothing more stored: its rest can still be in flight only if
      // it is a real epoch of this user lost recently (not the complete legacy epoch, not an epoch
      // with no entries at all, such as a forged cursor's).
      if (from.epoch < top.epoch && page.length < PAGE && !stalled && (oldEpochSettled() || from.epoch === LEGACY_EPOCH || !(await hasEntries(opts.db(), user, from.epoch)))) {
        from = { epoch: top.epoch, pos: 0 };
        continue;
      }
      if (Date.now() > deadline) throw new Error("storage did not catch up with the allocator in time");
      await sleep(waitMs);
      waitMs = Math.min(waitMs * 2, 500);
    }
  }

  async function sync(ws: Conn, cursor: string | undefined): Promise<void> {
    const st = ws.data.stream;
    const user = ws.data.user;
    st.held ??= [];
    st.syncing = true;
    let sent: Position | null = null;
    let after: Position | null = null;
    try {
      after = await resolveCursor(user, cursor);
      const top = await tops.add(user);
      // A cursor beyond the top (forged, or from before the allocator lost data and reopened an
      // epoch with a clock behind the old one): answer the whole current epoch.
      if (comparePositions(after, top) > 0) after = { epoch: top.epoch, pos: 0 };
      await readUpTo(
        user,
        after,
        top,
        (m) => {
          sendText(ws, frameHead(m) + tail(m.position));
          opts.onHanded?.(user, m);
          sent = m.position;
        },
        () => ws.data.open,
      );
      while (ws.data.open && ws.getBufferedAmount() > HIGH_WATER_BYTES) await sleep(5);
      noteWritten(user, top);
      st.cur = top;
      sendText(ws, JSON.stringify({ type: "synced", cursor: formatPosition(top) }));
    } catch (err) {
      opts.log.warn("sync failed", { err, user });
      // The client now has everything up to the last entry of this answer, or up to its cursor:
      // that is where the connection continues. Live frames after it wait for the gap to be filled
      // from storage (or the 4000 close), so the client's last cursor never passes a message it was
      // not given (left at the baseline, the next live frame would skip the answer's unsent rest).
      const at = sent ?? after;
      if (at) st.cur = at;
      if (ws.data.open) sendText(ws, JSON.stringify({ type: "error", code: "unavailable", message: "history is unavailable right now; sync again" }));
      // A legacy cursor that could not be mapped: where the client is cannot be known.
      if (!at) resync(ws, "sync_cursor_unresolved");
    } finally {
      st.syncing = false;
      release(ws);
    }
  }

  /** Ends a hold (sync or baseline): items that arrived meanwhile are placed after it. */
  const release = (ws: Conn) => {
    const st = ws.data.stream;
    if (st.initialHold) clearTimeout(st.initialHold);
    st.initialHold = null;
    const held = st.held ?? [];
    st.held = null;
    if (!ws.data.open || !st.cur) return;
    // What waited behind a gap before the hold: a sync may have moved `cur` (past it, or back).
    if (st.pending && drainPending(ws)) scheduleRepair(ws, repairDelayMs);
    for (const it of held) {
      place(ws, it);
      if (!ws.data.open) return;
    }
  };

  const noteWritten = (user: string, p: Position) => {
    const w = written.get(user);
    if (w && comparePositions(w, p) >= 0) return;
    if (written.size >= 100_000) written.delete(written.keys().next().value!);
    written.set(user, p);
  };

  let checking = false;
  const checkTimer = setInterval(() => {
    if (checking) return; // a slow allocator: never more than one check at a time
    checking = true;
    void check().finally(() => (checking = false));
  }, opts.checkIntervalMs ?? 1000);
  /**
   * The periodic check: a connection behind its user's top at two checks in a row missed a live
   * item with nothing after it to reveal the gap (a failed forward of the last message): repair it.
   */
  let round = 0;
  async function check() {
    // Every second the users whose connections had a live item in the last ACTIVE_MS (or are behind
    // already); everyone every FULL_SWEEP_EVERY rounds. Idle users cost the allocator nothing most
    // of the time: a gateway with 20,000 idle users asks for 20,000 tops every 30 s, not every second.
    const full = round++ % FULL_SWEEP_EVERY === 0;
    const since = Date.now() - ACTIVE_MS;
    const users = [...opts.localUsers()].filter((u) => {
      if (full) return true;
      for (const ws of opts.connectionsOf(u) ?? []) if (ws.data.stream.lastLive > since || ws.data.stream.behind) return true;
      return false;
    });
    if (users.length === 0) return;
    let t: Record<string, Position>;
    try {
      t = await opts.allocator.tops(users);
    } catch {
      return;
    }
    for (const u of users) {
      const top = t[u];
      for (const ws of opts.connectionsOf(u) ?? []) {
        const st = ws.data.stream;
        if (!top || !st.cur || st.held || comparePositions(st.cur, top) >= 0) {
          st.behind = null;
          continue;
        }
        if (st.behind && comparePositions(st.cur, st.behind) < 0) {
          st.behind = null;
          scheduleRepair(ws, 0, top);
        } else st.behind = top;
      }
    }
  }

  const drop = (ws: Conn) => {
    const st = ws.data.stream;
    if (st.initialHold) clearTimeout(st.initialHold);
    st.initialHold = null;
    if (st.repairTimer) clearTimeout(st.repairTimer);
    st.repairTimer = null;
    st.pending = null;
    st.held = null;
    st.target = null;
  };

  return {
    /**
     * Reads the connection's baseline (its user's top now; items before it are for sync). Live
     * items then still wait until the client's first frame: a client that resumes sends `sync`
     * first, and its answer must not cross live frames already sent after the baseline (they would
     * come again, below them). Any other first frame, or `initialHoldMs` without one, releases them.
     */
    async init(ws: Conn): Promise<void> {
      const st = ws.data.stream;
      const top = await tops.add(ws.data.user);
      st.cur ??= top;
      // a new connection counts as active for the periodic check for NEW_CONNECTION_ACTIVE_MS: a
      // message routed by a location that did not know it yet (a lookup or cache entry from just
      // before it registered) is a trailing gap found within ~2 s, not at the next full check
      st.lastLive = Date.now() - ACTIVE_MS + NEW_CONNECTION_ACTIVE_MS;
      if (initialHoldMs <= 0) return release(ws);
      st.initialHold = setTimeout(() => {
        st.initialHold = null;
        if (!st.syncing) release(ws);
      }, initialHoldMs);
    },
    /** The connection's next frame is about to be handled (ends the initial hold unless it is a sync). */
    frame(ws: Conn, type: string) {
      const st = ws.data.stream;
      if (st.initialHold && type !== "sync" && !st.syncing) release(ws);
    },
    /** A live item for this connection, from the router. */
    offer(ws: Conn, item: StreamItem) {
      const st = ws.data.stream;
      if (!ws.data.open) return;
      st.lastLive = Date.now();
      if (st.held) {
        if (st.held.length >= MAX_PENDING_ITEMS) return resync(ws, "too_many_held");
        st.held.push(item);
        return;
      }
      place(ws, item);
    },
    sync,
    /**
     * Read-your-writes: resolves once storage holds every entry of `user`'s stream allocated before
     * this call (rejects after the sync timeout).
     */
    async awaitWritten(user: string): Promise<void> {
      const top = await tops.add(user);
      const deadline = Date.now() + syncTimeoutMs;
      let waitMs = 20;
      const known = written.get(user);
      if (!known || known.epoch !== top.epoch || known.pos < top.pos) {
        // The allocator's floor (persist counted everything up to it stored): the count below then
        // covers only what lies above it, not the whole epoch (a long stream, a fresh gateway).
        const f = await opts.allocator.floors([user]).then((r) => r[user], () => undefined);
        if (f && f.epoch === top.epoch && f.pos > 0) noteWritten(user, { epoch: f.epoch, pos: Math.min(f.pos, top.pos) });
      }
      for (;;) {
        const w = written.get(user);
        const from = w && w.epoch === top.epoch ? w.pos : 0;
        if (from >= top.pos || (await countEntries(opts.db(), user, top.epoch, from, top.pos)) === top.pos - from) {
          noteWritten(user, top);
          return;
        }
        if (Date.now() > deadline) throw new Error("storage did not catch up with the allocator in time");
        await sleep(waitMs);
        waitMs = Math.min(waitMs * 2, 500);
      }
    },
    drop,
    stop() {
      clearInterval(checkTimer);
    },
  };
}
export type Delivery = ReturnType<typeof createDelivery>;
