import { sleep } from "../../shared/backoff.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { deriveEventId, newEvent, type NewEvent } from "../../shared/events/registry.ts";
import { SendError, type ChatMessage } from "../../shared/protocol.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import type { AllocResult, StreamAllocator } from "../../shared/stream/allocator.ts";
import { formatPosition } from "../../shared/stream/position.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn } from "./connections.ts";
import type { Router } from "./router.ts";

export { SendError };

/**
 * The message id is derived from (sender, client id, target), so a resend maps to the same message
 * anywhere. The target is part of it: a client id reused for another recipient or group is another
 * message (else its new recipients would get positions pointing at the first message).
 */
export function deriveMsgId(from: string, clientId: string, target: { to: string } | { group: string }): string {
  const key = from + "\n" + clientId + ("to" in target ? "\nto:" + target.to : "\ngroup:" + target.group);
  return Bun.CryptoHasher.hash("sha256", key, "base64url").slice(0, 22);
}

/**
 * A user's edit or deletion of message `ref` as the record the pipeline takes (its kind checks it
 * and fills in the conversation). The id derives from (user, kind, client id, ref): a retry is the
 * same event.
 */
export function changeRecord(from: string, kind: "edit" | "delete", clientId: string, ref: string, body = ""): ChatMessage {
  return { msgId: deriveEventId(from, kind, `${clientId}\n${ref}`), id: clientId, from, body, ts: Date.now(), kind, ref };
}

/** Chat messages per broker message at most (persist's PREFETCH counts broker messages). */
export const MAX_PUBLISH_BATCH = 500;
/** Publish calls, and allocation calls, a gateway has in flight at once (see createPipeline). */
const PIPELINE_CALLS_IN_FLIGHT = 1;

/** What an ack carries: the first accepted attempt's ts, and the message's position in the sender's stream. */
export interface Accepted {
  ts: number;
  cursor: string;
}

/**
 * The send path, top to bottom: recipients (group members at the time of the send; for a stream
 * event, whoever its kind names after validating it) → publish
 * (the broker's confirm: durable) → positions and the delivery claim (allocator) → live delivery
 * → ack. Guarantees (docs/delivery.md):
 * - resolves only after the queue confirmed the message: acked = durable;
 * - positions are allocated only for confirmed messages, so persist writes every allocated
 *   position (it allocates the same ones again, idempotently): a user's stream has no holes;
 * - messages from one connection are allocated, hence delivered, in the order they were sent;
 * - a resend of (sender, id), here or elsewhere, resolves with the first attempt's ts and is
 *   delivered only by the attempt that claimed it first.
 */
export function createPipeline(opts: {
  queue: MessageQueue;
  allocator: StreamAllocator;
  router: Router;
  /** Members of each group (empty array for an unknown group), one query per tick. */
  groupMembers: (groupIds: string[]) => Promise<Map<string, string[]>>;
  /** A stream event's recipients, from its kind (which may refuse it with a SendError). */
  acceptEvent: (e: ChatMessage) => Promise<string[]>;
  log: Logger;
  metrics: Metrics;
  /** Publish and allocation calls in flight at once (default PIPELINE_CALLS_IN_FLIGHT). */
  callsInFlight?: number;
}) {
  const acked = opts.metrics.counter("ws_messages_acked_total", "Messages acknowledged to senders");
  const resent = opts.metrics.counter("ws_messages_resent_total", "Resends acknowledged without delivering again");
  const failed = opts.metrics.counter("ws_messages_failed_total", "Sends answered with an error", ["code"]);
  const ackSeconds = opts.metrics.histogram("ws_ack_seconds", "From receiving a send to its ack", [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);

  // The last 50,000 to 100,000 accepted sends, in two generations: dropping a whole generation is
  // cheap, where deleting a Map's oldest key one at a time walks past the tombstones of the keys
  // deleted before it (4 % of a gateway's CPU samples under load).
  let recent = new Map<string, Accepted>();
  let older = new Map<string, Accepted>();
  const RECENT_MAX = 100_000;
  const inflight = new Map<string, Promise<Accepted>>();
  let accepting = true;

  // One publish and one allocation call in flight per gateway: what arrives while one is out goes
  // in the next, so batches grow exactly when the broker or Redis is busy (fewer calls, fewer
  // wakeups per message), and an idle gateway still calls at once. Four in flight cost 2–12 % more
  // CPU per message and 2–14 % of the rate under load (docs/benchmarks.md, eleventh session).
  const callsInFlight = opts.callsInFlight ?? PIPELINE_CALLS_IN_FLIGHT;
  const publishes = createTickBatcher<ChatMessage, void>(async (ms) => {
    await opts.queue.publish(ms);
    return ms.map(() => undefined);
  }, { maxItems: MAX_PUBLISH_BATCH, maxInFlight: callsInFlight });
  // Allocation order is the order of `add` calls: one call at a time, or several answered in order
  // on one Redis connection.
  const allocations = createTickBatcher((reqs: Parameters<StreamAllocator["allocate"]>[0]) => opts.allocator.allocate(reqs), { maxItems: 2000, maxInFlight: callsInFlight });
  const members = createTickBatcher<string, string[]>(async (groups) => {
    const m = await opts.groupMembers([...new Set(groups)]);
    return groups.map((g) => m.get(g) ?? []);
  }, { maxInFlight: 1 });

  const remember = (msgId: string, a: Accepted) => {
    if (recent.size >= RECENT_MAX / 2) {
      older = recent;
      recent = new Map();
    }
    recent.set(msgId, a);
  };

  /** Takes the connection's next turn: resolves when every earlier send of it has queued its allocation. */
  const takeTurn = (ws: Conn | undefined) => {
    const prev = ws ? ws.data.order : Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((r) => (done = r));
    if (ws) ws.data.order = mine;
    return { prev, done };
  };

  async function process(m: ChatMessage, sender: Conn | undefined): Promise<Accepted> {
    const turn = takeTurn(sender);
    let allocation: Promise<AllocResult>;
    let located: ReturnType<Router["locate"]> | undefined;
    try {
      let users: string[];
      if (m.kind !== undefined) users = await opts.acceptEvent(m);
      else if (m.group !== undefined) {
        const ms = await members.add(m.group).catch(() => {
          throw new SendError("unavailable", "group membership is unavailable; retry");
        });
        if (!ms.includes(m.from)) throw new SendError("forbidden", "you are not a member of this group");
        users = ms;
      } else users = m.to === m.from ? [m.from] : [m.from, m.to!];
      m.rcpt = users;
      located = opts.router.locate(users);
      try {
        await publishes.add(m);
      } catch (err) {
        opts.log.warn("publish failed", { err, msgId: m.msgId });
        throw new SendError("unavailable", "the message queue is unavailable; retry");
      }
      await turn.prev;
      allocation = allocations.add({ msgId: m.msgId, users, claim: { sender: m.from, ts: m.ts } });
    } finally {
      turn.done();
    }
    // Confirmed but not allocated when this fails: persist allocates it later and the recipients'
    // gateways or syncs pick it up; the sender resends and is acked then.
    let a: AllocResult;
    try {
      a = await allocation;
    } catch (err) {
      opts.log.warn("position allocation failed", { err, msgId: m.msgId });
      throw new SendError("unavailable", "message positions are unavailable; retry");
    }
    if (a.claimed!.fresh) void opts.router.route(m, a.positions, sender, located);
    else resent.inc();
    // A server event may leave its sender's stream out (a delivered receipt goes to the senders only).
    const own = a.positions[m.from];
    return { ts: a.claimed!.ts, cursor: own ? formatPosition(own) : "" };
  }

  /** Resolves with what the ack carries, or rejects with a SendError. */
  async function send(m: ChatMessage, sender?: Conn): Promise<Accepted> {
    const t0 = performance.now();
    const known = recent.get(m.msgId) ?? older.get(m.msgId);
    if (known !== undefined) {
      resent.inc();
      return known;
    }
    const running = inflight.get(m.msgId);
    if (running) {
      // A resend while the first attempt runs shares its outcome when it is accepted. When it is
      // refused (forbidden, unavailable), this send is answered on its own.
      const a = await running.catch(() => undefined);
      if (a !== undefined) return a;
      return send(m, sender);
    }
    if (!accepting) throw new SendError("unavailable", "this instance is shutting down; reconnect and retry");
    const p = process(m, sender);
    inflight.set(m.msgId, p);
    try {
      const a = await p;
      remember(m.msgId, a);
      acked.inc();
      ackSeconds.observe((performance.now() - t0) / 1000);
      return a;
    } catch (err) {
      failed.inc({ code: err instanceof SendError ? err.code : "unavailable" });
      throw err;
    } finally {
      inflight.delete(m.msgId);
    }
  }

  /**
   * Puts messages accepted earlier into `user`'s stream, in the order given (the history a new
   * group member is given): published for persist with `rcpt: [user]` (persist writes only the new
   * stream entries), positioned (no claim: nobody is acked), then delivered live.
   */
  async function share(ms: ChatMessage[], user: string): Promise<void> {
    if (ms.length === 0) return;
    const copies = ms.map((m) => ({ ...m, rcpt: [user] }));
    await opts.queue.publish(copies);
    const results = await opts.allocator.allocate(copies.map((m) => ({ msgId: m.msgId, users: [user] })));
    results.forEach((a, i) => void opts.router.route(copies[i]!, a.positions));
  }

  return {
    /** A message, or a stream event from a client (its frame's `id` in `id`). */
    send,
    /** A server-originated stream event (e.g. from an HTTP route): the same path, without a connection. */
    emit: (e: NewEvent) => send(newEvent(e)),
    share,
    /** Stops taking sends and waits (bounded) for those in flight to be acked or failed. */
    async drain(timeoutMs: number) {
      accepting = false;
      const deadline = Date.now() + timeoutMs;
      while (inflight.size > 0 && Date.now() < deadline) await Promise.race([...inflight.values()].map((p) => p.catch(() => 0)).concat(sleep(50).then(() => 0)));
    },
  };
}
export type Pipeline = ReturnType<typeof createPipeline>;
