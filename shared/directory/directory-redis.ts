import { ReplyError } from "ioredis";
import type { Redis } from "../redis.ts";
import {
  CLAIM_DONE_MS,
  CLAIM_PENDING_MS,
  DirectoryUnavailable,
  type Claim,
  type Directory,
  type InstanceInfo,
  type Ledger,
} from "./directory.ts";

/**
 * Keys, under the prefix p:
 *   {p}instances   set of instance ids that may hold users (what the sweeper walks)
 *   {p}hb:{id}     the instance's URL, expiring with its heartbeat TTL: alive while it exists
 *   {p}iu:{id}     set of users on the instance
 *   {p}u:{user}    set of instance ids holding the user
 *   {p}claim:{id}  "p" while pending, else the ack timestamp
 * The scripts build keys from the prefix, so on Redis Cluster the prefix must carry a hash tag
 * (e.g. "{dir}:") to keep every key in one slot.
 */
export interface RedisDirectory extends Directory, Ledger {
  /** Forgets the users of every instance whose heartbeat lapsed; returns those instance ids. */
  sweepDeadInstances(): Promise<string[]>;
}

const LOOKUP_CHUNK = 2000;

const WIPE = `
local function wipe(p, id)
  local iu = p .. 'iu:' .. id
  for _, u in ipairs(redis.call('SMEMBERS', iu)) do redis.call('SREM', p .. 'u:' .. u, id) end
  redis.call('DEL', iu)
end
`;

// KEYS: hb  ARGV: prefix, id, url, ttl
const HEARTBEAT = `${WIPE}
local existed = redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4], 'GET')
redis.call('SADD', ARGV[1] .. 'instances', ARGV[2])
if existed then return 1 end
wipe(ARGV[1], ARGV[2])
return 0
`;

// KEYS: hb  ARGV: prefix, id
const REMOVE = `${WIPE}
wipe(ARGV[1], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. 'instances', ARGV[2])
return 0
`;

// ARGV: prefix
const SWEEP = `${WIPE}
local p = ARGV[1]
local dead = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. 'instances')) do
  if redis.call('EXISTS', p .. 'hb:' .. id) == 0 then
    wipe(p, id)
    redis.call('SREM', p .. 'instances', id)
    dead[#dead + 1] = id
  end
end
return dead
`;

// KEYS: user sets  ARGV: prefix  → per user a flat list id, url, id, url…
const LOOKUP = `
local alive = {}
local out = {}
for i, key in ipairs(KEYS) do
  local row = {}
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    local url = alive[id]
    if url == nil then
      url = redis.call('GET', ARGV[1] .. 'hb:' .. id)
      alive[id] = url
    end
    if url then
      row[#row + 1] = id
      row[#row + 1] = url
    end
  end
  out[i] = row
end
return out
`;

// KEYS: claim keys  ARGV: pending ttl  → per key "" (new), "p" (pending) or the ack timestamp
const CLAIM = `
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, 'p', 'NX', 'PX', ARGV[1], 'GET') or ''
end
return out
`;

// KEYS: claim keys
const RELEASE = `
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'p' then redis.call('DEL', key) end
end
return 0
`;

function luaScript(lua: string) {
  const sha = new Bun.CryptoHasher("sha1").update(lua).digest("hex");
  return async (redis: Redis, keys: string[], args: Array<string | number>): Promise<unknown> => {
    try {
      return await redis.call("EVALSHA", [sha, keys.length, ...keys, ...args]);
    } catch (e) {
      if (!(e instanceof ReplyError && (e as Error).message.startsWith("NOSCRIPT"))) throw e;
      return await redis.call("EVAL", [lua, keys.length, ...keys, ...args]);
    }
  };
}

const scripts = {
  heartbeat: luaScript(HEARTBEAT),
  remove: luaScript(REMOVE),
  sweep: luaScript(SWEEP),
  lookup: luaScript(LOOKUP),
  claim: luaScript(CLAIM),
  release: luaScript(RELEASE),
};

/** Programming errors surface as they are; everything else means Redis is not usable right now. */
async function guard<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (e) {
    if (e instanceof ReplyError && /^(ERR|WRONGTYPE|NOSCRIPT)/.test((e as Error).message)) throw e;
    throw new DirectoryUnavailable(`redis: ${(e as Error).message}`, { cause: e });
  }
}

function unique(xs: string[]): string[] {
  return xs.length < 2 ? xs : [...new Set(xs)];
}

export function createRedisDirectory(redis: Redis, opts: { prefix?: string } = {}): RedisDirectory {
  const p = opts.prefix ?? "dir:";
  const hb = (id: string) => `${p}hb:${id}`;
  const iu = (id: string) => `${p}iu:${id}`;
  const u = (user: string) => `${p}u:${user}`;
  const claimKey = (msgId: string) => `${p}claim:${msgId}`;

  async function lookupChunk(users: string[]): Promise<Array<[string, InstanceInfo[]]>> {
    const rows = (await scripts.lookup(redis, users.map(u), [p])) as string[][];
    return users.map((user, i) => {
      const row = rows[i] ?? [];
      const found: InstanceInfo[] = [];
      for (let j = 0; j < row.length; j += 2) found.push({ id: row[j]!, url: row[j + 1]! });
      return [user, found];
    });
  }

  return {
    async heartbeat(instance, ttlMs) {
      const r = await guard(scripts.heartbeat(redis, [hb(instance.id)], [p, instance.id, instance.url, Math.max(1, Math.round(ttlMs))]));
      return r === 1;
    },

    async setPresence(instanceId, online, offline) {
      if (!online.length && !offline.length) return;
      const tx = redis.multi();
      if (offline.length) {
        for (const user of offline) tx.srem(u(user), instanceId);
        tx.srem(iu(instanceId), ...offline);
      }
      if (online.length) {
        for (const user of online) tx.sadd(u(user), instanceId);
        tx.sadd(iu(instanceId), ...online);
      }
      tx.sadd(`${p}instances`, instanceId);
      const results = await guard(tx.exec());
      const failed = results?.find(([err]) => err);
      if (!results || failed) await guard(Promise.reject(failed?.[0] ?? new Error("transaction aborted")));
    },

    async lookup(users) {
      const wanted = unique(users);
      const chunks: string[][] = [];
      for (let i = 0; i < wanted.length; i += LOOKUP_CHUNK) chunks.push(wanted.slice(i, i + LOOKUP_CHUNK));
      const parts = await guard(Promise.all(chunks.map(lookupChunk)));
      return Object.fromEntries(parts.flat());
    },

    async removeInstance(instanceId) {
      await guard(scripts.remove(redis, [hb(instanceId)], [p, instanceId]));
    },

    async sweepDeadInstances() {
      return (await guard(scripts.sweep(redis, [], [p]))) as string[];
    },

    async claim(msgIds) {
      const ids = unique(msgIds);
      if (!ids.length) return {};
      const states = (await guard(scripts.claim(redis, ids.map(claimKey), [CLAIM_PENDING_MS]))) as string[];
      return Object.fromEntries(
        ids.map((id, i): [string, Claim] => {
          const s = states[i];
          if (!s) return [id, { state: "new" }];
          if (s === "p") return [id, { state: "pending" }];
          return [id, { state: "done", ts: Number(s) }];
        }),
      );
    },

    async complete(done) {
      if (!done.length) return;
      const pipe = redis.pipeline();
      for (const { msgId, ts } of done) pipe.set(claimKey(msgId), String(ts), "PX", CLAIM_DONE_MS);
      const results = await guard(pipe.exec());
      const failed = results?.find(([err]) => err);
      if (!results || failed) await guard(Promise.reject(failed?.[0] ?? new Error("pipeline aborted")));
    },

    async release(msgIds) {
      if (!msgIds.length) return;
      await guard(scripts.release(redis, unique(msgIds).map(claimKey), []));
    },
  };
}
