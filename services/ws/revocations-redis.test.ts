import { afterAll, beforeAll, expect, test } from "bun:test";
import { closeRedis, type Redis } from "../../shared/redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { revocationsContract } from "./revocations.contract.ts";
import { createRedisRevocations } from "./revocations-redis.ts";

let redis: Redis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(() => closeRedis(redis));

async function pair(prefix: string) {
  const subs = await Promise.all([openTestRedis(), openTestRedis()]);
  const [a, b] = subs.map((s) => createRedisRevocations(redis, s, { prefix }));
  return {
    a: a!,
    b: b!,
    async cleanup() {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all(subs.map((s) => closeRedis(s)));
      await deletePrefix(redis, prefix);
    },
  };
}

revocationsContract("redis", () => pair(`test:${crypto.randomUUID()}:`));

test("redis revocations: a token's denial expires with it; versions stay", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const { a, cleanup } = await pair(prefix);
  await a.bump("u");
  await a.revokeToken("u", "tid", Date.now() + 60_000);
  expect(await redis.pttl(`${prefix}rv:t:tid`)).toBeGreaterThan(0);
  expect(await redis.pttl(`${prefix}rv:v:u`)).toBe(-1);
  await cleanup();
});

test("redis revocations: instances on another prefix hear nothing of this one", async () => {
  const p1 = await pair(`test:${crypto.randomUUID()}:`);
  const p2 = await pair(`test:${crypto.randomUUID()}:`);
  const heard: unknown[] = [];
  await p2.b.subscribe((e) => heard.push(e));
  let done!: () => void;
  const own = new Promise<void>((r) => (done = r));
  await p1.b.subscribe(() => done());
  await p1.a.bump("shared-name");
  await own;
  // p2 subscribed before p1's publish reached p1's own subscriber: had it shared the channel, it would have heard it by now too.
  await p2.a.bump("other");
  while (heard.length === 0) await Bun.sleep(5);
  expect(heard).toEqual([{ user: "other", version: 1 }]);
  expect(await p2.a.version("shared-name")).toBe(0);
  await p1.cleanup();
  await p2.cleanup();
});
