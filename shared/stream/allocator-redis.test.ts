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
