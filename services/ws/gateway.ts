import type { WebSocketHandler } from "bun";
import { backoffDelay, sleep } from "../../shared/backoff.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { MAX_FRAME_BYTES, parseClientFrame, type ChatMessage, type DeleteFrame, type EditFrame, type ReadFrame, type ServerFrame, type SendFrame } from "../../shared/protocol.ts";
import type { UserToken } from "./auth.ts";
import type { ConnData, Conn, Connections } from "./connections.ts";
import { newStreamState, type Delivery } from "./delivery.ts";
import { changeRecord, deriveMsgId, SendError, type Pipeline } from "./pipeline.ts";
import { createRateLimiter } from "./rate-limit.ts";
import { closeConn, sendFrame } from "./frames.ts";
import { ReadError, type Receipts } from "./receipts.ts";
import type { PresenceWatch } from "./presence.ts";
import type { Typing } from "./typing.ts";

/** Frames (and their bytes) a connection may have waiting to be handled, and sends awaiting their ack. */
export const MAX_QUEUED_FRAMES = 1000;
export const MAX_QUEUED_BYTES = 1 << 20;
export const MAX_INFLIGHT_SENDS = 1000;
/** `read` frames a connection may have being handled at once. */
export const MAX_INFLIGHT_READS = 20;
/**
 * Recent sends a connection remembers (at least this many, at most twice as many) so that a gap
 * repair does not echo them back to it. The older half goes at once: deleting a Set's oldest entry
 * at every send walks past the tombstones of those deleted before it (0.5 µs a send).
 */
const MAX_OWN_REMEMBERED = 2000;
/** Outbound bytes a connection may have buffered before it is closed as too slow. */
export const BACKPRESSURE_LIMIT = 4 << 20;
const READY_TIMEOUT_MS = 5000;
/**
 * Idle connections hold no promise or set of their own: a settled chain points back at this one
 * promise, and `own` is this empty set until the connection's first send (bench:conns measures
 * the memory an idle connection holds).
 */
const SETTLED: Promise<void> = Promise.resolve();
const NONE_OWN: ReadonlySet<string> = new Set();
export const IDLE_TIMEOUT_S = 10;

/**
 * The WebSocket side of the gateway. Frames of one connection are handled in order (a chain);
 * a send occupies its slot only until it is handed to the pipeline, so acks may overlap, bounded
 * by MAX_INFLIGHT_SENDS. Frames wait until the directory routes the user here and the
 * connection's stream baseline is read; nothing is handled after the socket closed.
 */
export function createGateway(opts: {
  connections: Connections;
  pipeline: Pipeline;
  stream: Delivery;
  presence: PresenceWatch;
  typing: Typing;
  receipts: Receipts;
  log: Logger;
  metrics: Metrics;
  rate: { perSec: number; burst: number };
}) {
  const framesIn = opts.metrics.counter("ws_frames_in_total", "Frames received", ["type"]);
  const badFrames = opts.metrics.counter("ws_bad_frames_total", "Frames answered with bad_request or too_large", ["code"]);
  const connGauge = opts.metrics.gauge("ws_connections", "Open WebSocket connections");
  const limiter = createRateLimiter(opts.rate.perSec, opts.rate.burst);

  /** A send, edit or delete frame as the record the pipeline takes. */
  const recordOf = (user: string, f: SendFrame | EditFrame | DeleteFrame): ChatMessage => {
    if (f.type === "send") {
      const m: ChatMessage = { msgId: deriveMsgId(user, f.id, f), id: f.id, from: user, body: f.body, ts: Date.now() };
      if ("group" in f) m.group = f.group;
      else m.to = f.to;
      return m;
    }
    return changeRecord(user, f.type, f.id, f.msgId, f.type === "edit" ? f.body : "");
  };

  const handleSend = async (ws: Conn, f: SendFrame | EditFrame | DeleteFrame) => {
    const m = recordOf(ws.data.user, f);
    if (ws.data.own === NONE_OWN) ws.data.own = new Set();
    if (ws.data.own.size >= 2 * MAX_OWN_REMEMBERED) ws.data.own = new Set([...ws.data.own].slice(MAX_OWN_REMEMBERED));
    ws.data.own.add(m.msgId);
    try {
      const a = await opts.pipeline.send(m, ws);
      if (ws.data.open) sendFrame(ws, { type: "ack", id: f.id, msgId: m.msgId, ts: a.ts, cursor: a.cursor });
    } catch (err) {
      const e = err instanceof SendError ? err : new SendError("unavailable", "temporarily unavailable; retry");
      if (!(err instanceof SendError)) opts.log.error("send failed", { err });
      if (ws.data.open) sendFrame(ws, { type: "error", id: f.id, code: e.code, message: e.message });
    } finally {
      ws.data.inflight--;
    }
  };

  /** A `read` frame: handled beside the chain (it may wait for storage), in order; at most MAX_INFLIGHT_READS waiting per connection. */
  const handleRead = async (ws: Conn, f: ReadFrame) => {
    try {
      await opts.receipts.read(ws.data.user, f);
    } catch (err) {
      const e = err instanceof ReadError ? err : new ReadError("unavailable", "receipts are unavailable right now; retry");
      if (!(err instanceof ReadError)) opts.log.warn("read receipt failed", { err });
      if (ws.data.open) sendFrame(ws, { type: "error", code: e.code, message: e.message });
    } finally {
      ws.data.reads--;
    }
  };

  /** Resolves once the connection is ready; one timer per connection, not per frame. */
  const whenReady = (ws: Conn) => (ws.data.isReady ? undefined : ws.data.ready);

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
    const id = "id" in frame ? { id: frame.id } : {};
    try {
      await whenReady(ws);
    } catch {
      return sendFrame(ws, { type: "error", ...id, code: "unavailable", message: "this instance cannot register you in the directory right now; retry" });
    }
    if (!ws.data.open) return;
    opts.stream.frame(ws, frame.type);
    switch (frame.type) {
      case "ping":
        return sendFrame(ws, { type: "pong" });
      case "sync":
        return opts.stream.sync(ws, frame.after);
      case "watch":
        return opts.presence.watch(ws, frame.users).catch(() => {
          if (ws.data.open) sendFrame(ws, { type: "error", code: "unavailable", message: "presence is unavailable right now; watch again later" });
        });
      case "typing":
        // Not awaited: a group's membership lookup must not hold up the frames behind it.
        void opts.typing(ws, frame).catch((err) => opts.log.warn("typing failed", { err }));
        return;
      case "read":
        if (ws.data.reads >= MAX_INFLIGHT_READS) return sendFrame(ws, { type: "error", code: "rate_limited", message: "too many read receipts in flight" });
        ws.data.reads++;
        // One after another (in the order sent), beside the chain: a read may wait for storage.
        ws.data.readChain = ws.data.readChain.then(() => handleRead(ws, frame));
        return;
      case "send":
      case "edit":
      case "delete":
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

  /**
   * A frame whose turn came. One async function rather than then/catch/finally links: fewer
   * promises per frame. The last frame of a chain hands it back to the shared settled promise.
   */
  const handleInTurn = async (ws: Conn, data: string) => {
    try {
      if (ws.data.open) await handle(ws, data);
    } catch (err) {
      opts.log.error("frame handling failed", { err });
    } finally {
      ws.data.queued--;
      ws.data.queuedBytes -= data.length;
      if (ws.data.queued === 0) ws.data.chain = SETTLED;
    }
  };

  const websocket: WebSocketHandler<ConnData> = {
    maxPayloadLength: MAX_FRAME_BYTES,
    backpressureLimit: BACKPRESSURE_LIMIT,
    closeOnBackpressureLimit: true,
    // A silently dead client (frozen network) is closed, and shown offline, within about 10 s: Bun
    // pings an idle connection and any frame or pong from the client counts as life.
    idleTimeout: IDLE_TIMEOUT_S,
    sendPings: true,
    open(ws) {
      ws.data.open = true;
      connGauge.inc();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const registered = opts.connections.add(ws).then(async () => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await opts.stream.init(ws);
          } catch (err) {
            if (!ws.data.open) throw err;
            await sleep(backoffDelay(attempt, { capMs: 2000 }));
          }
        }
      });
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("registration timed out")), READY_TIMEOUT_MS);
      });
      ws.data.ready = Promise.race([registered, timeout]).finally(() => clearTimeout(timer));
      ws.data.ready.catch(() => {});
      // A timed-out registration still completes in the background; later frames see it.
      registered.then(
        () => {
          ws.data.isReady = true;
          ws.data.ready = SETTLED;
        },
        (err) => opts.log.warn("connection setup failed", { err }),
      );
    },
    message(ws, data) {
      if (!ws.data.open) return;
      if (typeof data !== "string") {
        sendFrame(ws, { type: "error", code: "bad_request", message: "frames must be JSON text frames" });
        return;
      }
      if (ws.data.queued >= MAX_QUEUED_FRAMES || ws.data.queuedBytes + data.length > MAX_QUEUED_BYTES) {
        sendFrame(ws, { type: "error", code: "rate_limited", message: "too many frames waiting; slow down" });
        return;
      }
      ws.data.queued++;
      ws.data.queuedBytes += data.length;
      ws.data.chain = ws.data.chain.then(() => handleInTurn(ws, data));
    },
    close(ws) {
      ws.data.open = false;
      opts.connections.remove(ws);
      opts.presence.unwatch(ws);
      opts.stream.drop(ws);
      connGauge.dec();
    },
  };

  return {
    websocket,
    /** Upgrade data for a user's verified token. */
    connData(token: Pick<UserToken, "user" | "ver" | "id">): ConnData {
      return {
        user: token.user,
        tokenVer: token.ver,
        tokenId: token.id,
        stream: newStreamState(),
        chain: SETTLED,
        queued: 0,
        queuedBytes: 0,
        inflight: 0,
        reads: 0,
        readChain: SETTLED,
        own: NONE_OWN as Set<string>,
        order: SETTLED,
        ready: SETTLED,
        isReady: false,
        open: false,
        outbox: undefined,
      };
    },
    /** Closes every connection with 1001 so clients reconnect elsewhere. */
    closeAll(reason = "server shutting down") {
      for (const ws of opts.connections.all()) closeConn(ws, 1001, reason);
    },
  };
}
export type Gateway = ReturnType<typeof createGateway>;
