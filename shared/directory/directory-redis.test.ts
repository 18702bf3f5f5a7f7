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
    while ((await redis.exists(`${prefix}hb:dead`)) && Date.now() < end) await Bun.sleep(20);
    expect((await directory.sweepDeadInstances()).sort()).toEqual(["dead", "never-beat"]);
    const keys = (await redis.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    expect(keys).toEqual(["hb:live", "instances", "iu:live", "u:b", "u:c"]);
    expect(await redis.smembers(`${prefix}u:b`)).toEqual(["live"]);
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
    await redis.set(`${prefix}u:wrong`, "a string, not a set");
    const err = await directory.lookup(["wrong"]).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(DirectoryUnavailable);
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
