import { createAmqpConnection } from "../../shared/amqp.ts";
import { loadConfigOrExit, requireKeys } from "../../shared/config.ts";
import { openPostgres } from "../../shared/db/index.ts";
import { createHttpDirectory } from "../../shared/directory/directory-http.ts";
import { createLogger } from "../../shared/log.ts";
import { createAmqpQueue } from "../../shared/queue/queue-amqp.ts";
import { closeRedis, createRedis, isCluster, isRedisReady } from "../../shared/redis.ts";
import { createRedisAllocator } from "../../shared/stream/allocator-redis.ts";
import { accountSettings } from "./accounts.ts";
import { pushSettings } from "./push-sender.ts";
import { createRedisRevocations } from "./revocations-redis.ts";
import { onShutdown, surviveStrayConnectionErrors } from "../../shared/shutdown.ts";
import { startWsService } from "./service.ts";
import { createRedisThrottle } from "./throttle-redis.ts";

const cfg = loadConfigOrExit();
const c = requireKeys(cfg, ["AMQP_URL", "DATABASE_URL", "DISCOVER_URL", "JWT_SECRET", "INTERNAL_SECRET", "REDIS_URL"], "ws");
const log = createLogger({ service: "ws" }, cfg.LOG_LEVEL);
surviveStrayConnectionErrors(log);

const db = openPostgres(c.DATABASE_URL);
const amqp = createAmqpConnection(c.AMQP_URL, log);
const queue = createAmqpQueue(amqp, { queue: cfg.QUEUE_NAME, log: log.child({ dep: "queue" }) });
const directory = createHttpDirectory({ baseUrl: c.DISCOVER_URL, secret: c.INTERNAL_SECRET });
// Login throttling and token revocation are shared by every gateway through Redis.
const redis = createRedis(c.REDIS_URL, log.child({ dep: "redis" }));
const subscriber = createRedis(c.REDIS_URL, log.child({ dep: "redis-sub" }));
const revocations = createRedisRevocations(redis, subscriber, { prefix: cfg.REDIS_PREFIX });
// on Redis Cluster an allocation is answered only once its master's replica holds it (survives a failover)
const allocator = createRedisAllocator(redis, { prefix: cfg.REDIS_PREFIX, waitReplicas: isCluster(redis) ? 1 : 0 });

const ws = await startWsService({
  port: cfg.PORT ?? 3001,
  hostname: cfg.HOST,
  internalPort: cfg.INTERNAL_PORT,
  reusePort: cfg.REUSE_PORT,
  publicUrl: cfg.PUBLIC_URL,
  db,
  queue,
  directory,
  allocator,
  jwtSecret: c.JWT_SECRET,
  internalSecret: c.INTERNAL_SECRET,
  rate: { perSec: cfg.RATE_LIMIT_PER_SEC, burst: cfg.RATE_LIMIT_BURST },
  throttle: createRedisThrottle(redis, { prefix: cfg.REDIS_PREFIX }),
  revocations,
  accounts: accountSettings(cfg),
  // Web Push only with a configured key pair (every gateway must share it).
  push: pushSettings(cfg, cfg.VAPID_PUBLIC_KEY ? { publicKey: cfg.VAPID_PUBLIC_KEY, privateKey: cfg.VAPID_PRIVATE_KEY! } : undefined),
  editWindowMs: cfg.EDIT_WINDOW_SEC * 1000,
  forwardOver: cfg.FORWARD_OVER,
  extraHealth: async () => ({ redis: isRedisReady(redis) && isRedisReady(subscriber) }),
  log,
});
if (ws.internalUrl !== ws.url) console.log(`ws internal API on ${ws.internalUrl}`);
console.log(`ws listening on ${ws.url}`);

onShutdown(log, async () => {
  await ws.stop();
  await queue.close();
  await revocations.close();
  await Promise.all([closeRedis(redis), closeRedis(subscriber)]);
  await amqp.close();
  await closeRedis(redis);
  await db.close();
});
