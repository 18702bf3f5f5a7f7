import { createAmqpConnection } from "../../shared/amqp.ts";
import { loadConfigOrExit, localUrl, requireKeys } from "../../shared/config.ts";
import { openPostgres } from "../../shared/db/index.ts";
import { createLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import { createAmqpQueue } from "../../shared/queue/queue-amqp.ts";
import { closeRedis, createRedis, isCluster } from "../../shared/redis.ts";
import { createRedisAllocator } from "../../shared/stream/allocator-redis.ts";
import { createPersistApp } from "./app.ts";
import { createBatcher } from "./batcher.ts";
import { createFloorKeeper } from "./floors.ts";
import { createPersistMetrics } from "./metrics.ts";
import { onShutdown, surviveStrayConnectionErrors } from "../../shared/shutdown.ts";

const DEFAULT_PORT = 3003;
const DRAIN_MS = 7000;
const EXIT_DEADLINE_MS = 9500;

const cfg = requireKeys(loadConfigOrExit(), ["AMQP_URL", "DATABASE_URL", "REDIS_URL"], "persist");

const log = createLogger({ service: "persist" }, cfg.LOG_LEVEL);
surviveStrayConnectionErrors(log);
const metrics = createMetrics("persist");
const persistMetrics = createPersistMetrics(metrics);

const db = openPostgres(cfg.DATABASE_URL, { max: cfg.BATCH_CONCURRENCY + 1 });
const conn = createAmqpConnection(cfg.AMQP_URL, log.child({ dep: "amqp" }), { name: `persist pid ${process.pid}` });
const queue = createAmqpQueue(conn, {
  log: log.child({ dep: "queue" }),
  queue: cfg.QUEUE_NAME,
  publisher: false,
  onDeadLetter: () => persistMetrics.deadLettered.inc(),
});
const redis = createRedis(cfg.REDIS_URL, log.child({ dep: "redis" }));
// on Redis Cluster an allocation is answered only once its master's replica holds it (survives a failover)
const allocator = createRedisAllocator(redis, { prefix: cfg.REDIS_PREFIX, waitReplicas: isCluster(redis) ? 1 : 0 });
// what this process wrote moves the allocator's floors, so written allocations may leave its window
const floors = createFloorKeeper({ allocator, database: db, log: log.child({ part: "floors" }), metrics: persistMetrics });
const batcher = createBatcher({
  database: db,
  allocator,
  onWritten: floors.written,
  maxRows: cfg.BATCH_SIZE,
  maxWaitMs: cfg.BATCH_MS,
  concurrency: cfg.BATCH_CONCURRENCY,
  prefetch: cfg.PREFETCH,
  log,
  metrics: persistMetrics,
});

const app = createPersistApp({ queueReady: () => queue.ready(), dbReady: async () => batcher.healthy() && (await db.ping(1000)), metrics });
const server = Bun.serve({ port: cfg.PORT ?? DEFAULT_PORT, hostname: cfg.HOST, fetch: app.fetch });
const subscription = await queue.consume(batcher, { prefetch: cfg.PREFETCH });

log.info("persist started", { port: server.port, batchSize: cfg.BATCH_SIZE, batchMs: cfg.BATCH_MS, batchConcurrency: cfg.BATCH_CONCURRENCY, prefetch: cfg.PREFETCH });
console.log(`persist listening on ${localUrl(cfg.HOST, server.port!)}`);

onShutdown(
  log,
  async () => {
    const drained = await batcher.drain(DRAIN_MS);
    if (!drained) log.warn("could not commit everything held in time; the rest stays in the queue for redelivery");
    floors.stop();
    await subscription.stop();
    await queue.close();
    await conn.close();
    server.stop(true);
    await db.close();
    await closeRedis(redis);
    log.info("stopped");
  },
  EXIT_DEADLINE_MS,
);
