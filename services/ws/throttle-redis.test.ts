import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { silentLogger } from "../../shared/log.ts";
import { closeRedis, createRedis, type Redis } from "../../shared/redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { throttleContract } from "./throttle.contract.ts";
import { createRedisThrottle } from "./throttle-redis.ts";

let redis: Redis;
const prefixes: string[] = [];
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(async () => {
  for (const p of prefixes) await deletePrefix(redis, p);
  await closeRedis(redis);
});

function fresh() {
  const prefix = `test:${crypto.randomUUID()}:`;
  prefixes.push(prefix);
  return { prefix, throttle: createRedisThrottle(redis, { prefix }) };
}

throttleContract("redis", async () => fresh().throttle);

describe("redis throttle", () => {
  test("a lock that reads as ended is ended: the next hit with forgetAfterLock starts afresh (1,500 locks of 3 ms)", async () => {
    // Without rounding PTTL 0 (a lock in its last millisecond) up, nearly every round failed; with
    // the lock and the count given relative expiries a moment apart, about one in 250.
    const { throttle } = fresh();
    const rule = { max: 2, windowMs: 60_000, lockMs: 3, maxLockMs: 3, forgetAfterLock: true };
    let relocked = 0;
    for (let i = 0; i < 1500; i++) {
      const k = `k${i}`;
      await throttle.hit(k, rule);
      expect(await throttle.hit(k, rule)).toBe(3);
      while ((await throttle.lockedFor([k])) > 0) {}
      if ((await throttle.hit(k, rule)) !== 0) relocked++;
    }
    expect(relocked).toBe(0);
  }, 30_000);

  test("every key it writes expires, under its prefix", async () => {
    const { prefix, throttle } = fresh();
    const rule = { max: 2, windowMs: 60_000, lockMs: 1000, maxLockMs: 1000 };
    await throttle.hit("login:user:x", rule);
    await throttle.hit("login:user:x", rule);
    const keys = await redis.keys(`${prefix}*`);
    expect(keys.sort()).toEqual([`${prefix}th:{login:user:x}:l`, `${prefix}th:{login:user:x}:n`]);
    for (const k of keys) expect(await redis.pttl(k)).toBeGreaterThan(0);
  });

  test("without a connection it fails instead of answering unlocked", async () => {
    const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = listener.port;
    listener.stop(true);
    const down = createRedis(`redis://127.0.0.1:${port}`, silentLogger);
    try {
      const throttle = createRedisThrottle(down);
      expect(await throttle.lockedFor(["k"]).catch((e) => e)).toBeInstanceOf(Error);
      expect(await throttle.hit("k", { max: 1, windowMs: 1, lockMs: 1, maxLockMs: 1 }).catch((e) => e)).toBeInstanceOf(Error);
    } finally {
      down.disconnect();
    }
  });
});
