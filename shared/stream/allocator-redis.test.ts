import { afterAll, beforeAll, expect, test } from "bun:test";
import { closeRedis, type Redis } from "../redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { allocatorContract } from "./allocator.contract.ts";
import { createRedisAllocator } from "./allocator-redis.ts";

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

test("waitReplicas: an allocation waits for the replica (WAIT on the key's node); a user whose node has none skips WAIT for a while", async () => {
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
