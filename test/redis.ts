import { silentLogger } from "../shared/log.ts";
import { createRedis, type Redis } from "../shared/redis.ts";

/** A client on the run's Redis (the preload starts it and sets REDIS_URL), once it is ready. */
export async function openTestRedis(): Promise<Redis> {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error("REDIS_URL is not set (the test preload starts Redis and sets it)");
  const redis = createRedis(url, silentLogger);
  if (redis.status !== "ready") await new Promise((resolve) => redis.once("ready", resolve));
  return redis;
}

/** Deletes every key under `prefix` (a test's own directory keyspace). */
export async function deletePrefix(redis: Redis, prefix: string) {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== "0");
}
