import { afterAll, beforeAll } from "bun:test";
import { closeRedis, type Redis } from "../redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { allocatorContract } from "./allocator.contract.ts";
import { createRedisAllocator, hashSlot } from "./allocator-redis.ts";
import { expect, test } from "bun:test";

let redis: Redis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(() => closeRedis(redis));

allocatorContract("redis", async ({ window }) => {
  const prefix = `test:${crypto.randomUUID()}:`;
  return {
    allocator: createRedisAllocator(redis, { prefix, window }),
    wipe: () => deletePrefix(redis, prefix),
    cleanup: () => deletePrefix(redis, prefix),
  };
});

test("hashSlot is Redis Cluster's key slot (values from the Redis documentation)", () => {
  expect(hashSlot("123456789")).toBe(12739);
  expect(hashSlot("foo")).toBe(12182);
  expect(hashSlot("bar")).toBe(5061);
  expect(hashSlot("hello")).toBe(866);
});

test("waitReplicas: an allocation waits for the replica (WAIT on the key's node); a slot whose master has none skips WAIT for a while", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  // this Redis has no replica: WAIT 1 answers 0 after waitMs
  const allocator = createRedisAllocator(redis, { prefix, waitReplicas: 1, waitMs: 300 });
  let t = performance.now();
  const [first] = await allocator.allocate([{ msgId: "m1", users: ["w"] }]);
  expect(performance.now() - t).toBeGreaterThanOrEqual(290);
  expect(first!.positions.w!.pos).toBe(1);
  t = performance.now();
  const [second] = await allocator.allocate([{ msgId: "m2", users: ["w"] }, { msgId: "m1", users: ["w"] }]);
  expect(performance.now() - t).toBeLessThan(200);
  expect(second!.positions.w!.pos).toBe(2);
  expect((await allocator.allocate([{ msgId: "m1", users: ["w"] }]))[0]!.positions.w!.pos).toBe(1);
  await deletePrefix(redis, prefix);
});

test("state written by the previous script version (claims apart, no generation flag) keeps its positions", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const k = (u: string, x: string) => `${prefix}{u:${u}}:${x}`;
  // the previous layout: s without `r`, an entry already rotated into m1, claims in c0
  await redis.hset(k("o", "s"), "e", "1000", "n", "5", "i", "1", "ci", "2");
  await redis.hset(k("o", "m1"), "old", "4");
  await redis.hset(k("o", "m0"), "newer", "5w");
  await redis.hset(k("o", "c0"), "newer", "123");
  const allocator = createRedisAllocator(redis, { prefix });
  const [a, b, c] = await allocator.allocate([{ msgId: "old", users: ["o"] }, { msgId: "newer", users: ["o"] }, { msgId: "fresh", users: ["o"] }]);
  expect(a!.positions.o).toEqual({ epoch: 1000, pos: 4 });
  expect(b!.positions.o).toEqual({ epoch: 1000, pos: 5 });
  expect(c!.positions.o).toEqual({ epoch: 1000, pos: 6 });
  await deletePrefix(redis, prefix);
});
