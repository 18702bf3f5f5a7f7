import type { Server, WebSocketHandler } from "bun";
import { sleep } from "../../shared/backoff.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { MAX_FRAME_BYTES, parseClientFrame, type ChatMessage, type ServerFrame, type SendFrame } from "../../shared/protocol.ts";
import type { ConnData, Conn, Connections } from "./connections.ts";
import { deriveMsgId, SendError, type Pipeline } from "./pipeline.ts";
import { createRateLimiter } from "./rate-limit.ts";
import { sendFrame } from "./frames.ts";
import type { PresenceWatch } from "./presence.ts";

/** Frames a connection may have waiting to be handled, and sends awaiting their ack. */
export const MAX_QUEUED_FRAMES = 1000;
export const MAX_INFLIGHT_SENDS = 1000;
/** Outbound bytes a connection may have buffered before it is closed as too slow. */
export const BACKPRESSURE_LIMIT = 4 << 20;
const READY_TIMEOUT_MS = 5000;


/**
 * The WebSocket side of the gateway. Frames of one connection are handled in order (a chain);
 * a send occupies its slot only until it is handed to the pipeline, so acks may overlap, bounded
 * by MAX_INFLIGHT_SENDS. Nothing is handled before the directory routes the user here.
 */
export function createGateway(opts: {
  connections: Connections;
  pipeline: Pipeline;
  sync: (ws: Conn, after: number) => Promise<void>;
  presence: PresenceWatch;
  log: Logger;
  metrics: Metrics;
  rate: { perSec: number; burst: number };
}) {
  const framesIn = opts.metrics.counter("ws_frames_in_total", "Frames received", ["type"]);
  const badFrames = opts.metrics.counter("ws_bad_frames_total", "Frames answered with bad_request or too_large", ["code"]);
  const connGauge = opts.metrics.gauge("ws_connections", "Open WebSocket connections");
  const limiter = createRateLimiter(opts.rate.perSec, opts.rate.burst);
  let nextConnId = 1;

  const handleSend = async (ws: Conn, f: SendFrame) => {
    const m: ChatMessage = { msgId: deriveMsgId(ws.data.user, f.id), id: f.id, from: ws.data.user, body: f.body, ts: Date.now() };
    if ("group" in f) m.group = f.group;
    else m.to = f.to;
    try {
      const ts = await opts.pipeline.send(m, ws);
      if (ws.data.open) sendFrame(ws, { type: "ack", id: f.id, msgId: m.msgId, ts });
    } catch (err) {
      const e = err instanceof SendError ? err : new SendError("unavailable", "temporarily unavailable; retry");
      if (!(err instanceof SendError)) opts.log.error("send failed", { err });
      if (ws.data.open) sendFrame(ws, { type: "error", id: f.id, code: e.code, message: e.message });
    } finally {
      ws.data.inflight--;
    }
  };

  const handle = async (ws: Conn, text: string) => {
    const parsed = parseClientFrame(text);
    if (!parsed.ok) {
      badFrames.inc({ code: parsed.code });
      const f: ServerFrame = { type: "error", code: parsed.code, message: parsed.message };
      if (parsed.id !== undefined) f.id = parsed.id;
      return sendFrame(ws, f);
    }
    const frame = parsed.frame;
    framesIn.inc({ type: frame.type });
    switch (frame.type) {
      case "ping":
        return sendFrame(ws, { type: "pong" });
      case "sync":
        return opts.sync(ws, frame.after === undefined ? 0 : Number(frame.after));
      case "watch":
        return opts.presence.watch(ws, frame.users).catch(() => {
          sendFrame(ws, { type: "error", code: "unavailable", message: "presence is unavailable right now; watch again later" });
        });
      case "send":
        if (!limiter.take(ws.data.user)) {
          return sendFrame(ws, { type: "error", id: frame.id, code: "rate_limited", message: "too many messages; slow down" });
        }
        if (ws.data.inflight >= MAX_INFLIGHT_SENDS) {
          return sendFrame(ws, { type: "error", id: frame.id, code: "rate_limited", message: "too many unacknowledged messages" });
        }
        ws.data.inflight++;
        void handleSend(ws, frame);
        return;
    }
  };

  const ready = async (ws: Conn) => {
    const ok = await Promise.race([ws.data.ready.then(() => true), sleep(READY_TIMEOUT_MS).then(() => false)]);
    if (!ok) throw new SendError("unavailable", "the directory is unavailable; retry");
  };

  const websocket: WebSocketHandler<ConnData> = {
    maxPayloadLength: MAX_FRAME_BYTES,
    backpressureLimit: BACKPRESSURE_LIMIT,
    closeOnBackpressureLimit: true,
    idleTimeout: 120,
    sendPings: true,
    open(ws) {
      ws.data.open = true;
      ws.data.ready = opts.connections.add(ws);
      connGauge.inc();
    },
    message(ws, data) {
      if (typeof data !== "string") {
        sendFrame(ws, { type: "error", code: "bad_request", message: "frames must be JSON text frames" });
        return;
      }
      if (ws.data.queued >= MAX_QUEUED_FRAMES) {
        sendFrame(ws, { type: "error", code: "rate_limited", message: "too many frames waiting; slow down" });
        return;
      }
      ws.data.queued++;
      ws.data.chain = ws.data.chain
        .then(() => ready(ws))
        .then(() => handle(ws, data))
        .catch((err) => {
          if (err instanceof SendError && ws.data.open) sendFrame(ws, { type: "error", code: err.code, message: err.message });
          else opts.log.error("frame handling failed", { err });
        })
        .finally(() => {
          ws.data.queued--;
        });
    },
    close(ws) {
      ws.data.open = false;
      opts.connections.remove(ws);
      opts.presence.unwatch(ws);
      connGauge.dec();
    },
  };

  return {
    websocket,
    /** Upgrade data for an authenticated user. */
    connData(user: string): ConnData {
      return { user, connId: nextConnId++, cursor: 0, held: null, chain: Promise.resolve(), queued: 0, inflight: 0, ready: Promise.resolve(), open: false };
    },
    /** Closes every connection with 1001 so clients reconnect elsewhere. */
    closeAll(reason = "server shutting down") {
      for (const ws of opts.connections.all()) ws.close(1001, reason);
    },
    upgrade(server: Server<ConnData>, req: Request, user: string): boolean {
      return server.upgrade(req, { data: this.connData(user) });
    },
  };
}
export type Gateway = ReturnType<typeof createGateway>;
