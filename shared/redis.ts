import Redis from "ioredis";
import { backoffDelay } from "./backoff.ts";
import type { Logger } from "./log.ts";

export type { Redis };

export interface RedisOptions {
  /** A command without a reply within this long fails (a hung server must not hang callers). */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
}

/**
 * A Redis client that reconnects forever with the shared backoff, and while disconnected fails
 * commands at once instead of queueing them. `isRedisReady(redis)` tells whether it is usable now.
 */
export function createRedis(url: string, log: Logger, opts: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    retryStrategy: (times) => backoffDelay(times - 1),
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout: opts.commandTimeoutMs ?? 3000,
    connectTimeout: opts.connectTimeoutMs ?? 3000,
  });
  let up = false;
  let lastError = "";
  redis.on("ready", () => {
    up = true;
    lastError = "";
    log.info("redis connected");
  });
  redis.on("close", () => {
    if (up) log.warn("redis connection lost");
    up = false;
  });
  redis.on("error", (err: Error) => {
    if (err.message !== lastError) log.warn("redis error", { err: err.message });
    lastError = err.message;
  });
  return redis;
}

export function isRedisReady(redis: Redis): boolean {
  return redis.status === "ready";
}

/** Closes politely, or drops the connection when the server does not answer. */
export async function closeRedis(redis: Redis, timeoutMs = 1000): Promise<void> {
  if (redis.status === "end") return;
  if (redis.status !== "ready") return redis.disconnect();
  const timer = setTimeout(() => redis.disconnect(), timeoutMs);
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  } finally {
    clearTimeout(timer);
  }
}
