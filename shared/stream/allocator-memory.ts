import { ALLOC_WINDOW, byUser, type StreamAllocator } from "./allocator.ts";
import type { Position } from "./position.ts";

interface UserState {
  epoch: number;
  n: number;
  /** msgId -> position, in allocation order (only those at or below the floor leave the window). */
  ids: Map<string, number>;
  /** Every position up to here is stored (persist checked). */
  floor: number;
  claims: Map<string, number>;
}

/**
 * The allocator for `bun run dev` and unit tests. `wipe()` simulates losing the allocator's data.
 * With `seed`, a user first seen continues the stream storage already holds (its latest entry's
 * epoch and position) instead of opening an epoch: right for one process whose queue lives and dies
 * with it (`bun run dev`), where nothing allocated can be unwritten after a restart.
 */
export function createMemoryAllocator(
  opts: { window?: number; now?: () => number; seed?: (user: string) => Promise<Position | null> } = {},
): StreamAllocator & { wipe(): void } {
  const window = opts.window ?? ALLOC_WINDOW;
  let lastEpoch = 0;
  const now = opts.now ?? (() => Date.now() * 1000);
  let users = new Map<string, UserState>();
  const state = (u: string) => {
    let s = users.get(u);
    if (!s) {
      lastEpoch = Math.max(lastEpoch + 1, now());
      users.set(u, (s = { epoch: lastEpoch, n: 0, ids: new Map(), floor: 0, claims: new Map() }));
    }
    return s;
  };
  const loading = new Map<string, Promise<void>>();
  const load = async (list: Iterable<string>) => {
    if (!opts.seed) return;
    const waits: Promise<void>[] = [];
    for (const u of list) {
      if (users.has(u)) continue;
      let l = loading.get(u);
      if (!l) {
        l = opts.seed(u).then((p) => {
          if (p && !users.has(u)) {
            lastEpoch = Math.max(lastEpoch, p.epoch);
            users.set(u, { epoch: p.epoch, n: p.pos, ids: new Map(), floor: 0, claims: new Map() });
          }
        });
        loading.set(u, l);
        void l.finally(() => loading.delete(u)).catch(() => {});
      }
      waits.push(l);
    }
    await Promise.all(waits);
  };
  const trim = (m: Map<string, number>) => {
    while (m.size > window) m.delete(m.keys().next().value!);
  };
  return {
    async allocate(requests) {
      await load(requests.flatMap((r) => (r.claim ? [...r.users, r.claim.sender] : r.users)));
      // no prototype: a user named "__proto__" is a key like any other, and for…in sees only users
      const out = requests.map(() => ({ positions: Object.create(null) as Record<string, Position> }));
      for (const [u, idx] of byUser(requests)) {
        const s = state(u);
        for (const i of idx) {
          const id = requests[i]!.msgId;
          let p = s.ids.get(id);
          if (p === undefined) {
            s.ids.set(id, (p = ++s.n));
            // oldest first (positions ascend in insertion order), stopping at the first above the floor
            for (const [k, q] of s.ids) {
              if (s.ids.size <= window || q > s.floor) break;
              s.ids.delete(k);
            }
          }
          out[i]!.positions[u] = { epoch: s.epoch, pos: p };
        }
      }
      return requests.map((r, i) => {
        if (!r.claim) return out[i]!;
        const s = state(r.claim.sender);
        const had = s.claims.get(r.msgId);
        if (had === undefined) {
          s.claims.set(r.msgId, r.claim.ts);
          trim(s.claims);
        }
        return { ...out[i]!, claimed: had === undefined ? { fresh: true, ts: r.claim.ts } : { fresh: false, ts: had } };
      });
    },
    async writtenUpTo(floors) {
      for (const { user, position } of floors) {
        const s = users.get(user);
        if (s && s.epoch === position.epoch && position.pos <= s.n && position.pos > s.floor) s.floor = position.pos;
      }
    },
    async floors(list) {
      const r: Record<string, Position> = Object.create(null);
      for (const u of list) {
        const s = users.get(u);
        r[u] = s ? { epoch: s.epoch, pos: s.floor } : { epoch: 0, pos: 0 };
      }
      return r;
    },
    async tops(list) {
      await load(list);
      const r: Record<string, Position> = {};
      for (const u of list) {
        const s = state(u);
        r[u] = { epoch: s.epoch, pos: s.n };
      }
      return r;
    },
    ready: () => true,
    wipe() {
      users = new Map();
    },
  };
}
