import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { silentLogger } from "../log.ts";
import { closeRedis, createRedis, type Redis } from "../redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { directoryContract } from "./directory.contract.ts";
import { DirectoryUnavailable } from "./directory.ts";
import { createRedisDirectory } from "./directory-redis.ts";


let redis: Redis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(() => closeRedis(redis));


function fresh() {
  const prefix = `test:${crypto.randomUUID()}:`;
  const directory = createRedisDirectory(redis, { prefix });
  return { prefix, directory };
}

directoryContract("redis", async () => {
  const { prefix, directory } = fresh();
  return { directory, ledger: directory, cleanup: () => deletePrefix(redis, prefix) };
});

describe("redis directory", () => {
  test("sweepDeadInstances removes the users of lapsed instances and nothing else", async () => {
    const { prefix, directory } = fresh();
    await directory.heartbeat({ id: "dead", url: "http://127.0.0.1:1" }, 200);
    await directory.heartbeat({ id: "live", url: "http://127.0.0.1:2" }, 60_000);
    await directory.setPresence("dead", ["a", "b"], []);
    await directory.setPresence("live", ["b", "c"], []);
    await directory.setPresence("never-beat", ["d"], []);
    const end = Date.now() + 5000;
    while ((await redis.exists(`${prefix}{i:dead}:hb`)) && Date.now() < end) await Bun.sleep(20);
    expect((await directory.sweepDeadInstances()).sort()).toEqual(["dead", "never-beat"]);
    const keys = (await redis.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    expect(keys).toEqual(["instances", "{i:live}:gen", "{i:live}:hb", "{i:live}:users", "{u:b}:at", "{u:c}:at"]);
    expect(await redis.hkeys(`${prefix}{u:b}:at`)).toEqual(["live"]);
    expect(await directory.sweepDeadInstances()).toEqual([]);
    await deletePrefix(redis, prefix);
  });

  test("removeInstance and offline presence leave no keys behind", async () => {
    const { prefix, directory } = fresh();
    await directory.heartbeat({ id: "x", url: "http://127.0.0.1:1" }, 60_000);
    await directory.setPresence("x", ["a", "b"], []);
    await directory.setPresence("x", [], ["a"]);
    await directory.removeInstance("x");
    expect(await redis.keys(`${prefix}*`)).toEqual([]);
  });

  test("lookup of 10000 users is answered", async () => {
    const { prefix, directory } = fresh();
    await directory.heartbeat({ id: "x", url: "http://127.0.0.1:1" }, 60_000);
    const users = Array.from({ length: 10_000 }, (_, i) => `u${i}`);
    await directory.setPresence("x", users.slice(0, 5000), []);
    const r = await directory.lookup(users);
    expect(Object.keys(r)).toHaveLength(10_000);
    expect(users.filter((u) => r[u]!.length).length).toBe(5000);
    await deletePrefix(redis, prefix);
  });

  test("a reply error from Redis is a bug, not unavailability", async () => {
    const { prefix, directory } = fresh();
    await redis.set(`${prefix}{u:wrong}:at`, "a string, not a hash");
    const err = await directory.lookup(["wrong"]).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(DirectoryUnavailable);
    await deletePrefix(redis, prefix);
  });

  test("keys spread over hash slots: every multi-key script names keys of one slot, users and instances land in different slots", async () => {
    const { prefix, directory } = fresh();
    const calls: string[][] = [];
    const orig = redis.sendCommand.bind(redis);
    (redis as { sendCommand: unknown }).sendCommand = (cmd: { name: string; args: unknown[] }) => {
      if (cmd.name === "evalsha" || cmd.name === "eval") {
        const n = Number(cmd.args[1]);
        calls.push(cmd.args.slice(2, 2 + n).map(String));
      }
      return orig(cmd as never);
    };
    try {
      await directory.heartbeat({ id: "i1", url: "http://127.0.0.1:1" }, 60_000);
      await directory.setPresence("i1", ["a", "b"], []);
      await directory.setPresence("i1", [], ["a"]);
      await directory.release(["m1", "m2"]);
      await directory.removeInstance("i1");
    } finally {
      (redis as { sendCommand: unknown }).sendCommand = orig;
    }
    // Redis Cluster hashes only the first {…} of a key: keys with the same tag share a slot
    const slot = (k: string) => /\{([^}]+)\}/.exec(k)?.[1] ?? k;
    expect(calls.length).toBeGreaterThan(3);
    for (const keys of calls) expect(new Set(keys.map((k) => slot(k))).size).toBe(1);
    const slots = new Set([`${prefix}{i:i1}:hb`, `${prefix}{u:a}:at`, `${prefix}{u:b}:at`, `${prefix}{c:m1}`].map((k) => slot(k)));
    expect(slots.size).toBe(4);
    expect(slot(`${prefix}{i:i1}:hb`)).toBe("i:i1");
    await deletePrefix(redis, prefix);
  });

  test("a lapsed registration's entries are invisible at once and a late removal never deletes a newer entry", async () => {
    const { prefix, directory } = fresh();
    const A = { id: "A", url: "http://127.0.0.1:1" };
    await directory.heartbeat(A, 60_000);
    await directory.setPresence("A", ["x"], []);
    expect(await directory.lookup(["x"])).toEqual({ x: [A] });
    // the heartbeat lapses; the entry of generation 1 stays behind until cleaned
    await redis.del(`${prefix}{i:A}:hb`);
    await redis.hset(`${prefix}{u:y}:at`, "A", "1");
    expect(await directory.lookup(["x", "y"])).toEqual({ x: [], y: [] });
    expect(await directory.heartbeat(A, 60_000)).toBe(false);
    await directory.setPresence("A", ["y"], []);
    // a sweeper that read generation 1 before the new registration deletes only generation 1 entries
    await redis.call("HSET", [`${prefix}{u:y}:at`, "A", "2"]);
    await (redis as unknown as { dirUnsetAt(k: string, id: string, g: string): Promise<number> }).dirUnsetAt(`${prefix}{u:y}:at`, "A", "1");
    expect(await directory.lookup(["x", "y"])).toEqual({ x: [], y: [A] });
    await deletePrefix(redis, prefix);
  });

  test("without a connection every method fails fast with DirectoryUnavailable", async () => {
    const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = listener.port;
    listener.stop(true);
    const down = createRedis(`redis://127.0.0.1:${port}`, silentLogger);
    const directory = createRedisDirectory(down);
    try {
      const calls: Array<() => Promise<unknown>> = [
        () => directory.heartbeat({ id: "x", url: "http://127.0.0.1:1" }, 1000),
        () => directory.setPresence("x", ["a"], ["b"]),
        () => directory.lookup(["a"]),
        () => directory.removeInstance("x"),
        () => directory.sweepDeadInstances(),
        () => directory.claim(["m"]),
        () => directory.complete([{ msgId: "m", ts: 1 }]),
        () => directory.release(["m"]),
      ];
      for (const call of calls) expect(await call().catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
    } finally {
      down.disconnect();
    }
  });
});
