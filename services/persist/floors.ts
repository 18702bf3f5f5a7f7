import type { DbHandle } from "../../shared/db/index.ts";
import { countEntriesOf, type StreamEntry } from "../../shared/db/messages.ts";
import type { Logger } from "../../shared/log.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import type { PersistMetrics } from "./metrics.ts";
import { comparePositions, type Position } from "../../shared/stream/position.ts";

/**
 * Moves the allocator's floors (docs/delivery.md, "The send path"): every `intervalMs`, for each
 * user this process wrote entries for, the highest position it wrote becomes the user's floor once
 * storage holds every position of that epoch up to it — counted in one statement for all users,
 * from the floor the allocator has now. A user whose count falls short (a position below is in
 * another persist's batch, or still in the queue) is tried again the next round. Allocations at or
 * below a floor may leave the allocator's idempotency window; nothing here is on a batch's path, and
 * a round that fails or comes late keeps entries in the window longer (memory), never out of it early.
 */
export interface FloorKeeper {
  /** Entries this process just committed. */
  written(entries: StreamEntry[]): void;
  /** One round now (also what the timer runs). */
  round(): Promise<void>;
  stop(): void;
}

export interface FloorKeeperOptions {
  allocator: StreamAllocator;
  database: DbHandle;
  log: Logger;
  /** Default 2 s. 0: no timer (tests call round()). */
  intervalMs?: number;
  /** Users per statement (default 2,000). */
  chunk?: number;
  /** Users waiting for a round at most (default 100,000): beyond, the oldest are forgotten (memory only). */
  maxUsers?: number;
  metrics?: Pick<PersistMetrics, "floorRounds" | "floorsMoved" | "floorsWaiting">;
}

export function createFloorKeeper({ allocator, database, log, metrics, intervalMs = 2000, chunk = 2000, maxUsers = 100_000 }: FloorKeeperOptions): FloorKeeper {
  /** Per user, the highest position written (of the latest epoch seen) not yet made a floor. */
  let waiting = new Map<string, Position>();
  let running: Promise<void> | null = null;
  let failures = 0;

  const note = (into: Map<string, Position>, user: string, p: Position) => {
    const had = into.get(user);
    if (had && comparePositions(had, p) >= 0) return;
    if (!had && into.size >= maxUsers) into.delete(into.keys().next().value!);
    into.set(user, p);
  };

  const roundOf = async (users: Array<[string, Position]>) => {
    const floors = await allocator.floors(users.map(([u]) => u));
    const ranges: Array<{ user: string; epoch: number; from: number; to: number }> = [];
    for (const [user, p] of users) {
      const f = floors[user];
      // another epoch (the allocator lost the user's data, or opened a newer one): nothing to do
      if (!f || f.epoch !== p.epoch || f.pos >= p.pos) continue;
      ranges.push({ user, epoch: p.epoch, from: f.pos, to: p.pos });
    }
    const counts = await countEntriesOf(database.db, ranges);
    const up: Array<{ user: string; position: Position }> = [];
    ranges.forEach((r, i) => {
      if (counts[i] === r.to - r.from) up.push({ user: r.user, position: { epoch: r.epoch, pos: r.to } });
      else note(waiting, r.user, { epoch: r.epoch, pos: r.to }); // not all stored yet: next round
    });
    if (up.length > 0) await allocator.writtenUpTo(up);
    metrics?.floorsMoved.inc(up.length);
  };

  const round = () =>
    (running ??= (async () => {
      const all = [...waiting];
      waiting = new Map();
      for (let i = 0; i < all.length; i += chunk) {
        const part = all.slice(i, i + chunk);
        try {
          await roundOf(part);
          failures = 0;
          metrics?.floorRounds.inc({ result: "ok" });
        } catch (err) {
          metrics?.floorRounds.inc({ result: "failed" });
          // the allocator or the database is away: keep them for the next round
          for (const [u, p] of part) note(waiting, u, p);
          if (failures++ % 30 === 0) log.warn("could not move the allocator's floors; retrying next round", { err });
        }
      }
      metrics?.floorsWaiting.set(waiting.size);
    })().finally(() => (running = null)));

  const timer = intervalMs > 0 ? setInterval(() => void round(), intervalMs) : undefined;
  timer?.unref?.();

  return {
    written(entries) {
      for (const e of entries) note(waiting, e.user, e.position);
    },
    round,
    stop() {
      clearInterval(timer);
    },
  };
}
