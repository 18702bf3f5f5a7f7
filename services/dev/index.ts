import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { loadConfigOrExit } from "../../shared/config.ts";
import { openPglite } from "../../shared/db/index.ts";
import { latestPosition } from "../../shared/db/messages.ts";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { createLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import { createMemoryQueue } from "../../shared/queue/queue-memory.ts";
import { createMemoryAllocator } from "../../shared/stream/allocator-memory.ts";
import { onShutdown } from "../../shared/shutdown.ts";
import { createBatcher } from "../persist/batcher.ts";
import { createFloorKeeper } from "../persist/floors.ts";
import { createPersistMetrics } from "../persist/metrics.ts";
import { accountSettings } from "../ws/accounts.ts";
import { pushSettings } from "../ws/push-sender.ts";
import { createMemoryRevocations } from "../ws/revocations-memory.ts";
import { startWsService } from "../ws/service.ts";
import { createMemoryThrottle } from "../ws/throttle-memory.ts";
import { devSecrets } from "./secrets.ts";

/**
 * `bun run dev`: the whole system in one process on embedded roles — the in-memory directory,
 * the in-process queue and PGlite in DATA_DIR — wired exactly as the distributed services are.
 */
const cfg = loadConfigOrExit();
const log = createLogger({ service: "dev" }, cfg.LOG_LEVEL);
mkdirSync(cfg.DATA_DIR, { recursive: true });
const secrets = devSecrets(cfg.DATA_DIR, {
  JWT_SECRET: cfg.JWT_SECRET,
  INTERNAL_SECRET: cfg.INTERNAL_SECRET,
  vapid: cfg.VAPID_PUBLIC_KEY ? { publicKey: cfg.VAPID_PUBLIC_KEY, privateKey: cfg.VAPID_PRIVATE_KEY! } : undefined,
});

const db = await openPglite(join(cfg.DATA_DIR, "pglite"));
const queue = createMemoryQueue();
const directory = createMemoryDirectory();
const sweeper = setInterval(() => void directory.sweepDeadInstances(), 3000);
// Positions continue from what PGlite holds: the in-process queue dies with the process, so after
// a restart nothing allocated is unwritten and no new epoch is needed.
const allocator = createMemoryAllocator({ seed: (user) => latestPosition(db.db, user) });
const persistMetrics = createPersistMetrics(createMetrics("persist"));
const floors = createFloorKeeper({ allocator, database: db, log: log.child({ part: "persist" }), metrics: persistMetrics });
const batcher = createBatcher({
  database: db,
  allocator,
  onWritten: floors.written,
  maxRows: cfg.BATCH_SIZE,
  maxWaitMs: cfg.BATCH_MS,
  // PGlite is one connection: batches would only queue behind each other on it
  concurrency: 1,
  log: log.child({ part: "persist" }),
  metrics: persistMetrics,
});
const consumer = await queue.consume(batcher, { prefetch: cfg.PREFETCH });

const ws = await startWsService({
  port: cfg.PORT ?? 3000,
  publicUrl: cfg.PUBLIC_URL,
  db,
  queue,
  directory,
  allocator,
  // The embedded persist writes in this process: /health reports it stuck (e.g. PGlite failing).
  extraHealth: async () => ({ persist: batcher.healthy() }),
  jwtSecret: secrets.JWT_SECRET,
  internalSecret: secrets.INTERNAL_SECRET,
  rate: { perSec: cfg.RATE_LIMIT_PER_SEC, burst: cfg.RATE_LIMIT_BURST },
  throttle: createMemoryThrottle(),
  revocations: createMemoryRevocations(),
  accounts: accountSettings(cfg),
  push: pushSettings(cfg, secrets.VAPID),
  editWindowMs: cfg.EDIT_WINDOW_SEC * 1000,
  log,
});

console.log(`dev listening on ${ws.url}
  chat client:  ${ws.url}/client/
  websocket:    ${ws.url.replace(/^http/, "ws")}/ws?token=<jwt>
  data:         ${join(cfg.DATA_DIR, "pglite")} (PGlite; history survives restarts)
  JWT_SECRET:   ${secrets.generated.JWT_SECRET ? `${secrets.JWT_SECRET} (generated for development, kept in ${secrets.file})` : "from the environment"}
  web push:     VAPID public key ${secrets.VAPID.publicKey} (${secrets.generated.VAPID ? `generated, kept in ${secrets.file}` : "from the environment"})
  embedded:     in-memory directory, queue, login throttle and token revocations, PGlite — no Redis, RabbitMQ or PostgreSQL needed`);

onShutdown(log, async () => {
  clearInterval(sweeper);
  await ws.stop();
  await consumer.stop();
  await batcher.drain(5000);
  floors.stop();
  await db.close();
});
