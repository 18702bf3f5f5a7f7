import { comparePositions, type Position } from "./position.ts";

/**
 * The position allocator role: gives each accepted message its position in the stream of every
 * user it concerns. Implemented over Redis (allocator-redis.ts, one Lua script per user, every key
 * of a user in one hash slot) and in memory (allocator-memory.ts); one contract suite
 * (allocator.contract.ts) runs on both.
 *
 * Guarantees:
 * - within an epoch a user's positions are 1, 2, 3… in allocation order, never handed out twice;
 * - allocating (user, msgId) again returns the same position (idempotent) until the position is at
 *   or below the user's **floor** (persist checked that everything up to it is stored:
 *   `writtenUpTo`) and it is no longer among the user's last `window` allocations (an
 *   implementation may remember up to twice that), so gateway and persist may both ask, however far
 *   persist lags;
 * - when the allocator lost a user's counter (restart without persistence, failover), the next
 *   call opens a new, larger epoch instead of reusing positions.
 */
export interface AllocRequest {
  msgId: string;
  /** Users whose streams the message enters. */
  users: string[];
  /**
   * Set by the accepting gateway: claims the message's delivery for (sender, msgId). The sender is
   * usually one of `users`; a server event (a delivery receipt) may leave its sender's stream out.
   */
  claim?: { sender: string; ts: number };
}

export interface AllocResult {
  positions: Record<string, Position>;
  /** With a claim: `fresh` for the first claim of this (sender, msgId), else the first claim's ts. */
  claimed?: { fresh: boolean; ts: number };
}

export interface StreamAllocator {
  /** Results in request order. Requests for one user are allocated in the order given. */
  allocate(requests: AllocRequest[]): Promise<AllocResult[]>;
  /**
   * Persist checked that every position of each user's stream up to `position` (in that epoch) is
   * stored: the allocations at or below it may now leave the window. A floor only moves forward,
   * never past the user's top, and is ignored once the user is in another epoch.
   */
  writtenUpTo(floors: Array<{ user: string; position: Position }>): Promise<void>;
  /**
   * Each user's floor in its current epoch (pos 0 when none). Epoch 0 for a user the allocator has
   * no state for (nothing is opened: a floor is only ever compared with positions handed out).
   */
  floors(users: string[]): Promise<Record<string, Position>>;
  /**
   * The top of each user's stream (the last position handed out; pos 0 when none in this epoch).
   * Opens an epoch for a user that has none, so the answer is always a position.
   */
  tops(users: string[]): Promise<Record<string, Position>>;
  ready(): boolean;
}

/** How many recent allocations per user stay idempotent (and claims per sender). */
export const ALLOC_WINDOW = 10_000;

export class AllocatorUnavailable extends Error {}

/** Each user's highest position among `results`, as floors (what persist sets once all of them are stored). */
export function floorsOf(results: AllocResult[]): Array<{ user: string; position: Position }> {
  const top = new Map<string, Position>();
  for (const r of results) for (const u in r.positions) if (!top.has(u) || comparePositions(r.positions[u]!, top.get(u)!) > 0) top.set(u, r.positions[u]!);
  return [...top].map(([user, position]) => ({ user, position }));
}

/** Groups requests by user, keeping order: what one script call per user needs. */
export function byUser(requests: Array<{ users: string[] }>): Map<string, number[]> {
  const m = new Map<string, number[]>();
  requests.forEach((r, i) => {
    for (const u of r.users) {
      let l = m.get(u);
      if (!l) m.set(u, (l = []));
      // a user named twice in one request: its list already ends with this request
      if (l[l.length - 1] !== i) l.push(i);
    }
  });
  return m;
}
