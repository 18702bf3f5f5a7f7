import type { Position } from "./position.ts";

/**
 * The position allocator role: gives each accepted message its position in the stream of every
 * user it concerns. Implemented over Redis (allocator-redis.ts, one Lua script per user, every key
 * of a user in one hash slot) and in memory (allocator-memory.ts); one contract suite
 * (allocator.contract.ts) runs on both.
 *
 * Guarantees:
 * - within an epoch a user's positions are 1, 2, 3… in allocation order, never handed out twice;
 * - allocating (user, msgId) again returns the same position (idempotent) until persist marked the
 *   pair written and it is no longer among the user's last `window` allocations (an implementation
 *   may remember up to twice that), so gateway and persist may both ask, however far persist lags;
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
  /** Persist committed these (user, msgId) entries: their records may now leave the window. */
  written(requests: Array<{ msgId: string; users: string[] }>): Promise<void>;
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
