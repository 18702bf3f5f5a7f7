import { backoffDelay, sleep } from "../../shared/backoff.ts";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { ChatMessage, ServerFrame, TypingEvent } from "../../shared/protocol.ts";
import { formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn, Connections } from "./connections.ts";
import { frameHead, type Delivery as StreamDelivery } from "./delivery.ts";
import { sendText } from "./frames.ts";
import { createPeerLinks, forwardBodies, LINK_FRAME_CHARS, type Forward as ForwardBatch, type ForwardBody } from "./links.ts";

/** A forwarded delivery: one message and, for each user the receiving instance holds, the position in their stream ("epoch.pos"). */
export interface Delivery {
  message: ChatMessage;
  positions: Record<string, string>;
}

/** An ephemeral frame (typing) for every connection of `users`: no position, never stored, best effort. */
export interface Ephemeral {
  users: string[];
  frame: TypingEvent;
}
type Forward = Delivery | Ephemeral;
const isEphemeral = (f: Forward): f is Ephemeral => "frame" in f;

/** Deliveries one peer may have waiting; past it new ones are dropped (the peer's gap repair fills them). */
export const MAX_FORWARD_BACKLOG = 20_000;
const FORWARD_ATTEMPTS = 3;
/**
 * Deliveries per forward request at most. One request per peer is in flight (forwards stay in
 * order), so this caps a peer's forward rate at FORWARD_BATCH per round trip: at 500 it was the
 * bottleneck at N=1000 (docs/benchmarks.md: 11.8–12.1k → 15.0–15.1k msg/s at 2,000).
 */
export const FORWARD_BATCH = 2000;
/** How long a cached location is used while the directory's change feed is live (a safety net: the feed reports every change but a lapsed instance's). */
export const LOCATION_CACHE_MS = 5000;
const LOCATION_CACHE_MAX = 200_000;
const FORWARD_TIMEOUT_MS = 2000;

/**
 * Live delivery of allocated messages: to local connections at once, and to other instances with
 * one HTTP request per instance per tick. A forward that fails is not retried for long: the
 * receiving instance notices the gap in the recipient's stream and fills it from storage.
 */
export function createRouter(opts: {
  connections: Connections;
  stream: StreamDelivery;
  directory: Directory;
  self: InstanceInfo;
  internalSecret: string;
  log: Logger;
  metrics: Metrics;
  fetch?: typeof fetch;
  maxBacklog?: number;
  /** Told of each routed message's recipients (not its sender) with no connection on any instance. */
  offline?: (m: ChatMessage, users: string[]) => void;
  /** A message was offered to a local connection of `user` (delivery receipts; must be cheap). */
  onHanded?: (user: string, m: ChatMessage) => void;
  /**
   * How forwards travel: "link" (default), a WebSocket kept open to each peer, falling back to
   * HTTP for a peer it cannot open one to; "http", one POST per forward.
   */
  forwardOver?: "link" | "http";
  /** For tests: how a link is opened. */
  connectLink?: (url: string, headers: Record<string, string>) => WebSocket;
}) {
  const doFetch = opts.fetch ?? fetch;
  const maxBacklog = opts.maxBacklog ?? MAX_FORWARD_BACKLOG;
  const forwarded = opts.metrics.counter("ws_forwarded_messages_total", "Messages forwarded to other instances");
  const forwardFailed = opts.metrics.counter("ws_forward_failures_total", "Forward requests given up after retries");
  const forwardDropped = opts.metrics.counter("ws_forward_dropped_total", "Deliveries dropped because a peer's backlog was full");
  const received = opts.metrics.counter("ws_forwards_received_total", "Deliveries other instances forwarded here, by how they came", ["over"]);
  const notThere = opts.metrics.counter("ws_forward_not_there_total", "Users another instance said it does not hold");

  const cacheHits = opts.metrics.counter("ws_location_cache_hits_total", "Users located from the cache fed by the directory's change feed");
  const cacheMisses = opts.metrics.counter("ws_location_cache_misses_total", "Users looked up in the directory");

  // Locations: a cache of lookups, trusted only while the directory's change feed is live. A
  // reported change drops the user's entry; a lookup's answer is cached only for users no change
  // was reported for while it was in flight (else it may predate the change). A stale entry costs
  // latency, not messages: the recipient's own gateway repairs the gap (docs/delivery.md).
  const cache = new Map<string, { at: number; where: InstanceInfo[] }>();
  const inflight = new Set<Set<string>>();
  const EVERYONE = "\u0000"; // not a user id: marks a lookup that a reset overtook
  const feed = opts.directory.watch((users) => {
    if (users === null) {
      cache.clear();
      for (const f of inflight) f.add(EVERYONE);
      return;
    }
    for (const u of users) cache.delete(u);
    for (const f of inflight) for (const u of users) f.add(u);
  });
  const lookups = createTickBatcher<string[], Record<string, InstanceInfo[]>>(async (items) => {
    const all = [...new Set(items.flat())];
    const changed = new Set<string>();
    inflight.add(changed);
    let found: Record<string, InstanceInfo[]>;
    try {
      found = await opts.directory.lookup(all);
    } finally {
      inflight.delete(changed);
    }
    if (feed.live() && !changed.has(EVERYONE)) {
      const at = Date.now();
      for (const u of all) {
        if (changed.has(u)) continue;
        cache.delete(u);
        cache.set(u, { at, where: found[u] ?? [] });
      }
      while (cache.size > LOCATION_CACHE_MAX) cache.delete(cache.keys().next().value!);
    }
    return items.map(() => found);
  }, { maxInFlight: 1 });

  const links =
    (opts.forwardOver ?? "link") === "link"
      ? createPeerLinks({
          secret: opts.internalSecret,
          log: opts.log,
          connect: opts.connectLink,
          onReply: (url, r) => {
            if ("missing" in r) notThere.inc(r.missing);
            else opts.log.error("forward refused by peer", { url, error: r.error });
          },
          onSent: (_url, n) => forwarded.inc(n),
          onUnsent: (url, bodies) => void Promise.all(bodies.map((b) => post(url, "/internal/deliver", b))),
          onDropped: (_url, bodies) => forwardDropped.inc(bodies.reduce((n, b) => n + b.n, 0)),
        })
      : undefined;

  const peers = new Map<string, { batcher: ReturnType<typeof createTickBatcher<Forward, void>>; backlog: number; lastUsed: number }>();
  const peerFor = (inst: InstanceInfo) => {
    let p = peers.get(inst.url);
    if (!p) {
      const batcher = createTickBatcher<Forward, void>(async (items) => {
        const deliveries = items.filter((f): f is Delivery => !isEphemeral(f));
        const ephemeral = items.filter(isEphemeral);
        // Peers that predate ephemeral frames ignore the key they do not know.
        if (links) {
          const { bodies, tooLarge } = forwardBodies(deliveries, ephemeral, LINK_FRAME_CHARS);
          if (links.send(inst.url, bodies)) {
            if (tooLarge.deliveries.length + tooLarge.ephemeral.length > 0) await post(inst.url, "/internal/deliver", forwardBodies(tooLarge.deliveries, tooLarge.ephemeral).bodies[0]!);
            return items.map(() => undefined);
          }
        }
        await post(inst.url, "/internal/deliver", forwardBodies(deliveries, ephemeral).bodies[0]!);
        return items.map(() => undefined);
      }, { maxItems: FORWARD_BATCH, maxInFlight: 1 });
      peers.set(inst.url, (p = { batcher, backlog: 0, lastUsed: Date.now() }));
    }
    p.lastUsed = Date.now();
    return p;
  };
  // Forget idle peers (instances come and go).
  const sweep = setInterval(() => {
    for (const [url, p] of peers) if (p.backlog === 0 && Date.now() - p.lastUsed > 60_000) peers.delete(url);
  }, 30_000);

  /** POSTs `body` (carrying `n` deliveries, for the metric) to a peer, retrying a few times. */
  async function post(url: string, path: string, { body, n }: ForwardBody) {
    for (let attempt = 0; attempt < FORWARD_ATTEMPTS; attempt++) {
      try {
        const res = await doFetch(`${url}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${opts.internalSecret}` },
          body,
          signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
        });
        if (res.ok) {
          const { missing } = (await res.json()) as { missing: number };
          forwarded.inc(n);
          if (missing) notThere.inc(missing);
          return;
        }
        if (res.status < 500) {
          opts.log.error("forward rejected", { url, status: res.status });
          break;
        }
      } catch (err) {
        if (attempt === FORWARD_ATTEMPTS - 1) opts.log.warn("forward failed", { url, err });
      }
      await sleep(backoffDelay(attempt, { baseMs: 50, capMs: 500 }));
    }
    forwardFailed.inc();
  }

  /**
   * Offers a message to this instance's connections of each user at that user's position (but not
   * to `except`, which gets an ack). Returns how many users had no connection here. The frame is
   * built only when some connection gets it (not for a sender whose recipients are all elsewhere).
   */
  function deliverLocal(m: ChatMessage, positions: Record<string, Position>, except?: Conn): number {
    let head: string | undefined;
    let missing = 0;
    for (const u in positions) {
      const conns = opts.connections.of(u);
      if (!conns) {
        missing++;
        continue;
      }
      const position = positions[u]!;
      for (const ws of conns) opts.stream.offer(ws, { position, head: ws === except ? null : (head ??= frameHead(m)) });
      opts.onHanded?.(u, m);
    }
    return missing;
  }

  /**
   * Where `users` are connected: one batched directory lookup per tick. The send path starts it
   * while the message is being confirmed and positioned; a connection that registers meanwhile is
   * missed by the forward and served by its gateway's gap repair.
   */
  function locate(users: string[]): Promise<Record<string, InstanceInfo[]>> {
    let p: Promise<Record<string, InstanceInfo[]>>;
    if (!feed.live()) {
      cacheMisses.inc(users.length);
      p = lookups.add(users);
    } else {
      const now = Date.now();
      const out: Record<string, InstanceInfo[]> = {};
      let missing: string[] | undefined;
      for (const u of users) {
        const c = cache.get(u);
        if (c && now - c.at < LOCATION_CACHE_MS) out[u] = c.where;
        else (missing ??= []).push(u);
      }
      cacheHits.inc(users.length - (missing?.length ?? 0));
      if (!missing) return Promise.resolve(out);
      cacheMisses.inc(missing.length);
      p = lookups.add(missing).then((found) => {
        for (const u of missing) out[u] = found[u] ?? [];
        return out;
      });
    }
    p.catch(() => {});
    return p;
  }

  /** Routes an allocated message to every connection of its users, here and elsewhere. Never rejects. */
  async function route(m: ChatMessage, positions: Record<string, Position>, sender?: Conn, located?: Promise<Record<string, InstanceInfo[]>>): Promise<void> {
    const { rcpt: _, ...message } = m;
    deliverLocal(message, positions, sender);
    const users = Object.keys(positions);
    let where: Record<string, InstanceInfo[]>;
    try {
      where = await (located ?? locate(users));
    } catch (err) {
      opts.log.warn("directory lookup failed; remote recipients' gateways will repair the gap", { err, msgId: m.msgId });
      return;
    }
    // Web Push is for messages; stream events (edits, receipts, membership notices) are not pushed.
    if (m.kind === undefined && opts.offline) {
      const offline = users.filter((u) => u !== m.from && !where[u]?.length && !opts.connections.of(u));
      if (offline.length > 0) opts.offline(message, offline);
    }
    const byInstance = new Map<string, { inst: InstanceInfo; positions: Record<string, string> }>();
    for (const u of users) {
      for (const inst of where[u] ?? []) {
        if (inst.id === opts.self.id) continue;
        let e = byInstance.get(inst.id);
        if (!e) byInstance.set(inst.id, (e = { inst, positions: {} }));
        e.positions[u] = formatPosition(positions[u]!);
      }
    }
    await Promise.all([...byInstance.values()].map((e) => forwardTo(e.inst, { message, positions: e.positions })));
  }

  async function forwardTo(inst: InstanceInfo, f: Forward): Promise<void> {
    const peer = peerFor(inst);
    if (peer.backlog >= maxBacklog) return forwardDropped.inc();
    peer.backlog++;
    try {
      await peer.batcher.add(f);
    } finally {
      peer.backlog--;
    }
  }

  /**
   * Sends an ephemeral frame to every connection of `users` on this instance and, with one
   * directory lookup per tick and the same per-peer batches as messages, on the others. Never
   * rejects; a frame that cannot be forwarded is dropped (it expires by itself anyway).
   */
  async function signal(e: Ephemeral): Promise<void> {
    deliverEphemeral(e);
    let where: Record<string, InstanceInfo[]>;
    try {
      where = await locate(e.users);
    } catch {
      return;
    }
    const byInstance = new Map<string, { inst: InstanceInfo; users: string[] }>();
    for (const u of e.users) {
      for (const inst of where[u] ?? []) {
        if (inst.id === opts.self.id) continue;
        let x = byInstance.get(inst.id);
        if (!x) byInstance.set(inst.id, (x = { inst, users: [] }));
        x.users.push(u);
      }
    }
    await Promise.all([...byInstance.values()].map((x) => forwardTo(x.inst, { users: x.users, frame: e.frame })));
  }

  /** An ephemeral frame for this instance's connections of its users. */
  function deliverEphemeral(e: Ephemeral): void {
    let text: string | undefined;
    for (const u of e.users) {
      for (const ws of opts.connections.of(u) ?? []) {
        if (ws.data.open) sendText(ws, (text ??= JSON.stringify(e.frame)));
      }
    }
  }

  /** A forward arriving here (over HTTP or a link); returns how many of its users have no connection here. */
  function deliverForward(f: ForwardBatch, over: "link" | "http"): number {
    received.inc({ over }, f.deliveries.length);
    for (const e of f.ephemeral) deliverEphemeral(e);
    let missing = 0;
    for (const d of f.deliveries) missing += deliverForwarded(d);
    return missing;
  }

  /** A forwarded delivery arriving here. */
  function deliverForwarded(d: Delivery): number {
    // no prototype: a user named "__proto__" is a key like any other
    const positions: Record<string, Position> = Object.create(null);
    for (const u in d.positions) positions[u] = parseCursor(d.positions[u]!) as Position;
    return deliverLocal(d.message, positions);
  }

  /** Sends a frame outside any stream to this instance's connections of `users`; returns how many users had none here. */
  function pushLocal(users: string[], frame: ServerFrame): number {
    const text = JSON.stringify(frame);
    let missing = 0;
    for (const u of users) {
      const conns = opts.connections.of(u);
      if (!conns) missing++;
      for (const ws of conns ?? []) if (ws.data.open) sendText(ws, text);
    }
    return missing;
  }

  /**
   * Sends a frame that is not part of any stream (a group's new member list) to every open
   * connection of `users`, here and on other instances. Best effort: a client that misses one
   * (it was reconnecting) reads the state again after connecting. Never rejects.
   */
  async function push(users: string[], frame: ServerFrame): Promise<void> {
    pushLocal(users, frame);
    let where: Record<string, InstanceInfo[]>;
    try {
      where = await locate(users);
    } catch (err) {
      return opts.log.warn("directory lookup failed; a pushed frame reaches this instance's connections only", { err });
    }
    const byInstance = new Map<string, { inst: InstanceInfo; users: string[] }>();
    for (const u of users) {
      for (const inst of where[u] ?? []) {
        if (inst.id === opts.self.id) continue;
        let e = byInstance.get(inst.id);
        if (!e) byInstance.set(inst.id, (e = { inst, users: [] }));
        e.users.push(u);
      }
    }
    await Promise.all([...byInstance.values()].map((e) => post(e.inst.url, "/internal/push", { body: JSON.stringify({ users: e.users, frame }), n: 0 })));
  }

  return {
    locate,
    route,
    deliverForwarded,
    deliverForward,
    signal,
    deliverEphemeral,
    push,
    pushLocal,
    stop: () => {
      clearInterval(sweep);
      feed.stop();
      links?.stop();
    },
  };
}
export type Router = ReturnType<typeof createRouter>;
