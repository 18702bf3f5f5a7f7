/** Token buckets per key: `perSec` refill, `burst` capacity. Idle buckets are forgotten. */
export function createRateLimiter(perSec: number, burst: number, now: () => number = performance.now.bind(performance)) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  let sweptAt = now();
  return {
    take(key: string): boolean {
      const t = now();
      if (t - sweptAt > 60_000) {
        for (const [k, b] of buckets) if (b.tokens + ((t - b.at) / 1000) * perSec >= burst) buckets.delete(k);
        sweptAt = t;
      }
      let b = buckets.get(key);
      if (!b) buckets.set(key, (b = { tokens: burst, at: t }));
      b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * perSec);
      b.at = t;
      if (b.tokens < 1) return false;
      b.tokens -= 1;
      return true;
    },
  };
}
