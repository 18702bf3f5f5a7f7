import { ALLOC_WINDOW, byUser, type StreamAllocator } from "./allocator.ts";
import type { Position } from "./position.ts";

interface UserState {
  epoch: number;
  n: number;
  ids: Map<string, number>;
  claims: Map<string, number>;
}

/** The allocator for `bun run dev` and unit tests. `wipe()` simulates losing the allocator's data. */
export function createMemoryAllocator(opts: { window?: number; now?: () => number } = {}): StreamAllocator & { wipe(): void } {
  const window = opts.window ?? ALLOC_WINDOW;
  let lastEpoch = 0;
  const now = opts.now ?? (() => Date.now() * 1000);
  let users = new Map<string, UserState>();
  const state = (u: string) => {
    let s = users.get(u);
    if (!s) {
      lastEpoch = Math.max(lastEpoch + 1, now());
      users.set(u, (s = { epoch: lastEpoch, n: 0, ids: new Map(), claims: new Map() }));
    }
    return s;
  };
  const trim = (m: Map<string, number>) => {
    while (m.size > window) m.delete(m.keys().next().value!);
  };
  return {
    async allocate(requests) {
      const out = requests.map(() => ({ positions: {} as Record<string, Position> }));
      for (const [u, idx] of byUser(requests)) {
        const s = state(u);
        for (const i of idx) {
          const id = requests[i]!.msgId;
          let p = s.ids.get(id);
          if (p === undefined) {
            p = ++s.n;
            s.ids.set(id, p);
            trim(s.ids);
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
    async tops(list) {
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
