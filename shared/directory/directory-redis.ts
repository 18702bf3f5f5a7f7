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
 * Keys, under the prefix p (which must not itself carry a hash tag, or every key lands in one slot):
 *   {p}instances          set of instance ids that may hold users (what the sweeper walks)
 *   {p}{i:<id>}hb         the instance's URL, expiring with its heartbeat TTL: alive while it exists
 *   {p}{i:<id>}users      set of users on the instance
 *   {p}{u:<user>}         set of instance ids holding the user
 *   {p}claim:<msgId>      "p" while pending, else the ack timestamp
 * Every command and script touches the keys of one hash slot only, so on Redis Cluster the keys
 * spread over the slots: an instance's two keys share the tag {i:<id>}, a user's key has its own
 * tag, and what spans users (presence, lookup, wipe) is one single-key command per user, all sent
 * at once. The price is that those spans are not atomic: a wipe removes the instance's users set
 * first and then each user's entry, and the caller of heartbeat re-announces after a wipe anyway.
 */
export interface RedisDirectory extends Directory, Ledger {
  /** Forgets the users of every instance whose heartbeat lapsed; returns those instance ids. */
  sweepDeadInstances(): Promise<string[]>;
}

// KEYS: hb, users  ARGV: url, ttl  → {1} when the instance was alive, else {0, users it held} (now forgotten)
const HEARTBEAT = `
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET') then return {1} end
local users = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return {0, users}
`;

// KEYS: hb, users  ARGV: "dead-only"?  → the users the instance held (now forgotten); nil if alive and dead-only
const WIPE = `
if ARGV[1] == 'dead-only' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local users = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
return users
`;

// KEYS: claim key
const RELEASE = `
if redis.call('GET', KEYS[1]) == 'p' then redis.call('DEL', KEYS[1]) end
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
  wipe: luaScript(WIPE),
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
  const instances = `${p}instances`;
  const hb = (id: string) => `${p}{i:${id}}hb`;
  const usersOf = (id: string) => `${p}{i:${id}}users`;
  const u = (user: string) => `${p}{u:${user}}`;
  const claimKey = (msgId: string) => `${p}claim:${msgId}`;

  /** Drops `id` from each user's entry: the second half of a wipe. */
  const unlink = (id: string, users: string[]) => Promise.all(users.map((user) => redis.srem(u(user), id)));

  /** Forgets the instance; with deadOnly, only while its heartbeat is gone. False if it was alive. */
  async function wipe(id: string, deadOnly: boolean): Promise<boolean> {
    const users = (await scripts.wipe(redis, [hb(id), usersOf(id)], [deadOnly ? "dead-only" : "any"])) as string[] | null;
    if (!users) return false;
    await unlink(id, users);
    await redis.srem(instances, id);
    return true;
  }

  return {
    async heartbeat(instance, ttlMs) {
      const ttl = Math.max(1, Math.round(ttlMs));
      const [[known, wiped]] = await guard(
        Promise.all([
          scripts.heartbeat(redis, [hb(instance.id), usersOf(instance.id)], [instance.url, ttl]) as Promise<[number, string[]?]>,
          redis.sadd(instances, instance.id),
        ]),
      );
      if (wiped?.length) await guard(unlink(instance.id, wiped));
      return known === 1;
    },

    async setPresence(instanceId, online, offline) {
      if (!online.length && !offline.length) return;
      const ops: Array<Promise<unknown>> = [];
      // offline: the user's entry first; online: the instance's set first (what a wipe walks)
      for (const user of offline) ops.push(redis.srem(u(user), instanceId));
      if (offline.length) ops.push(redis.srem(usersOf(instanceId), ...offline));
      if (online.length) ops.push(redis.sadd(usersOf(instanceId), ...online));
      for (const user of online) ops.push(redis.sadd(u(user), instanceId));
      ops.push(redis.sadd(instances, instanceId));
      await guard(Promise.all(ops));
    },

    async lookup(users) {
      const wanted = unique(users);
      const held = await guard(Promise.all(wanted.map((user) => redis.smembers(u(user)))));
      const ids = unique(held.flat());
      const urls = await guard(Promise.all(ids.map((id) => redis.get(hb(id)))));
      const alive = new Map<string, string>();
      ids.forEach((id, i) => urls[i] != null && alive.set(id, urls[i]!));
      return Object.fromEntries(
        wanted.map((user, i): [string, InstanceInfo[]] => [
          user,
          held[i]!.flatMap((id) => (alive.has(id) ? [{ id, url: alive.get(id)! }] : [])),
        ]),
      );
    },

    async removeInstance(instanceId) {
      await guard(wipe(instanceId, false));
    },

    async sweepDeadInstances() {
      const ids = await guard(redis.smembers(instances));
      const swept = await guard(Promise.all(ids.map((id) => wipe(id, true))));
      return ids.filter((_, i) => swept[i]);
    },

    async claim(msgIds) {
      const ids = unique(msgIds);
      const states = await guard(Promise.all(ids.map((id) => redis.call("SET", [claimKey(id), "p", "NX", "PX", CLAIM_PENDING_MS, "GET"]) as Promise<string | null>)));
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
      await guard(Promise.all(done.map(({ msgId, ts }) => redis.set(claimKey(msgId), String(ts), "PX", CLAIM_DONE_MS))));
    },

    async release(msgIds) {
      await guard(Promise.all(unique(msgIds).map((id) => scripts.release(redis, [claimKey(id)], []))));
    },
  };
}
