import { backoffDelay, sleep } from "../../shared/backoff.ts";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { ChatMessage, ServerFrame } from "../../shared/protocol.ts";
import { formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn, Connections } from "./connections.ts";
import { frameHead, type Delivery as StreamDelivery } from "./delivery.ts";

/** A forwarded delivery: one message and, for each user the receiving instance holds, the position in their stream ("epoch.pos"). */
export interface Delivery {
  message: ChatMessage;
  positions: Record<string, string>;
}

/** Deliveries one peer may have waiting; past it new ones are dropped (the peer's gap repair fills them). */
export const MAX_FORWARD_BACKLOG = 20_000;
const FORWARD_ATTEMPTS = 3;
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
}) {
  const doFetch = opts.fetch ?? fetch;
  const maxBacklog = opts.maxBacklog ?? MAX_FORWARD_BACKLOG;
  const forwarded = opts.metrics.counter("ws_forwarded_messages_total", "Messages forwarded to other instances");
  const forwardFailed = opts.metrics.counter("ws_forward_failures_total", "Forward requests given up after retries");
  const forwardDropped = opts.metrics.counter("ws_forward_dropped_total", "Deliveries dropped because a peer's backlog was full");
  const notThere = opts.metrics.counter("ws_forward_not_there_total", "Users another instance said it does not hold");

  const lookups = createTickBatcher<string[], Record<string, InstanceInfo[]>>(async (items) => {
    const all = [...new Set(items.flat())];
    const found = await opts.directory.lookup(all);
    return items.map(() => found);
  }, { maxInFlight: 1 });

  const peers = new Map<string, { batcher: ReturnType<typeof createTickBatcher<Delivery, void>>; backlog: number; lastUsed: number }>();
  const peerFor = (inst: InstanceInfo) => {
    let p = peers.get(inst.url);
    if (!p) {
      const batcher = createTickBatcher<Delivery, void>(async (deliveries) => {
        await post(inst.url, "/internal/deliver", { deliveries });
        return deliveries.map(() => undefined);
      }, { maxItems: 500, maxInFlight: 1 });
      peers.set(inst.url, (p = { batcher, backlog: 0, lastUsed: Date.now() }));
    }
    p.lastUsed = Date.now();
    return p;
  };
  // Forget idle peers (instances come and go).
  const sweep = setInterval(() => {
    for (const [url, p] of peers) if (p.backlog === 0 && Date.now() - p.lastUsed > 60_000) peers.delete(url);
  }, 30_000);

  async function post(url: string, path: string, payload: unknown) {
    const body = JSON.stringify(payload);
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
          if (path === "/internal/deliver") forwarded.inc((payload as { deliveries: unknown[] }).deliveries.length);
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

  /** Offers a message to this instance's connections of each user at that user's position (but not to `except`, which gets an ack). Returns how many users had no connection here. */
  function deliverLocal(m: ChatMessage, positions: Iterable<[string, Position]>, except?: Conn): number {
    let head: string | undefined;
    let missing = 0;
    for (const [u, position] of positions) {
      const conns = opts.connections.of(u);
      if (!conns) {
        missing++;
        continue;
      }
      head ??= frameHead(m);
      for (const ws of conns) opts.stream.offer(ws, { position, head: ws === except ? null : head });
    }
    return missing;
  }

  /**
   * Where `users` are connected: one batched directory lookup per tick. The send path starts it
   * while the message is being confirmed and positioned; a connection that registers meanwhile is
   * missed by the forward and served by its gateway's gap repair.
   */
  function locate(users: string[]): Promise<Record<string, InstanceInfo[]>> {
    const p = lookups.add(users);
    p.catch(() => {});
    return p;
  }

  /** Routes an allocated message to every connection of its users, here and elsewhere. Never rejects. */
  async function route(m: ChatMessage, positions: Record<string, Position>, sender?: Conn, located?: Promise<Record<string, InstanceInfo[]>>): Promise<void> {
    const { rcpt: _, ...message } = m;
    deliverLocal(message, Object.entries(positions), sender);
    const users = Object.keys(positions);
    let where: Record<string, InstanceInfo[]>;
    try {
      where = await (located ?? lookups.add(users));
    } catch (err) {
      opts.log.warn("directory lookup failed; remote recipients' gateways will repair the gap", { err, msgId: m.msgId });
      return;
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
    await Promise.all(
      [...byInstance.values()].map(async (e) => {
        const peer = peerFor(e.inst);
        if (peer.backlog >= maxBacklog) return forwardDropped.inc();
        peer.backlog++;
        try {
          await peer.batcher.add({ message, positions: e.positions });
        } finally {
          peer.backlog--;
        }
      }),
    );
  }

  /** A forwarded delivery arriving here. */
  function deliverForwarded(d: Delivery): number {
    return deliverLocal(
      d.message,
      Object.entries(d.positions).map(([u, c]) => [u, parseCursor(c) as Position]),
    );
  }

  /** Sends a frame outside any stream to this instance's connections of `users`; returns how many users had none here. */
  function pushLocal(users: string[], frame: ServerFrame): number {
    const text = JSON.stringify(frame);
    let missing = 0;
    for (const u of users) {
      const conns = opts.connections.of(u);
      if (!conns) missing++;
      for (const ws of conns ?? []) if (ws.data.open) ws.send(text);
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
      where = await lookups.add(users);
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
    await Promise.all([...byInstance.values()].map((e) => post(e.inst.url, "/internal/push", { users: e.users, frame })));
  }

  return { locate, route, deliverForwarded, push, pushLocal, stop: () => clearInterval(sweep) };
}
export type Router = ReturnType<typeof createRouter>;
