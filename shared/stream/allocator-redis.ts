import { isRedisReady, type Redis } from "../redis.ts";
import { ALLOC_WINDOW, AllocatorUnavailable, byUser, type AllocResult, type StreamAllocator } from "./allocator.ts";
import type { Position } from "./position.ts";

// Every key of a user shares the hash tag {u:<user>}, so each script touches one slot (Redis Cluster).
// s: hash {e: epoch, n: last position}; m0/m1: hashes msgId -> position, the idempotency window in
// two generations (m0 current; when it holds `window` ids it becomes m1 and the old m1 goes);
// c0/c1: the same for the sender's delivery claims, msgId -> ack ts. Hashes, not sorted sets:
// HGET/HSET cost a fraction of ZSCORE/ZADD, and a generation swap is one RENAME.
const OPEN_EPOCH = `
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'e', e, 'n', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
`;

// KEYS: s, m0, m1, c0, c1. ARGV: window, count of msgIds, msgIds…, then (msgId, ts) claim pairs.
// Returns {epoch, pos…, (fresh, ts)…}.
const ALLOC = `${OPEN_EPOCH}
local window = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local out = {e}
for i = 3, n + 2 do
  local id = ARGV[i]
  local p = redis.call('HGET', KEYS[2], id) or redis.call('HGET', KEYS[3], id)
  if not p then
    p = redis.call('HINCRBY', KEYS[1], 'n', 1)
    if redis.call('HSET', KEYS[2], id, p) == 1 and redis.call('HLEN', KEYS[2]) >= window then redis.call('RENAME', KEYS[2], KEYS[3]) end
  end
  out[#out + 1] = tostring(p)
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

const TOP = `${OPEN_EPOCH}
return {e, redis.call('HGET', KEYS[1], 'n')}
`;

interface AllocPipeline {
  streamAlloc(...keysAndArgs: (string | number)[]): AllocPipeline;
  wait(replicas: number, ms: number): AllocPipeline;
  exec(): Promise<Array<[Error | null, unknown]> | null>;
}

type Scripted = Redis & {
  /** KEYS s, m0, m1, c0, c1, then window, n, msgIds…, claim pairs… */
  streamAlloc(...keysAndArgs: (string | number)[]): Promise<string[]>;
  streamTop(s: string, m0: string, m1: string): Promise<string[]>;
};

export interface RedisAllocatorOptions {
  prefix?: string;
  window?: number;
  /**
   * Replicas that must hold an allocation before it is answered (WAIT after the script, on the
   * same node): Redis replicates asynchronously, and a failover that lost a counter's last
   * increments would hand positions out twice (the epoch only catches a counter lost entirely).
   * 1 on Redis Cluster; 0 (default) on a single Redis.
   */
  waitReplicas?: number;
  /** How long WAIT may block (default 100 ms). A user whose node had no replica in time skips WAIT for a while. */
  waitMs?: number;
}

/** How long a user whose master had no replica (after a failover) allocates without WAIT. */
const NO_REPLICA_MS = 5000;

/** The allocator over Redis or Redis Cluster. One script call per user per batch, all sent at once. */
export function createRedisAllocator(redis: Redis, opts: RedisAllocatorOptions = {}): StreamAllocator {
  const prefix = opts.prefix ?? "";
  const window = opts.window ?? ALLOC_WINDOW;
  const waitReplicas = opts.waitReplicas ?? 0;
  const waitMs = opts.waitMs ?? 100;
  const noReplicaUntil = new Map<string, number>();
  /** The script, then (in the same pipeline, so on the same node) WAIT unless this user's node lately had no replica. */
  const alloc = async (u: string, args: (string | number)[]): Promise<string[]> => {
    const keysAndArgs = [key(u, "s"), key(u, "m0"), key(u, "m1"), key(u, "c0"), key(u, "c1"), ...args];
    const until = noReplicaUntil.get(u);
    if (waitReplicas === 0 || (until !== undefined && until > Date.now())) return r.streamAlloc(...keysAndArgs);
    if (until !== undefined) noReplicaUntil.delete(u);
    const res = await (r.pipeline() as unknown as AllocPipeline).streamAlloc(...keysAndArgs).wait(waitReplicas, waitMs).exec();
    if (!res) throw new Error("pipeline aborted");
    const [[err, out], [waitErr, acked]] = res as [[Error | null, string[]], [Error | null, number]];
    if (err) throw err;
    if (waitErr) throw waitErr;
    if (acked < waitReplicas) {
      if (noReplicaUntil.size > 100_000) noReplicaUntil.clear();
      noReplicaUntil.set(u, Date.now() + NO_REPLICA_MS);
    }
    return out;
  };
  const r = redis as Scripted;
  r.defineCommand("streamAlloc", { numberOfKeys: 5, lua: ALLOC });
  r.defineCommand("streamTop", { numberOfKeys: 3, lua: TOP });
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
        const res = await alloc(u, [
          window, idx.length,
          ...idx.map((i) => requests[i]!.msgId),
          ...claims.flatMap((i) => [requests[i]!.msgId, requests[i]!.claim!.ts]),
        ]);
        const epoch = Number(res[0]);
        idx.forEach((i, k) => (out[i]!.positions[u] = { epoch, pos: Number(res[k + 1]) }));
        const base = idx.length + 1;
        claims.forEach((i, k) => (out[i]!.claimed = { fresh: res[base + 2 * k] === "1", ts: Number(res[base + 2 * k + 1]) }));
      });
      await Promise.all(calls).catch(unavailable);
      return out;
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
