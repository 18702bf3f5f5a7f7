import type { Redis } from "../../shared/redis.ts";
import type { Throttle, ThrottleRule } from "./throttle.ts";

// KEYS: count, lock. ARGV: max, windowMs, lockMs, maxLockMs, forgetAfterLock (1/0). Same arithmetic as lockAfter().
const HIT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local max = tonumber(ARGV[1])
if n < max then return 0 end
local lock = math.floor(math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(n - max, 40)))
-- One absolute time for both keys: relative expiries taken a moment apart can fall in two
-- different milliseconds, and a count outliving its lock would lock again at once.
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lock
redis.call('SET', KEYS[2], n, 'PXAT', ends)
if ARGV[5] == '1' then
  redis.call('PEXPIREAT', KEYS[1], ends)
else
  local keep = lock + tonumber(ARGV[2])
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
return lock
`;

/**
 * The throttle in Redis, shared by every gateway. A key's count and lock share a hash tag, so the
 * script touches one slot (Redis Cluster).
 */
export function createRedisThrottle(redis: Redis, opts: { prefix?: string } = {}): Throttle {
  const prefix = `${opts.prefix ?? "chat:"}th:`;
  const keys = (key: string) => [`${prefix}{${key}}:n`, `${prefix}{${key}}:l`] as const;
  return {
    async lockedFor(list) {
      const ttls = await Promise.all(list.map((k) => redis.pttl(keys(k)[1])));
      // PTTL 0: the lock still exists, for less than a millisecond (a hit now still finds the
      // count it expires with): locked, not free. -2: no lock.
      return Math.max(0, ...ttls.map((t) => (t === 0 ? 1 : t)));
    },
    async hit(key, rule: ThrottleRule) {
      const [n, l] = keys(key);
      return Number(await redis.eval(HIT, 2, n, l, rule.max, rule.windowMs, rule.lockMs, rule.maxLockMs, rule.forgetAfterLock ? 1 : 0));
    },
    async reset(key) {
      await redis.del(...keys(key));
    },
  };
}
