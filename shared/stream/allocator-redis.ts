import type { Redis } from "ioredis";
import { isRedisReady } from "../redis.ts";
import { ALLOC_WINDOW, AllocatorUnavailable, byUser, type AllocResult, type StreamAllocator } from "./allocator.ts";
import type { Position } from "./position.ts";

// Every key of a user shares the hash tag {u:<user>}, so each script touches one slot (Redis Cluster).
// s: hash {e: epoch, n: last position, k: entries carried into m0}; m0/m1: hashes msgId ->
// position ("<pos>" until persist wrote it, then "<pos>w"), the idempotency window in two
// generations: when m0 holds `window` new ids it becomes m1, and of the old m1 only the entries
// not yet written are carried into the new m0 (an allocation never leaves the window before
// persist wrote it, however far persist lags). c0/c1: the sender's delivery claims, msgId -> ack ts,
// in generations by count alone. Hashes, not sorted sets: HGET/HSET cost a fraction of ZSCORE/ZADD.
const OPEN_EPOCH = `
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'e', e, 'n', 0, 'k', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
`;

// KEYS: s, m0, m1, c0, c1. ARGV: window, count of msgIds, msgIds…, then (msgId, ts) claim pairs.
// Returns {epoch, pos…, (fresh, ts)…}.
const ALLOC = `${OPEN_EPOCH}
local window = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local function rotate()
  local carried = tonumber(redis.call('HGET', KEYS[1], 'k') or '0')
  if redis.call('HLEN', KEYS[2]) - carried < window then return end
  local old = redis.call('HGETALL', KEYS[3])
  redis.call('DEL', KEYS[3])
  redis.call('RENAME', KEYS[2], KEYS[3])
  local k = 0
  for j = 1, #old, 2 do
    if string.sub(old[j + 1], -1) ~= 'w' then
      redis.call('HSET', KEYS[2], old[j], old[j + 1])
      k = k + 1
    end
  end
  redis.call('HSET', KEYS[1], 'k', k)
end
local out = {e}
for i = 3, n + 2 do
  local id = ARGV[i]
  local v = redis.call('HGET', KEYS[2], id) or redis.call('HGET', KEYS[3], id)
  local p
  if v then
    p = string.match(v, '^%d+')
  else
    p = tostring(redis.call('HINCRBY', KEYS[1], 'n', 1))
    redis.call('HSET', KEYS[2], id, p)
    rotate()
  end
  out[#out + 1] = p
end
for i = n + 3, #ARGV, 2 do
  local id = ARGV[i]
  local t = redis.call('HGET', KEYS[4], id) or redis.call('HGET', KEYS[5], id)
  if t then
    out[#out + 1] = '0'
    out[#out + 1] = t
  else
    redis.call('HSET', KEYS[4], id, ARGV[i + 1])
    if redis.call('HLEN', KEYS[4]) >= window then redis.call('RENAME', KEYS[4], KEYS[5]) end
    out[#out + 1] = '1'
    out[#out + 1] = ARGV[i + 1]
  end
end
return out
`;

// KEYS: m0, m1. ARGV: msgIds persist wrote.
const WRITTEN = `
for i = 1, #ARGV do
  for k = 1, 2 do
    local v = redis.call('HGET', KEYS[k], ARGV[i])
    if v then
      if string.sub(v, -1) ~= 'w' then redis.call('HSET', KEYS[k], ARGV[i], v .. 'w') end
      break
    end
  end
end
return 0
`;

const TOP = `${OPEN_EPOCH}
return {e, redis.call('HGET', KEYS[1], 'n')}
`;

type Scripted = Redis & {
  streamAlloc(s: string, m0: string, m1: string, c0: string, c1: string, window: number, n: number, ...args: (string | number)[]): Promise<string[]>;
  streamTop(s: string, m0: string, m1: string): Promise<string[]>;
  streamWritten(m0: string, m1: string, ...ids: string[]): Promise<number>;
};

/** The allocator over Redis or Redis Cluster. One script call per user per batch, all sent at once. */
export function createRedisAllocator(redis: Redis, opts: { prefix?: string; window?: number } = {}): StreamAllocator {
  const prefix = opts.prefix ?? "";
  const window = opts.window ?? ALLOC_WINDOW;
  const r = redis as Scripted;
  r.defineCommand("streamAlloc", { numberOfKeys: 5, lua: ALLOC });
  r.defineCommand("streamTop", { numberOfKeys: 3, lua: TOP });
  r.defineCommand("streamWritten", { numberOfKeys: 2, lua: WRITTEN });
  const key = (u: string, k: string) => `${prefix}{u:${u}}:${k}`;
  const unavailable = (err: unknown) => {
    throw new AllocatorUnavailable(`position allocator unavailable: ${(err as Error)?.message ?? err}`);
  };

  return {
    async allocate(requests) {
      const out: AllocResult[] = requests.map(() => ({ positions: {} }));
      const users = byUser(requests);
      const claimsOf = new Map<string, number[]>();
      requests.forEach((q, i) => {
        if (!q.claim) return;
        let l = claimsOf.get(q.claim.sender);
        if (!l) claimsOf.set(q.claim.sender, (l = []));
        l.push(i);
        if (!users.has(q.claim.sender)) users.set(q.claim.sender, []);
      });
      const calls = [...users].map(async ([u, idx]) => {
        const claims = claimsOf.get(u) ?? [];
        const res = await r.streamAlloc(
          key(u, "s"), key(u, "m0"), key(u, "m1"), key(u, "c0"), key(u, "c1"),
          window, idx.length,
          ...idx.map((i) => requests[i]!.msgId),
          ...claims.flatMap((i) => [requests[i]!.msgId, requests[i]!.claim!.ts]),
        );
        const epoch = Number(res[0]);
        idx.forEach((i, k) => (out[i]!.positions[u] = { epoch, pos: Number(res[k + 1]) }));
        const base = idx.length + 1;
        claims.forEach((i, k) => (out[i]!.claimed = { fresh: res[base + 2 * k] === "1", ts: Number(res[base + 2 * k + 1]) }));
      });
      await Promise.all(calls).catch(unavailable);
      return out;
    },
    async written(requests) {
      const users = byUser(requests);
      await Promise.all([...users].map(([u, idx]) => r.streamWritten(key(u, "m0"), key(u, "m1"), ...idx.map((i) => requests[i]!.msgId)))).catch(unavailable);
    },
    async tops(users) {
      const out: Record<string, Position> = {};
      await Promise.all(
        [...new Set(users)].map(async (u) => {
          const [e, n] = await r.streamTop(key(u, "s"), key(u, "m0"), key(u, "m1"));
          out[u] = { epoch: Number(e), pos: Number(n) };
        }),
      ).catch(unavailable);
      return out;
    },
    ready: () => isRedisReady(redis),
  };
}
