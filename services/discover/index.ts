import { loadConfigOrExit, localUrl, requireKeys } from "../../shared/config.ts";
import { createRedisDirectory } from "../../shared/directory/directory-redis.ts";
import { createLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import { closeRedis, createRedis, isRedisReady } from "../../shared/redis.ts";
import { onShutdown } from "../../shared/shutdown.ts";
import { createDiscoverApp } from "./app.ts";

const SWEEP_EVERY_MS = 3000;
const DEFAULT_PORT = 3000;

const cfg = requireKeys(loadConfigOrExit(), ["REDIS_URL", "INTERNAL_SECRET"], "discover");

const log = createLogger({ service: "discover" }, cfg.LOG_LEVEL);
const redis = createRedis(cfg.REDIS_URL, log.child({ dep: "redis" }));
const directory = createRedisDirectory(redis, { prefix: cfg.REDIS_PREFIX });
const metrics = createMetrics("discover");
const redisUp = metrics.gauge("discover_redis_up", "1 while Redis is connected");
redis.on("ready", () => redisUp.set(1));
redis.on("close", () => redisUp.set(0));

const app = createDiscoverApp({
  directory,
  ledger: directory,
  internalSecret: cfg.INTERNAL_SECRET,
  health: () => isRedisReady(redis),
  metrics,
  log,
});

const server = Bun.serve({ port: cfg.PORT ?? DEFAULT_PORT, hostname: cfg.HOST, fetch: app.fetch });

let sweeping = false;
const sweeper = setInterval(async () => {
  if (sweeping || !isRedisReady(redis)) return;
  sweeping = true;
  try {
    const dead = await directory.sweepDeadInstances();
    if (dead.length) log.info("swept dead instances", { instances: dead });
  } catch (err) {
    log.warn("sweep failed", { err });
  } finally {
    sweeping = false;
  }
}, SWEEP_EVERY_MS);

log.info("discover started", { port: server.port });
console.log(`discover listening on ${localUrl(cfg.HOST, server.port!)}`);

onShutdown(log, async () => {
  clearInterval(sweeper);
  const forced = setTimeout(() => server.stop(true), 5000);
  await server.stop();
  clearTimeout(forced);
  await closeRedis(redis);
  log.info("stopped");
});
