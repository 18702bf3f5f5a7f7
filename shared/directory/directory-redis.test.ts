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


const A_INSTANCE = { id: "inst-a", url: "http://127.0.0.1:1" };

function fresh() {
  const prefix = `test:${crypto.randomUUID()}:`;
  const directory = createRedisDirectory(redis, { prefix });
  return { prefix, directory };
}

directoryContract("redis", async () => {
  const { prefix, directory } = fresh();
  return { directory, ledger: directory, cleanup: () => deletePrefix(redis, prefix) };
});

/** Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384. */
function slotOf(key: string): number {
  const open = key.indexOf("{");
  const close = open >= 0 ? key.indexOf("}", open + 1) : -1;
  const hashed = close > open + 1 ? key.slice(open + 1, close) : key;
  let crc = 0;
  for (const byte of Buffer.from(hashed)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

describe("redis directory", () => {
  test("every command stays within one hash slot, and the keys spread over many slots", async () => {
    const spy = await openTestRedis();
    const commands: Array<{ name: string; keys: string[] }> = [];
    const send = spy.sendCommand.bind(spy);
    spy.sendCommand = ((cmd: { name: string; getKeys(): Array<string | Buffer> }) => {
      commands.push({ name: cmd.name, keys: cmd.getKeys().map(String) });
      return send(cmd as never);
    }) as typeof spy.sendCommand;
    const prefix = `test:${crypto.randomUUID()}:`;
    const directory = createRedisDirectory(spy, { prefix });
    try {
      const users = Array.from({ length: 50 }, (_, i) => `user-${i}`);
      await directory.heartbeat(A_INSTANCE, 200);
      await directory.setPresence(A_INSTANCE.id, users, []);
      await directory.setPresence(A_INSTANCE.id, [], users.slice(0, 10));
      await directory.lookup(users);
      await directory.claim(["m1", "m2"]);
      await directory.complete([{ msgId: "m1", ts: 1 }]);
      await directory.release(["m2"]);
      await directory.heartbeat({ ...A_INSTANCE, id: "other" }, 60_000);
      await directory.setPresence("other", users.slice(0, 5), []);
      while ((await directory.lookup(["user-20"]))["user-20"]!.length) await Bun.sleep(20); // A's 200 ms TTL runs out
      expect(await directory.heartbeat(A_INSTANCE, 60_000)).toBe(false); // wipes A's users
      await directory.setPresence(A_INSTANCE.id, users.slice(0, 5), []);
      await directory.removeInstance(A_INSTANCE.id);
      await directory.heartbeat({ ...A_INSTANCE, id: "dead" }, 1);
      await directory.sweepDeadInstances();

      const withKeys = commands.filter((c) => c.keys.length > 0);
      for (const c of withKeys) expect({ ...c, slots: new Set(c.keys.map(slotOf)).size }).toEqual({ ...c, slots: 1 });
      const slots = new Set(withKeys.flatMap((c) => c.keys.map(slotOf)));
      expect(slots.size).toBeGreaterThan(40);
    } finally {
      await deletePrefix(redis, prefix);
      await closeRedis(spy);
    }
  });


  test("sweepDeadInstances removes the users of lapsed instances and nothing else", async () => {
    const { prefix, directory } = fresh();
    await directory.heartbeat({ id: "dead", url: "http://127.0.0.1:1" }, 200);
    await directory.heartbeat({ id: "live", url: "http://127.0.0.1:2" }, 60_000);
    await directory.setPresence("dead", ["a", "b"], []);
    await directory.setPresence("live", ["b", "c"], []);
    await directory.setPresence("never-beat", ["d"], []);
    const end = Date.now() + 5000;
    while ((await redis.exists(`${prefix}{i:dead}hb`)) && Date.now() < end) await Bun.sleep(20);
    expect((await directory.sweepDeadInstances()).sort()).toEqual(["dead", "never-beat"]);
    const keys = (await redis.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    expect(keys).toEqual(["instances", "{i:live}hb", "{i:live}users", "{u:b}", "{u:c}"]);
    expect(await redis.smembers(`${prefix}{u:b}`)).toEqual(["live"]);
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
    await redis.set(`${prefix}{u:wrong}`, "a string, not a set");
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
