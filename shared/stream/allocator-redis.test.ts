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
