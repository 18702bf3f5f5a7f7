import { lockAfter, type Throttle, type ThrottleRule } from "./throttle.ts";

interface Entry {
  count: number;
  /** The count is forgotten at this time. */
  until: number;
  lockUntil: number;
}

/** The embedded throttle: one process's map, swept of expired entries as it grows. */
export function createMemoryThrottle(opts: { now?: () => number; maxKeys?: number } = {}): Throttle & { size(): number } {
  const now = opts.now ?? Date.now;
  const maxKeys = opts.maxKeys ?? 100_000;
  const entries = new Map<string, Entry>();
  const live = (key: string): Entry | undefined => {
    const e = entries.get(key);
    if (e && e.until <= now()) {
      entries.delete(key);
      return undefined;
    }
    return e;
  };
  const sweep = () => {
    const t = now();
    for (const [k, e] of entries) if (e.until <= t) entries.delete(k);
    // Still full of live keys: drop the oldest (an attacker spraying keys cannot grow memory without bound).
    for (const k of entries.keys()) {
      if (entries.size < maxKeys) break;
      entries.delete(k);
    }
  };
  return {
    async lockedFor(keys) {
      let ms = 0;
      for (const k of keys) ms = Math.max(ms, (live(k)?.lockUntil ?? 0) - now());
      return ms;
    },
    async hit(key, rule: ThrottleRule) {
      const t = now();
      let e = live(key);
      if (!e) {
        if (entries.size >= maxKeys) sweep();
        entries.set(key, (e = { count: 0, until: t + rule.windowMs, lockUntil: 0 }));
      }
      e.count++;
      const lock = lockAfter(e.count, rule);
      if (lock > 0) {
        e.lockUntil = t + lock;
        e.until = rule.forgetAfterLock ? t + lock : Math.max(e.until, t + lock + rule.windowMs);
      }
      return lock;
    },
    async reset(key) {
      entries.delete(key);
    },
    size: () => entries.size,
  };
}
