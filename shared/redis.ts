import { Cluster, Redis as SingleRedis } from "ioredis";
import { backoffDelay } from "./backoff.ts";
import { splitList } from "./config.ts";
import type { Logger } from "./log.ts";

/** A single Redis or a Redis Cluster: the same commands; multi-key ones must stay within one hash slot. */
export type Redis = SingleRedis | Cluster;

export interface RedisOptions {
  /** A command without a reply within this long fails (a hung server must not hang callers). */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
}

/**
 * A Redis client that reconnects forever with the shared backoff, and while disconnected fails
 * commands at once instead of queueing them. `isRedisReady(redis)` tells whether it is usable now.
 * `urls` is REDIS_URL: one URL is a single Redis; several (comma-separated) are seed nodes of one
 * Redis Cluster, masters and replicas alike: the cluster client learns the slot map from any of
 * them, follows MOVED/ASK, and after a failover refreshes the map and reconnects to the new master.
 */
export function createRedis(urls: string, log: Logger, opts: RedisOptions = {}): Redis {
  const nodes = splitList(urls);
  const nodeOptions = {
    // commands issued in one tick go out in one write (the directory's lookups and presence
    // updates issue one command per user): a write per command was most of discover's CPU
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs ?? 3000,
    connectTimeout: opts.connectTimeoutMs ?? 3000,
  };
  const redis: Redis =
    nodes.length > 1
      ? new Cluster(
          nodes.map((u) => {
            const p = new URL(u);
            return { host: p.hostname, port: Number(p.port || 6379) };
          }),
          {
            clusterRetryStrategy: (times) => backoffDelay(times - 1),
            enableOfflineQueue: false,
            enableAutoPipelining: true,
            // a failover takes the cluster a few seconds (cluster-node-timeout plus an election):
            // retry a command meanwhile rather than fail it at once, within the command timeout
            retryDelayOnFailover: 200,
            retryDelayOnClusterDown: 200,
            slotsRefreshTimeout: 2000,
            slotsRefreshInterval: 5000,
            redisOptions: { ...nodeOptions, ...authOf(nodes[0]!) },
          },
        )
      : new SingleRedis(nodes[0] ?? urls, { ...nodeOptions, retryStrategy: (times) => backoffDelay(times - 1), enableOfflineQueue: false });
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

function authOf(url: string): { username?: string; password?: string; tls?: object } {
  const u = new URL(url);
  return {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
  };
}

export function isCluster(redis: Redis): redis is Cluster {
  return redis instanceof Cluster;
}

/** Ready: a single Redis connected, or a cluster whose slot map is known (commands can be routed). */
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
