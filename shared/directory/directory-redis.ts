import { ReplyError } from "ioredis";
import type { Redis as SingleRedis } from "ioredis";
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
 * Keys, under the prefix p. Every multi-key operation touches one hash slot, and the keys spread over
 * the slots (on Redis Cluster, over the masters): an instance's keys share the tag {i:<id>}, a
 * user's the tag {u:<user>}, a claim's {c:<msgId>}.
 *   {p}{i:<id>}:hb     "<gen> <url>", expiring with the heartbeat TTL: alive while it exists
 *   {p}{i:<id>}:gen    the instance's registration generation (incremented when hb was missing)
 *   {p}{i:<id>}:users  set of users on the instance
 *   {p}{u:<user>}:at   hash instance id -> the generation the entry was written under
 *   {p}{c:<msgId>}     claim: "p" while pending, else the ack timestamp
 *   {p}instances       set of instance ids that may hold users (what the sweeper walks)
 *   {p}changes         pub/sub channel: a JSON array of users whose entries just changed (the feed)
 * A user entry counts only while its instance's hb exists with the same generation, so entries
 * left by a lapsed registration are invisible at once; they are deleted afterwards (a deletion
 * names the generation it removes, so it never removes a newer entry, whatever the interleaving).
 */
export interface RedisDirectory extends Directory, Ledger {
  /** Forgets the users of every instance whose heartbeat lapsed; returns those instance ids. */
  sweepDeadInstances(): Promise<string[]>;
}

// KEYS: hb, gen, users  ARGV: url, ttl → {1} when hb existed, else {0, old gen, users…} (users forgotten)
const HEARTBEAT = `
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('SET', KEYS[1], string.sub(v, 1, string.find(v, ' ') - 1) .. ' ' .. ARGV[1], 'PX', ARGV[2])
  return {1}
end
local old = redis.call('GET', KEYS[2]) or '0'
local gen = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], gen .. ' ' .. ARGV[1], 'PX', ARGV[2])
local out = {0, old}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = u end
redis.call('DEL', KEYS[3])
return out
`;

// KEYS: hb, gen, users  ARGV: only-if-lapsed ("1" or "0") → nil when alive (and only-if-lapsed), else {gen, users…}; all three keys gone
const FORGET = `
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local out = {redis.call('GET', KEYS[2]) or '0'}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = u end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return out
`;

// KEYS: hb, gen, users  ARGV: n online, online…, offline… → the generation the entries are written under
// (SADD/SREM in slices of 1000: Lua's unpack fails beyond about 8,000 values, and a gateway's
// re-announce sends up to DIRECTORY_MAX_BATCH = 10,000 users in one call)
const PRESENCE = `
local function apply(cmd, from, to)
  for i = from, to, 1000 do redis.call(cmd, KEYS[3], unpack(ARGV, i, math.min(i + 999, to))) end
end
local n = tonumber(ARGV[1])
apply('SADD', 2, n + 1)
apply('SREM', n + 2, #ARGV)
return redis.call('GET', KEYS[2]) or '0'
`;

// KEYS: a user's :at  ARGV: instance id, generation → removes the entry when written under that generation or before
const UNSET_AT = `
local g = redis.call('HGET', KEYS[1], ARGV[1])
if g and tonumber(g) <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`;

// KEYS: claim
const RELEASE = `
if redis.call('GET', KEYS[1]) == 'p' then redis.call('DEL', KEYS[1]) end
return 0
`;

type Scripted = Redis & {
  dirHeartbeat(hb: string, gen: string, users: string, url: string, ttl: number): Promise<Array<string | number>>;
  dirForget(hb: string, gen: string, users: string, ifLapsed: "1" | "0"): Promise<string[] | null>;
  dirPresence(hb: string, gen: string, users: string, ...args: Array<string | number>): Promise<string>;
  dirUnsetAt(at: string, id: string, gen: string): Promise<number>;
  dirRelease(claim: string): Promise<number>;
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
  const r = redis as Scripted;
  r.defineCommand("dirHeartbeat", { numberOfKeys: 3, lua: HEARTBEAT });
  r.defineCommand("dirForget", { numberOfKeys: 3, lua: FORGET });
  r.defineCommand("dirPresence", { numberOfKeys: 3, lua: PRESENCE });
  r.defineCommand("dirUnsetAt", { numberOfKeys: 1, lua: UNSET_AT });
  r.defineCommand("dirRelease", { numberOfKeys: 1, lua: RELEASE });
  const inst = (id: string) => [`${p}{i:${id}}:hb`, `${p}{i:${id}}:gen`, `${p}{i:${id}}:users`] as const;
  const at = (user: string) => `${p}{u:${user}}:at`;
  const claimKey = (msgId: string) => `${p}{c:${msgId}}`;
  const instances = `${p}instances`;
  const channel = `${p}changes`;
  /** Publishes the change after it was written (a lookup that follows the message sees it). */
  const announce = async (users: string[]) => {
    if (users.length) await redis.publish(channel, JSON.stringify(users));
  };

  /** Removes the instance's entries of generation `gen` or older from the users' hashes. */
  const unsetAll = (id: string, gen: string, users: string[]) => Promise.all(users.map((u) => r.dirUnsetAt(at(u), id, gen)));

  async function forget(id: string, onlyIfLapsed: boolean): Promise<boolean> {
    const res = await r.dirForget(...inst(id), onlyIfLapsed ? "1" : "0");
    if (!res) return false;
    const [gen, ...users] = res;
    await unsetAll(id, gen!, users);
    await announce(users);
    return true;
  }

  return {
    async heartbeat(instance, ttlMs) {
      return guard(
        (async () => {
          const res = await r.dirHeartbeat(...inst(instance.id), instance.url, Math.max(1, Math.round(ttlMs)));
          await redis.sadd(instances, instance.id);
          if (Number(res[0]) === 1) return true;
          const [, old, ...users] = res.map(String);
          await unsetAll(instance.id, old!, users);
          await announce(users);
          return false;
        })(),
      );
    },

    async setPresence(instanceId, online, offline) {
      if (!online.length && !offline.length) return;
      await guard(
        (async () => {
          await redis.sadd(instances, instanceId);
          const gen = await r.dirPresence(...inst(instanceId), online.length, ...online, ...offline);
          await Promise.all([
            ...offline.map((u) => r.dirUnsetAt(at(u), instanceId, gen)),
            ...online.map((u) => redis.hset(at(u), instanceId, gen)),
          ]);
          await announce([...online, ...offline]);
        })(),
      );
    },

    async lookup(users) {
      const wanted = unique(users);
      return guard(
        (async () => {
          const entries = await Promise.all(wanted.map((u) => redis.hgetall(at(u))));
          const ids = unique(entries.flatMap((e) => Object.keys(e)));
          const hbs = await Promise.all(ids.map((id) => redis.get(inst(id)[0])));
          const alive = new Map<string, { gen: string; url: string }>();
          ids.forEach((id, i) => {
            const v = hbs[i];
            if (!v) return;
            const sp = v.indexOf(" ");
            alive.set(id, { gen: v.slice(0, sp), url: v.slice(sp + 1) });
          });
          return Object.fromEntries(
            wanted.map((u, i): [string, InstanceInfo[]] => {
              const found: InstanceInfo[] = [];
              for (const [id, gen] of Object.entries(entries[i]!)) {
                const a = alive.get(id);
                if (a && a.gen === gen) found.push({ id, url: a.url });
              }
              return [u, found];
            }),
          );
        })(),
      );
    },

    watch(onChange) {
      // a connection of its own: a subscribed connection takes no other commands
      const sub = (redis as SingleRedis).duplicate() as Redis;
      let subscribed = false;
      let stopped = false;
      sub.on("message", (ch: string, text: string) => {
        if (ch !== channel) return;
        try {
          onChange(JSON.parse(text) as string[]);
        } catch {
          onChange(null);
        }
      });
      // (re)subscribed: whatever happened while the connection was down was missed
      sub.on("ready", () => {
        subscribed = false;
        void sub.subscribe(channel).then(
          () => {
            subscribed = true;
            onChange(null);
          },
          () => {},
        );
      });
      sub.on("close", () => {
        if (subscribed) onChange(null);
        subscribed = false;
      });
      sub.on("error", () => {});
      return {
        live: () => subscribed && !stopped,
        stop() {
          stopped = true;
          subscribed = false;
          sub.disconnect();
        },
      };
    },

    async removeInstance(instanceId) {
      await guard(
        (async () => {
          await forget(instanceId, false);
          await redis.srem(instances, instanceId);
        })(),
      );
    },

    async sweepDeadInstances() {
      return guard(
        (async () => {
          const dead: string[] = [];
          for (const id of await redis.smembers(instances)) {
            if (!(await forget(id, true))) continue;
            // a heartbeat racing this re-adds the id at its next beat
            await redis.srem(instances, id);
            dead.push(id);
          }
          return dead;
        })(),
      );
    },

    async claim(msgIds) {
      const ids = unique(msgIds);
      if (!ids.length) return {};
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
      if (!done.length) return;
      await guard(Promise.all(done.map(({ msgId, ts }) => redis.set(claimKey(msgId), String(ts), "PX", CLAIM_DONE_MS))));
    },

    async release(msgIds) {
      if (!msgIds.length) return;
      await guard(Promise.all(unique(msgIds).map((id) => r.dirRelease(claimKey(id)))));
    },
  };
}
