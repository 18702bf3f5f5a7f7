import { backoffDelay, sleep } from "../../shared/backoff.ts";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { messageFrame, type ChatMessage } from "../../shared/protocol.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn, Connections } from "./connections.ts";

/** A forwarded delivery: one message for some users held by the receiving instance. */
export interface Delivery {
  message: ChatMessage;
  users: string[];
}

/** The head of a message frame up to its cursor; each connection appends its own cursor. */
export function frameHead(m: ChatMessage): string {
  const s = JSON.stringify(messageFrame(m, ""));
  return s.slice(0, s.length - 3);
}
const tail = (cursor: number) => `"${cursor}"}`;

/** Sends a frame head to one connection, or holds it while the connection is answering a sync. */
export function sendHead(ws: Conn, msgId: string, head: string) {
  if (ws.data.held) ws.data.held.push({ msgId, head });
  else ws.send(head + tail(ws.data.cursor));
}

/**
 * Live delivery of confirmed messages: to local connections at once, and to other instances with
 * one HTTP request per instance per tick. Live delivery is best effort; `sync` is the safety net.
 */
export function createRouter(opts: {
  connections: Connections;
  directory: Directory;
  self: InstanceInfo;
  internalSecret: string;
  log: Logger;
  metrics: Metrics;
  fetch?: typeof fetch;
}) {
  const doFetch = opts.fetch ?? fetch;
  const forwarded = opts.metrics.counter("ws_forwarded_messages_total", "Messages forwarded to other instances");
  const forwardFailed = opts.metrics.counter("ws_forward_failures_total", "Forward requests given up after retries");
  const notThere = opts.metrics.counter("ws_forward_not_there_total", "Users another instance said it does not hold");

  const lookups = createTickBatcher<string[], Record<string, InstanceInfo[]>>(async (items) => {
    const all = [...new Set(items.flat())];
    const found = await opts.directory.lookup(all);
    return items.map(() => found);
  }, { maxInFlight: 1 });

  const forwarders = new Map<string, ReturnType<typeof createTickBatcher<Delivery, void>>>();
  const forwarderFor = (inst: InstanceInfo) => {
    let f = forwarders.get(inst.url);
    if (!f) {
      f = createTickBatcher<Delivery, void>(async (deliveries) => {
        await post(inst.url, deliveries);
        return deliveries.map(() => undefined);
      }, { maxItems: 500, maxInFlight: 1 });
      forwarders.set(inst.url, f);
    }
    return f;
  };

  async function post(url: string, deliveries: Delivery[]) {
    const body = JSON.stringify({ deliveries });
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const res = await doFetch(`${url}/internal/deliver`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${opts.internalSecret}` },
          body,
          signal: AbortSignal.timeout(3000),
        });
        if (res.ok) {
          const { missing } = (await res.json()) as { missing: number };
          forwarded.inc(deliveries.length);
          if (missing) notThere.inc(missing);
          return;
        }
        if (res.status < 500) {
          opts.log.error("forward rejected", { url, status: res.status });
          break;
        }
      } catch (err) {
        if (attempt === 3) opts.log.warn("forward failed", { url, err });
      }
      await sleep(backoffDelay(attempt, { baseMs: 50, capMs: 1000 }));
    }
    forwardFailed.inc();
  }

  /** Delivers to this instance's connections of `users` (but `except`); returns how many users had none. */
  function deliverLocal(m: ChatMessage, users: Iterable<string>, except?: Conn): number {
    let head: string | undefined;
    let missing = 0;
    for (const u of users) {
      const conns = opts.connections.of(u);
      if (!conns) {
        missing++;
        continue;
      }
      head ??= frameHead(m);
      for (const ws of conns) if (ws !== except) sendHead(ws, m.msgId, head);
    }
    return missing;
  }

  /** Routes a confirmed message to every connection of `users`, here and elsewhere. Never rejects. */
  async function route(m: ChatMessage, users: string[], sender?: Conn): Promise<void> {
    deliverLocal(m, users, sender);
    let where: Record<string, InstanceInfo[]>;
    try {
      where = await lookups.add(users);
    } catch (err) {
      opts.log.warn("directory lookup failed; remote recipients will get it on sync", { err, msgId: m.msgId });
      return;
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
    await Promise.all([...byInstance.values()].map((e) => forwarderFor(e.inst).add({ message: m, users: e.users })));
  }

  return { route, deliverLocal };
}
export type Router = ReturnType<typeof createRouter>;
