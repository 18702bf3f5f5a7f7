import { localUrl } from "../../shared/config.ts";
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import { MAX_FRAME_BYTES } from "../../shared/protocol.ts";
import type { DbHandle } from "../../shared/db/index.ts";
import { INSTANCE_TTL_MS, type Directory } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import type { EventContext } from "../../shared/events/kind.ts";
import { kindOf } from "../../shared/events/registry.ts";
import { SendError, type ChatMessage } from "../../shared/protocol.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import { createAccounts, OWASP_MIN_COST, weakPasswordCost, type AccountSettings } from "./accounts.ts";
import { createApp } from "./app.ts";
import { bearer, verifyUserToken } from "./auth.ts";
import { createConnections, type ConnData } from "./connections.ts";
import { createDelivery } from "./delivery.ts";
import { createGateway, IDLE_TIMEOUT_S } from "./gateway.ts";
import { createGroups } from "./groups.ts";
import { createPipeline } from "./pipeline.ts";
import { createPresenceWatch } from "./presence.ts";
import { reusePortAdvice } from "./reuse-port.ts";
import { createPushNotifier } from "./push.ts";
import { createPushApi } from "./push-api.ts";
import type { PushSender } from "./push-sender.ts";
import { dropEndpoint, subscriptionsOf } from "./push-subscriptions.ts";
import type { RevocationEvent, Revocations } from "./revocations.ts";
import { createReceipts } from "./receipts.ts";
import { createLinkReceiver, isLinkData, type LinkData } from "./links.ts";
import { createRouter } from "./router.ts";
import { groupNames, membersOf } from "./store.ts";
import { closeConn } from "./frames.ts";
import type { Throttle } from "./throttle.ts";
import { createTokenGate } from "./token-gate.ts";
import { createTyping } from "./typing.ts";

export const DEFAULT_EDIT_WINDOW_MS = 48 * 3600 * 1000;

/** Close code for a WebSocket whose token was revoked (logout, logout-all, password change). */
export const CLOSE_TOKEN_REVOKED = 4401;

export interface WsDeps {
  port: number;
  hostname?: string;
  /**
   * A second listener for the internal API (`/internal/*`, and this process's `/health` and
   * `/metrics`); the client port then answers 404 under `/internal/`. Absent: one port for all.
   */
  internalPort?: number;
  /** Share `port` with other processes (SO_REUSEPORT); only with `internalPort` (a forward must reach this process). */
  reusePort?: boolean;
  /** How other instances reach this one (its internal listener when there is one); default http://127.0.0.1:<bound port>. */
  publicUrl?: string;
  db: DbHandle;
  queue: MessageQueue;
  directory: Directory;
  allocator: StreamAllocator;
  jwtSecret: string;
  internalSecret: string;
  rate: { perSec: number; burst: number };
  /** Login/register throttling, shared by every instance. */
  throttle: Throttle;
  /** Token versions and denials, shared by every instance. */
  revocations: Revocations;
  accounts: AccountSettings;
  /** Web Push to offline users; absent: off (the push routes answer 404). */
  push?: {
    /** The VAPID public key browsers subscribe with (base64url). */
    publicKey: string;
    sender: PushSender;
    /** A conversation's pushes to one offline user within this window become one. */
    delayMs: number;
    /** Admit http: endpoints (tests). */
    allowHttp: boolean;
  };
  /** How long after a message its sender may edit or delete it (EDIT_WINDOW_SEC; default 48 h). */
  editWindowMs?: number;
  /** How forwards to other instances travel (FORWARD_OVER; default "link", docs/architecture.md). */
  forwardOver?: "link" | "http";
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

  // Receipts: deliveries are noted where frames are handed out, written and announced in batches.
  const receipts = createReceipts({
    db: () => deps.db.db,
    awaitWritten: (u) => stream.awaitWritten(u),
    publish: (e) => pipeline.emit(e).then(() => {}),
    log,
    metrics,
  });
  const connections = createConnections({ directory: deps.directory, self, log, heartbeatMs: INSTANCE_TTL_MS / 3, ttlMs: INSTANCE_TTL_MS });
  const stream = createDelivery({
    db: () => deps.db.db,
    allocator: deps.allocator,
    log,
    metrics,
    connectionsOf: (u) => connections.of(u),
    localUsers: () => connections.localUsers(),
    onHanded: receipts.delivered,
  });
  // Pushes go out from the gateway that accepted the message: it alone routes it, and its directory
  // lookup already tells which recipients are offline (docs/architecture.md, "Web Push").
  const push =
    deps.push &&
    createPushNotifier({
      sender: deps.push.sender,
      subscriptionsOf: (users) => subscriptionsOf(deps.db.db, users),
      dropEndpoint: (endpoint) => dropEndpoint(deps.db.db, endpoint),
      online: async (users) => {
        const where = await deps.directory.lookup(users);
        return new Set(users.filter((u) => (where[u]?.length ?? 0) > 0 || connections.of(u)));
      },
      groupNames: (ids) => groupNames(deps.db.db, ids),
      delayMs: deps.push.delayMs,
      log: log.child({ part: "push" }),
      metrics,
    });
  const router = createRouter({ connections, stream, directory: deps.directory, self, internalSecret: deps.internalSecret, log, metrics, offline: push?.offline, onHanded: receipts.delivered, forwardOver: deps.forwardOver });
  const groupMembers = (ids: string[]) => membersOf(deps.db.db, ids);
  const eventContext: EventContext = {
    get db() {
      return deps.db.db;
    },
    groupMembers,
    awaitWritten: (user) => stream.awaitWritten(user),
    editWindowMs: deps.editWindowMs ?? DEFAULT_EDIT_WINDOW_MS,
    now: () => Date.now(),
  };
  const acceptEvent = async (e: ChatMessage) => {
    const kind = kindOf(e.kind!);
    if (!kind) throw new SendError("bad_request", `unknown event kind ${e.kind}`);
    return kind.accept(e, eventContext).catch((err) => {
      if (err instanceof SendError) throw err;
      log.warn("event validation failed", { err, kind: e.kind });
      throw new SendError("unavailable", "storage is unavailable right now; retry");
    });
  };
  const pipeline = createPipeline({ queue: deps.queue, allocator: deps.allocator, router, groupMembers, acceptEvent, log, metrics });
  const presence = createPresenceWatch({ directory: deps.directory, log, intervalMs: 2000 });
  const typing = createTyping({ router, groupMembers: (ids) => membersOf(deps.db.db, ids), metrics });
  const gateway = createGateway({
    connections,
    pipeline,
    stream,
    presence,
    typing,
    receipts,
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
  const gate = createTokenGate({ revocations: deps.revocations, cacheMs: deps.accounts.revocationCacheMs });
  const accounts = createAccounts({
    db: deps.db.db,
    jwtSecret: deps.jwtSecret,
    throttle: deps.throttle,
    revocations: deps.revocations,
    gate,
    ...deps.accounts,
  });
  const groups = createGroups({ db: deps.db.db, pipeline, router, stream, log });
  const app = createApp({
    groups,
    db: deps.db.db,
    directory: deps.directory,
    router,
    stream,
    pipeline,
    jwtSecret: deps.jwtSecret,
    internalSecret: deps.internalSecret,
    accounts,
    push: createPushApi({ db: deps.db.db, publicKey: deps.push?.publicKey ?? null, allowHttp: deps.push?.allowHttp ?? false }),
    corsOrigins: deps.accounts.corsOrigins,
    health,
    metrics,
    log,
  });

  // Revocations heard from any instance close the affected sockets here (each connection keeps
  // its token's version and id).
  const revoked = (d: ConnData, e: RevocationEvent) => ("version" in e ? d.tokenVer < e.version : d.tokenId === e.tokenId);
  const stopClosing = await deps.revocations.subscribe((e) => {
    for (const ws of connections.of(e.user) ?? []) if (revoked(ws.data, e)) closeConn(ws, CLOSE_TOKEN_REVOKED, "token revoked");
  });
  await gate.start();
  // Sockets on the client port are clients, or links from peers (services/ws/links.ts) when there
  // is no separate internal port.
  const linkReceiver = createLinkReceiver({ deliver: (f) => router.deliverForward(f, "link"), log });
  type SocketData = ConnData | LinkData;
  const asClient = (ws: ServerWebSocket<SocketData>) => ws as ServerWebSocket<ConnData>;
  const websocket: WebSocketHandler<SocketData> = {
    ...(gateway.websocket as unknown as WebSocketHandler<SocketData>),
    message(ws, m) {
      if (isLinkData(ws.data)) return linkReceiver.message(ws as ServerWebSocket<LinkData>, m);
      return gateway.websocket.message!(asClient(ws), m);
    },
    close(ws, code, reason) {
      if (isLinkData(ws.data)) return;
      gateway.websocket.close?.(asClient(ws), code, reason);
    },
    open(ws) {
      if (isLinkData(ws.data)) return;
      const client = asClient(ws);
      gateway.websocket.open!(client);
      // A revocation that arrived between the upgrade's check and now.
      const d = client.data;
      if (gate.knownRevoked({ user: d.user, ver: d.tokenVer, id: d.tokenId })) closeConn(client, CLOSE_TOKEN_REVOKED, "token revoked");
    },
  };

  if (deps.reusePort && deps.internalPort === undefined) throw new Error("reusePort needs internalPort: a forward addressed to this process could reach another one");
  const internalPath = (p: string) => p.startsWith("/internal/");
  const server: Server<SocketData> = Bun.serve<SocketData>({
    port: deps.port,
    hostname: deps.hostname ?? "127.0.0.1",
    reusePort: deps.reusePort ?? false,
    async fetch(req, srv) {
      const url = new URL(req.url);
      if (url.pathname === "/ws") {
        const t = await verifyUserToken(url.searchParams.get("token") ?? bearer(req.headers.get("authorization")), deps.jwtSecret);
        const ok = t !== null && (await gate.valid(t).catch(() => null));
        if (ok === null) return Response.json({ error: "unavailable" }, { status: 503 });
        if (!ok) return Response.json({ error: "a valid token is required" }, { status: 401 });
        if (srv.upgrade(req, { data: gateway.connData(t) })) return undefined;
        return Response.json({ error: "expected a WebSocket upgrade" }, { status: 426 });
      }
      if (internal && internalPath(url.pathname)) return Response.json({ error: "not found" }, { status: 404 });
      return app.fetch(req, srv);
    },
    websocket,
  });
  // The internal listener: never shared, so an address naming it names this process.
  const internalOnly = new Set(["/health", "/metrics"]);
  const internal =
    deps.internalPort === undefined
      ? null
      : Bun.serve<LinkData>({
          port: deps.internalPort,
          hostname: deps.hostname ?? "127.0.0.1",
          fetch(req, srv) {
            const path = new URL(req.url).pathname;
            if (internalPath(path) || internalOnly.has(path)) return app.fetch(req, srv);
            return Response.json({ error: "not found" }, { status: 404 });
          },
          websocket: {
            maxPayloadLength: MAX_FRAME_BYTES,
            idleTimeout: IDLE_TIMEOUT_S,
            sendPings: true,
            message: (ws: ServerWebSocket<LinkData>, m) => linkReceiver.message(ws, m),
          },
        });
  const url = localUrl(server.hostname ?? "", server.port!);
  const internalUrl = internal ? localUrl(internal.hostname ?? "", internal.port!) : url;
  self.url = deps.publicUrl ?? internalUrl;
  await connections.start();
  log.info("ws instance started", { url, internalUrl, publicUrl: self.url, instanceId, reusePort: deps.reusePort ?? false });
  const advice = deps.reusePort ? reusePortAdvice() : null;
  if (advice) log.warn(advice);
  if (weakPasswordCost(deps.accounts.passwordCost)) {
    log.warn("password hashes are cheaper than OWASP's minimum (PASSWORD_MEMORY_KIB 19456, PASSWORD_TIME_COST 2): fine for tests, not for users", { ...deps.accounts.passwordCost, minimum: OWASP_MIN_COST });
  }

  let stopping: Promise<void> | undefined;
  return {
    url,
    /** Where this process's internal API is (the same as `url` without a separate listener). */
    internalUrl,
    instanceId,
    server,
    /** Graceful: stop accepting, finish in-flight sends, close sockets (1001), leave the directory. */
    stop(): Promise<void> {
      stopping ??= (async () => {
        server.stop(false);
        internal?.stop(false);
        presence.stop();
        stopClosing();
        gate.stop();
        await receipts.stop(); // announces what was noted while the pipeline still takes events
        await pipeline.drain(5000);
        await push?.stop();
        stream.stop();
        router.stop();
        gateway.closeAll();
        await connections.stop();
        server.stop(true);
        internal?.stop(true);
      })();
      return stopping;
    },
  };
}
export type WsService = Awaited<ReturnType<typeof startWsService>>;
