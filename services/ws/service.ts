import { localUrl } from "../../shared/config.ts";
import type { Server } from "bun";
import type { DbHandle } from "../../shared/db/index.ts";
import { INSTANCE_TTL_MS, type Directory } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import { createApp } from "./app.ts";
import { bearer, verifyUserToken } from "./auth.ts";
import { createConnections, type ConnData } from "./connections.ts";
import { createDelivery } from "./delivery.ts";
import { createGateway } from "./gateway.ts";
import { createPipeline } from "./pipeline.ts";
import { createPresenceWatch } from "./presence.ts";
import { createRouter } from "./router.ts";
import { membersOf } from "./store.ts";

export interface WsDeps {
  port: number;
  hostname?: string;
  /** How other instances reach this one; default http://127.0.0.1:<bound port>. */
  publicUrl?: string;
  db: DbHandle;
  queue: MessageQueue;
  directory: Directory;
  allocator: StreamAllocator;
  jwtSecret: string;
  internalSecret: string;
  rate: { perSec: number; burst: number };
  log: Logger;
  /** Extra routes mounted before the gateway's own (dev mode mounts discover and persist health). */
  extraHealth?: () => Promise<Record<string, boolean>>;
}

/** Wires one gateway instance and starts listening. The composition root calls this with real or embedded roles. */
export async function startWsService(deps: WsDeps) {
  const { log } = deps;
  const metrics = createMetrics("ws");
  const instanceId = crypto.randomUUID();
  const self = { id: instanceId, url: deps.publicUrl ?? "" };

  const connections = createConnections({ directory: deps.directory, self, log, heartbeatMs: INSTANCE_TTL_MS / 3, ttlMs: INSTANCE_TTL_MS });
  const stream = createDelivery({
    db: () => deps.db.db,
    allocator: deps.allocator,
    log,
    metrics,
    connectionsOf: (u) => connections.of(u),
    localUsers: () => connections.localUsers(),
  });
  const router = createRouter({ connections, stream, directory: deps.directory, self, internalSecret: deps.internalSecret, log, metrics });
  const pipeline = createPipeline({
    queue: deps.queue,
    allocator: deps.allocator,
    router,
    groupMembers: (ids) => membersOf(deps.db.db, ids),
    log,
    metrics,
  });
  const presence = createPresenceWatch({ directory: deps.directory, log, intervalMs: 2000 });
  const gateway = createGateway({
    connections,
    pipeline,
    stream,
    presence,
    log,
    metrics,
    rate: deps.rate,
  });
  const health = async () => ({
    queue: deps.queue.ready(),
    allocator: deps.allocator.ready(),
    directory: connections.healthy(),
    database: await deps.db.ping(),
    ...(deps.extraHealth ? await deps.extraHealth() : {}),
  });
  const app = createApp({ db: deps.db.db, directory: deps.directory, router, stream, jwtSecret: deps.jwtSecret, internalSecret: deps.internalSecret, health, metrics, log });

  const server: Server<ConnData> = Bun.serve<ConnData>({
    port: deps.port,
    hostname: deps.hostname ?? "127.0.0.1",
    async fetch(req, srv) {
      const url = new URL(req.url);
      if (url.pathname === "/ws") {
        const user = await verifyUserToken(url.searchParams.get("token") ?? bearer(req.headers.get("authorization")), deps.jwtSecret);
        if (!user) return Response.json({ error: "a valid token is required" }, { status: 401 });
        if (srv.upgrade(req, { data: gateway.connData(user) })) return undefined;
        return Response.json({ error: "expected a WebSocket upgrade" }, { status: 426 });
      }
      return app.fetch(req, srv);
    },
    websocket: gateway.websocket,
  });
  const url = localUrl(server.hostname ?? "", server.port!);
  self.url = deps.publicUrl ?? url;
  await connections.start();
  log.info("ws instance started", { url, publicUrl: self.url, instanceId });

  let stopping: Promise<void> | undefined;
  return {
    url,
    instanceId,
    server,
    /** Graceful: stop accepting, finish in-flight sends, close sockets (1001), leave the directory. */
    stop(): Promise<void> {
      stopping ??= (async () => {
        server.stop(false);
        presence.stop();
        await pipeline.drain(5000);
        stream.stop();
        router.stop();
        gateway.closeAll();
        await connections.stop();
        server.stop(true);
      })();
      return stopping;
    },
  };
}
export type WsService = Awaited<ReturnType<typeof startWsService>>;
