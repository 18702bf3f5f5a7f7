import { Cluster, type Redis } from "ioredis";
import { isRedisReady } from "../redis.ts";
import { ALLOC_WINDOW, AllocatorUnavailable, byUser, type AllocResult, type StreamAllocator } from "./allocator.ts";
import { comparePositions, type Position } from "./position.ts";

// Every key of a user shares the hash tag {u:<user>}, so each script touches one slot (Redis Cluster).
// s: hash {e: epoch, n: last position, i: ids added to m0 since it was last rotated, r: 1 once m1
// exists, f: the floor, every position up to which persist checked is stored}; m0/m1: hashes msgId
// -> "<pos>[:<ts>][w]", the idempotency window in two generations: `:<ts>` is the sender's delivery
// claim (the ack's ts; only in the sender's own entry); `w` marks an entry that may go whatever its
// position (a claim without a position; and the entries the previous version's persist marked one
// by one). When `window` new ids went into m0 it becomes m1, and of the old m1 only the entries
// above the floor are carried into the new m0 (an allocation never leaves the window before persist
// wrote it, however far persist lags). A claim lives in the sender's entry, so a new message costs
// one HGET and one HSET per user (two HGETs once a user's m1 exists), and persist nothing per entry
// after writing: one floor per user now and then (`writtenUpTo`). Hashes, not sorted sets: HGET/HSET
// cost a fraction of ZSCORE/ZADD. One script call serves many users: KEYS hold 3 keys per user (s,
// m0, m1), so on a single Redis a whole tick is one call; on a cluster the users are grouped by hash
// slot (one call per slot in use), since a script may only touch keys of one slot.
const LIB = `
-- The user's epoch (\`e\` as read from s), opening one when the allocator has none for the user.
local function ensureEpoch(s, m0, m1, e)
  if e then return e end
  local t = redis.call('TIME')
  e = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', s, 'e', e, 'n', 0, 'i', 0, 'r', 0, 'f', 0)
  redis.call('DEL', m0, m1)
  return e
end
-- A window entry and the generation holding it (m1 only once one exists).
local function find(m0, m1, hasOld, id)
  local v = redis.call('HGET', m0, id)
  if v or not hasOld then return v, m0 end
  return redis.call('HGET', m1, id), m1
end
-- m0 becomes m1; the entries of the old m1 above the floor (persist may not have written them yet)
-- move into the new m0.
local function rotate(m0, m1, floor)
  local old = redis.call('HGETALL', m1)
  redis.call('DEL', m1)
  redis.call('RENAME', m0, m1)
  for j = 1, #old, 2 do
    local v = old[j + 1]
    if string.sub(v, -1) ~= 'w' and tonumber(string.match(v, '^%d+')) > floor then redis.call('HSET', m0, old[j], v) end
  end
end
`;

// ARGV: window, then one JSON array with one array per user (in KEYS order): n, then n pairs
// (id, claim ts or "" for no claim), then pairs (id, ts): claims of a sender who is not among the
// message's users (a server event such as a delivery receipt), kept as "0:<ts>w" (no position;
// evictable by count whatever the floor). Timestamps travel as strings (stored as given).
// JSON in one argument, not one argument per field: each argument costs the client (ioredis writes
// it as a bulk string, ~2.5 µs per message of a gateway's call) and Redis about as much to parse
// as cjson.decode (C) costs. Returns one string, fields joined by ",": per user the epoch, then per
// id its pos, and for a claimed id also fresh ("1"/"0") and ts; then per claim-only id fresh and ts.
const ALLOC = `${LIB}
local window = tonumber(ARGV[1])
local req = cjson.decode(ARGV[2])
local out = {}
-- The user being served. Its helpers are defined once, not per user (a closure per user costs Lua).
local s, m0, m1, top, inserted, hasOld, changed, floor
-- a new entry in m0 (the window rotates when window new ids went in)
local function add(id, value)
  redis.call('HSET', m0, id, value)
  inserted = inserted + 1
  changed = true
  if inserted >= window then
    rotate(m0, m1, floor)
    inserted = 0
    hasOld = true
  end
end
-- answers a claim on entry v (in the generation at): its first claim records the ts there
local function claimed(id, v, at, claim)
  local p, ts, w = string.match(v, '^(%d+):?(%d*)(w?)$')
  if ts ~= '' then
    out[#out + 1] = '0'
    out[#out + 1] = ts
  else
    redis.call('HSET', at, id, p .. ':' .. claim .. w)
    out[#out + 1] = '1'
    out[#out + 1] = claim
  end
end
for u = 0, #KEYS / 3 - 1 do
  s, m0, m1 = KEYS[u * 3 + 1], KEYS[u * 3 + 2], KEYS[u * 3 + 3]
  local f = req[u + 1]
  local n = f[1]
  -- One read of the counters, one write at the end: fewer commands per id than HINCRBY/HLEN each.
  local st = redis.call('HMGET', s, 'e', 'n', 'i', 'r', 'f')
  out[#out + 1] = ensureEpoch(s, m0, m1, st[1])
  top, inserted, hasOld, changed, floor = tonumber(st[2] or '0'), tonumber(st[3] or '0'), st[4] == '1', false, tonumber(st[5] or '0')
  if not st[1] then
    top, inserted, hasOld, floor = 0, 0, false, 0
  elseif not st[4] then
    -- written by the previous version of this script (no \`r\`): look once
    hasOld = redis.call('EXISTS', m1) == 1
    changed = true
  end
  for i = 2, 2 * n, 2 do
    local id, claim = f[i], f[i + 1]
    local v, at = find(m0, m1, hasOld, id)
    if v then
      out[#out + 1] = string.match(v, '^%d+')
      if claim ~= '' then claimed(id, v, at, claim) end
    else
      top = top + 1
      local p = tostring(top)
      add(id, claim ~= '' and p .. ':' .. claim or p)
      out[#out + 1] = p
      if claim ~= '' then
        out[#out + 1] = '1'
        out[#out + 1] = claim
      end
    end
  end
  for i = 2 * n + 2, #f, 2 do
    local id, claim = f[i], f[i + 1]
    local v, at = find(m0, m1, hasOld, id)
    if v then
      claimed(id, v, at, claim)
    else
      add(id, '0:' .. claim .. 'w')
      out[#out + 1] = '1'
      out[#out + 1] = claim
    end
  end
  if changed then redis.call('HSET', s, 'n', top, 'i', inserted, 'r', hasOld and 1 or 0) end
end
return table.concat(out, ',')
`;

// KEYS: per user s. ARGV: one JSON array with, per user, [epoch (a string, as stored), pos]. Sets the
// floor when the user is still in that epoch and it moves forward without passing the top.
const WRITTEN_UP_TO = `
local req = cjson.decode(ARGV[1])
for u = 1, #KEYS do
  local e, p = req[u][1], tonumber(req[u][2])
  local st = redis.call('HMGET', KEYS[u], 'e', 'n', 'f')
  if st[1] == e and p <= tonumber(st[2] or '0') and p > tonumber(st[3] or '0') then
    redis.call('HSET', KEYS[u], 'f', string.format('%.0f', p))
  end
end
return 0
`;

// KEYS: per user s. Returns per user: epoch ("0" when none), floor.
const FLOORS = `
local out = {}
for u = 1, #KEYS do
  local st = redis.call('HMGET', KEYS[u], 'e', 'f')
  out[#out + 1] = st[1] or '0'
  out[#out + 1] = st[2] or '0'
end
return out
`;

// KEYS: per user s, m0, m1. Returns per user: epoch, top.
const TOPS = `${LIB}
local out = {}
for u = 0, #KEYS / 3 - 1 do
  out[#out + 1] = ensureEpoch(KEYS[u * 3 + 1], KEYS[u * 3 + 2], KEYS[u * 3 + 3], redis.call('HGET', KEYS[u * 3 + 1], 'e'))
  out[#out + 1] = redis.call('HGET', KEYS[u * 3 + 1], 'n')
end
return out
`;

/** The Redis Cluster hash slot of a hash tag's content: CRC16 (XMODEM) mod 16384, as Redis computes it. */
export function hashSlot(tag: string): number {
  let crc = 0;
  for (const byte of new TextEncoder().encode(tag)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/**
 * Ids travel in JSON (cjson decodes them), which carries any well-formed string byte for byte; an
 * unpaired surrogate (never in a msgId: protocol.storableText) would not decode, so it is refused here.
 */
const checkIds = (requests: Array<{ msgId: string }>) => {
  for (const { msgId } of requests) if (!msgId.isWellFormed()) throw new Error(`a msgId must be well-formed Unicode: ${JSON.stringify(msgId)}`);
};

/** Users per script call at most (a call blocks Redis while it runs). */
const USERS_PER_CALL = 500;

export interface RedisAllocatorOptions {
  prefix?: string;
  window?: number;
  /**
   * Replicas that must hold an allocation before it is answered (WAIT after the script, in one
   * pipeline, so on the same node): Redis replicates asynchronously, and a failover that lost a
   * counter's last increments would hand positions out twice (the epoch only catches a counter
   * lost entirely). 1 on Redis Cluster; 0 (default) on a single Redis.
   */
  waitReplicas?: number;
  /**
   * How long WAIT may block (default 100 ms). After that, a master with no replica attached answers
   * (and its slot skips WAIT for a while); one whose replica is attached but behind waits up to
   * 2 s more, then the allocation fails (unavailable; retrying it is idempotent).
   */
  waitMs?: number;
}

/** How long a slot whose master has no replica (after a failover) allocates without WAIT. */
const NO_REPLICA_MS = 5000;
/** How long an allocation waits more for a replica that is attached but slow, before it fails. */
const SLOW_REPLICA_MS = 2000;

interface EvalWaitPipeline {
  eval(...a: (string | number)[]): EvalWaitPipeline;
  exists(key: string): EvalWaitPipeline;
  wait(replicas: number, ms: number): EvalWaitPipeline;
  role(): EvalWaitPipeline;
  exec(): Promise<Array<[Error | null, unknown]> | null>;
}

/** The allocator over Redis or Redis Cluster: one script call per hash slot in use (per 500 users). */
export function createRedisAllocator(redis: Redis | Cluster, opts: RedisAllocatorOptions = {}): StreamAllocator {
  const prefix = opts.prefix ?? "";
  const window = opts.window ?? ALLOC_WINDOW;
  const waitReplicas = opts.waitReplicas ?? 0;
  const waitMs = opts.waitMs ?? 100;
  const noReplicaUntil = new Map<number, number>();
  const clustered = redis instanceof Cluster;
  const script = (lua: string) => {
    const sha = new Bun.CryptoHasher("sha1").update(lua).digest("hex");
    return async (keys: string[], args: (string | number)[]): Promise<string[]> => {
      try {
        return (await redis.evalsha(sha, keys.length, ...keys, ...args)) as string[];
      } catch (err) {
        if (!String((err as Error)?.message).includes("NOSCRIPT")) throw err;
        return (await redis.eval(lua, keys.length, ...keys, ...args)) as string[];
      }
    };
  };
  // Allocation always sends the script itself (EVAL; Redis keeps it compiled by its SHA): with
  // EVALSHA, a NOSCRIPT answer (a Redis that restarted or flushed its scripts) would be retried
  // after calls sent later, which another connection may meanwhile have made succeed, allocating
  // them first and breaking each connection's order.
  const alloc = async (keys: string[], args: (string | number)[]): Promise<string> => {
    const slot = hashSlot(/\{([^}]*)\}/.exec(keys[0]!)?.[1] ?? keys[0]!);
    const until = noReplicaUntil.get(slot);
    if (waitReplicas === 0 || (until !== undefined && until > Date.now())) return redis.eval(ALLOC, keys.length, ...keys, ...args) as Promise<string>;
    if (until !== undefined) noReplicaUntil.delete(slot);
    const pipeline = () => redis.pipeline() as unknown as EvalWaitPipeline;
    // ROLE after WAIT, on the same node: which replicas the master has once WAIT gave up
    const res = await pipeline().eval(ALLOC, keys.length, ...keys, ...args).wait(waitReplicas, waitMs).role().exec();
    if (!res) throw new Error("pipeline aborted");
    const [[err, out], [waitErr, acked], [, role]] = res as [[Error | null, string], [Error | null, number], [Error | null, unknown[] | undefined]];
    if (err) throw err;
    if (waitErr) throw waitErr;
    if (acked >= waitReplicas) return out;
    const attached = Array.isArray(role?.[2]) ? (role[2] as unknown[]).length : 0;
    if (attached < waitReplicas) {
      // No replica to wait for (its host is gone, or a failover left the new master alone): the
      // master is the only copy, and answering is the best there is until a replica is back.
      noReplicaUntil.set(slot, Date.now() + NO_REPLICA_MS);
      return out;
    }
    // A replica is attached but behind (a loaded machine): answering now, a failover before it
    // catches up would hand these positions out again. Wait longer (a keyed command routes the
    // pipeline to the same node and connection, and WAIT covers every earlier write on it); if it
    // still has not confirmed, fail: the caller retries, and allocation is idempotent.
    const again = await pipeline().exists(keys[0]!).wait(waitReplicas, SLOW_REPLICA_MS).exec();
    const confirmed = again?.[1]?.[1];
    if (typeof confirmed === "number" && confirmed >= waitReplicas) return out;
    throw new Error(`no replica confirmed the allocation within ${waitMs + SLOW_REPLICA_MS} ms`);
  };
  const writtenUpTo = script(WRITTEN_UP_TO);
  const floorsOf = script(FLOORS);
  const topsOf = script(TOPS);
  const key = (u: string, k: string) => `${prefix}{u:${u}}:${k}`;
  /** Users in groups that one script call may serve. */
  const groups = (users: string[]): string[][] => {
    const by = new Map<number, string[]>();
    for (const u of users) {
      const slot = clustered ? hashSlot(`u:${u}`) : 0;
      let g = by.get(slot);
      if (!g) by.set(slot, (g = []));
      g.push(u);
    }
    const out: string[][] = [];
    for (const g of by.values()) for (let i = 0; i < g.length; i += USERS_PER_CALL) out.push(g.slice(i, i + USERS_PER_CALL));
    return out;
  };
  const unavailable = (err: unknown) => {
    throw new AllocatorUnavailable(`position allocator unavailable: ${(err as Error)?.message ?? err}`);
  };

  return {
    async allocate(requests) {
      checkIds(requests);
      // no prototype: a user named "__proto__" is a key like any other, and for…in sees only users
      const out: AllocResult[] = requests.map(() => ({ positions: Object.create(null) as Record<string, Position> }));
      const users = byUser(requests);
      // claims of senders who are not among their message's users (server events)
      const claimOnly = new Map<string, number[]>();
      requests.forEach((q, i) => {
        if (!q.claim || q.users.includes(q.claim.sender)) return;
        let l = claimOnly.get(q.claim.sender);
        if (!l) claimOnly.set(q.claim.sender, (l = []));
        l.push(i);
        if (!users.has(q.claim.sender)) users.set(q.claim.sender, []);
      });
      await Promise.all(
        groups([...users.keys()]).map(async (group) => {
          const keys: string[] = [];
          const req: Array<Array<string | number>> = [];
          for (const u of group) {
            keys.push(key(u, "s"), key(u, "m0"), key(u, "m1"));
            const idx = users.get(u)!;
            const f: Array<string | number> = [idx.length];
            for (const i of idx) {
              const q = requests[i]!;
              f.push(q.msgId, q.claim?.sender === u ? String(q.claim.ts) : "");
            }
            for (const i of claimOnly.get(u) ?? []) f.push(requests[i]!.msgId, String(requests[i]!.claim!.ts));
            req.push(f);
          }
          const res = (await alloc(keys, [window, JSON.stringify(req)])).split(",");
          let k = 0;
          for (const u of group) {
            const epoch = Number(res[k++]);
            for (const i of users.get(u)!) {
              out[i]!.positions[u] = { epoch, pos: Number(res[k++]) };
              if (requests[i]!.claim?.sender === u) {
                out[i]!.claimed = { fresh: res[k] === "1", ts: Number(res[k + 1]) };
                k += 2;
              }
            }
            for (const i of claimOnly.get(u) ?? []) {
              out[i]!.claimed = { fresh: res[k] === "1", ts: Number(res[k + 1]) };
              k += 2;
            }
          }
        }),
      ).catch(unavailable);
      return out;
    },
    async writtenUpTo(floors) {
      const by = new Map<string, Position>();
      for (const { user, position } of floors) {
        const had = by.get(user);
        // two floors of one user in one call: the later one (a later epoch's, else the higher)
        if (!had || comparePositions(position, had) > 0) by.set(user, position);
      }
      await Promise.all(
        groups([...by.keys()]).map((group) =>
          writtenUpTo(
            group.map((u) => key(u, "s")),
            [JSON.stringify(group.map((u) => [String(by.get(u)!.epoch), by.get(u)!.pos]))],
          ),
        ),
      ).catch(unavailable);
    },
    async floors(list) {
      const out: Record<string, Position> = Object.create(null);
      await Promise.all(
        groups([...new Set(list)]).map(async (group) => {
          const res = await floorsOf(group.map((u) => key(u, "s")), []);
          group.forEach((u, i) => (out[u] = { epoch: Number(res[2 * i]), pos: Number(res[2 * i + 1]) }));
        }),
      ).catch(unavailable);
      return out;
    },
    async tops(list) {
      const out: Record<string, Position> = {};
      await Promise.all(
        groups([...new Set(list)]).map(async (group) => {
          const res = await topsOf(group.flatMap((u) => [key(u, "s"), key(u, "m0"), key(u, "m1")]), []);
          group.forEach((u, i) => (out[u] = { epoch: Number(res[2 * i]), pos: Number(res[2 * i + 1]) }));
        }),
      ).catch(unavailable);
      return out;
    },
    ready: () => (clustered ? (redis as Cluster).status === "ready" : isRedisReady(redis as Redis)),
  };
}
