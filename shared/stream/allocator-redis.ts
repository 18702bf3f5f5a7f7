import type { Redis } from "ioredis";
import { isRedisReady } from "../redis.ts";
import { ALLOC_WINDOW, AllocatorUnavailable, byUser, type AllocResult, type StreamAllocator } from "./allocator.ts";
import type { Position } from "./position.ts";

// Every key of a user shares the hash tag {u:<user>}, so each script touches one slot (Redis Cluster).
// s: hash {e: epoch, n: last position}; m: zset msgId -> position (the idempotency window);
// c: zset msgId -> ack ts of the sender's delivery claims.
const OPEN_EPOCH = `
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'e', e, 'n', 0)
  redis.call('DEL', KEYS[2])
end
`;

const ALLOC = `${OPEN_EPOCH}
local out = {e}
for i = 2, #ARGV do
  local p = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if not p then
    p = redis.call('HINCRBY', KEYS[1], 'n', 1)
    redis.call('ZADD', KEYS[2], p, ARGV[i])
  end
  out[#out + 1] = tostring(p)
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
return out
`;

const TOP = `${OPEN_EPOCH}
return {e, redis.call('HGET', KEYS[1], 'n')}
`;

const CLAIM = `
local out = {}
for i = 2, #ARGV, 2 do
  local t = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if t then
    out[#out + 1] = '0'
    out[#out + 1] = t
  else
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    out[#out + 1] = '1'
    out[#out + 1] = ARGV[i + 1]
  end
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
return out
`;

type Scripted = Redis & {
  streamAlloc(s: string, m: string, window: number, ...ids: string[]): Promise<string[]>;
  streamTop(s: string, m: string): Promise<string[]>;
  streamClaim(c: string, window: number, ...pairs: (string | number)[]): Promise<string[]>;
};

/** The allocator over Redis or Redis Cluster. One script call per user per batch, all sent at once. */
export function createRedisAllocator(redis: Redis, opts: { prefix?: string; window?: number } = {}): StreamAllocator {
  const prefix = opts.prefix ?? "";
  const window = opts.window ?? ALLOC_WINDOW;
  const r = redis as Scripted;
  r.defineCommand("streamAlloc", { numberOfKeys: 2, lua: ALLOC });
  r.defineCommand("streamTop", { numberOfKeys: 2, lua: TOP });
  r.defineCommand("streamClaim", { numberOfKeys: 1, lua: CLAIM });
  const key = (u: string, k: "s" | "m" | "c") => `${prefix}{u:${u}}:${k}`;
  const unavailable = (err: unknown) => {
    throw new AllocatorUnavailable(`position allocator unavailable: ${(err as Error)?.message ?? err}`);
  };

  return {
    async allocate(requests) {
      const out: AllocResult[] = requests.map(() => ({ positions: {} }));
      const users = byUser(requests);
      const allocs = [...users].map(async ([u, idx]) => {
        const res = await r.streamAlloc(key(u, "s"), key(u, "m"), window, ...idx.map((i) => requests[i]!.msgId));
        const epoch = Number(res[0]);
        idx.forEach((i, k) => (out[i]!.positions[u] = { epoch, pos: Number(res[k + 1]) }));
      });
      const bySender = new Map<string, number[]>();
      requests.forEach((q, i) => {
        if (!q.claim) return;
        let l = bySender.get(q.claim.sender);
        if (!l) bySender.set(q.claim.sender, (l = []));
        l.push(i);
      });
      const claims = [...bySender].map(async ([s, idx]) => {
        const res = await r.streamClaim(key(s, "c"), window, ...idx.flatMap((i) => [requests[i]!.msgId, requests[i]!.claim!.ts]));
        idx.forEach((i, k) => (out[i]!.claimed = { fresh: res[2 * k] === "1", ts: Number(res[2 * k + 1]) }));
      });
      await Promise.all([...allocs, ...claims]).catch(unavailable);
      return out;
    },
    async tops(users) {
      const out: Record<string, Position> = {};
      await Promise.all(
        [...new Set(users)].map(async (u) => {
          const [e, n] = await r.streamTop(key(u, "s"), key(u, "m"));
          out[u] = { epoch: Number(e), pos: Number(n) };
        }),
      ).catch(unavailable);
      return out;
    },
    ready: () => isRedisReady(redis),
  };
}
