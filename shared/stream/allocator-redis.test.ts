import { afterAll, beforeAll } from "bun:test";
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
