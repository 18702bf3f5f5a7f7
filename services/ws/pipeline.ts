import { sleep } from "../../shared/backoff.ts";
import type { Claim, Ledger } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { ErrorCode } from "../../shared/protocol.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn } from "./connections.ts";
import type { Router } from "./router.ts";

export class SendError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The message id is derived from (sender, client id), so a resend maps to the same message anywhere. */
export function deriveMsgId(from: string, clientId: string): string {
  const h = new Bun.CryptoHasher("sha256");
  h.update(from);
  h.update("\n");
  h.update(clientId);
  return h.digest("base64url").slice(0, 22);
}

/**
 * The send path. Guarantees:
 * - resolves (with the ack timestamp) only after the queue confirmed the message: acked = durable;
 * - a resend of the same (sender, id), here or on another instance, resolves with the same msgId
 *   and is neither published nor delivered again (the ledger remembers acked ids for a day);
 * - live delivery starts only after the confirm, so no recipient ever sees a message that was not
 *   accepted, and a recipient who registered before a sync's barrier is reached live (delivery.md).
 */
export function createPipeline(opts: {
  queue: MessageQueue;
  ledger: Ledger;
  router: Router;
  /** Members of each group (empty array for an unknown group), one query per tick. */
  groupMembers: (groupIds: string[]) => Promise<Map<string, string[]>>;
  log: Logger;
  metrics: Metrics;
}) {
  const acked = opts.metrics.counter("ws_messages_acked_total", "Messages acknowledged to senders");
  const resent = opts.metrics.counter("ws_messages_resent_total", "Resends answered from the idempotency ledger");
  const failed = opts.metrics.counter("ws_messages_failed_total", "Sends answered with an error", ["code"]);
  const ackSeconds = opts.metrics.histogram("ws_ack_seconds", "From receiving a send to its ack", [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);

  const recent = new Map<string, number>();
  const RECENT_MAX = 100_000;
  const inflight = new Map<string, Promise<number>>();
  let accepting = true;

  const publishes = createTickBatcher<ChatMessage, void>(async (ms) => {
    await opts.queue.publish(ms);
    return ms.map(() => undefined);
  }, { maxItems: 500, maxInFlight: 4 });
  const claims = createTickBatcher<string, Claim>(async (ids) => {
    const r = await opts.ledger.claim([...new Set(ids)]);
    return ids.map((id) => r[id] ?? { state: "new" });
  }, { maxInFlight: 1 });
  const completes = createTickBatcher<{ msgId: string; ts: number }, void>(async (done) => {
    await opts.ledger.complete(done);
    return done.map(() => undefined);
  }, { maxInFlight: 1 });
  const members = createTickBatcher<string, string[]>(async (groups) => {
    const m = await opts.groupMembers([...new Set(groups)]);
    return groups.map((g) => m.get(g) ?? []);
  }, { maxInFlight: 2 });

  const remember = (msgId: string, ts: number) => {
    if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value!);
    recent.set(msgId, ts);
  };

  async function claim(msgId: string): Promise<Claim> {
    for (let i = 0; ; i++) {
      const c = await claims.add(msgId);
      if (c.state !== "pending" || i >= 20) return c.state === "pending" ? { state: "new" } : c;
      await sleep(100);
    }
  }

  async function process(m: ChatMessage, sender: Conn | undefined): Promise<number> {
    let recipients: string[];
    if (m.group !== undefined) {
      const ms = await members.add(m.group).catch(() => {
        throw new SendError("unavailable", "group membership is unavailable; retry");
      });
      if (!ms.includes(m.from)) throw new SendError("forbidden", "you are not a member of this group");
      recipients = ms;
    } else recipients = m.to === m.from ? [m.from] : [m.to!, m.from];

    // Claim and publish run side by side: a resend that turns out to be done was published twice,
    // which storage absorbs (ON CONFLICT DO NOTHING); it is neither acked anew nor delivered again.
    const [c, published] = await Promise.allSettled([claim(m.msgId), publishes.add(m)]);
    if (c.status === "fulfilled" && c.value.state === "done") {
      resent.inc();
      return c.value.ts;
    }
    if (published.status === "rejected") {
      opts.log.warn("publish failed", { err: published.reason, msgId: m.msgId });
      if (c.status === "fulfilled") opts.ledger.release([m.msgId]).catch(() => {});
      throw new SendError("unavailable", "the message queue is unavailable; retry");
    }
    if (c.status === "rejected") throw new SendError("unavailable", "the directory is unavailable; retry");
    completes.add({ msgId: m.msgId, ts: m.ts }).catch((err) => opts.log.warn("ledger complete failed", { err }));
    void opts.router.route(m, recipients, sender);
    return m.ts;
  }

  /** Resolves with the ack timestamp, or rejects with a SendError. */
  async function send(m: ChatMessage, sender?: Conn): Promise<number> {
    const t0 = performance.now();
    const known = recent.get(m.msgId);
    if (known !== undefined) {
      resent.inc();
      return known;
    }
    const running = inflight.get(m.msgId);
    if (running) {
      // A resend while the first attempt runs shares its outcome when it is accepted. When it is
      // refused (forbidden, unavailable), nothing was accepted under this id, so this send is
      // answered on its own, as it would be had it come a moment later.
      const ts = await running.catch(() => undefined);
      if (ts !== undefined) return ts;
      return send(m, sender);
    }
    if (!accepting) throw new SendError("unavailable", "this instance is shutting down; reconnect and retry");
    const p = process(m, sender);
    inflight.set(m.msgId, p);
    try {
      const ts = await p;
      remember(m.msgId, ts);
      acked.inc();
      ackSeconds.observe((performance.now() - t0) / 1000);
      return ts;
    } catch (err) {
      failed.inc({ code: err instanceof SendError ? err.code : "unavailable" });
      throw err;
    } finally {
      inflight.delete(m.msgId);
    }
  }

  return {
    send,
    /** Stops taking sends and waits (bounded) for those in flight to be acked or failed. */
    async drain(timeoutMs: number) {
      accepting = false;
      const deadline = Date.now() + timeoutMs;
      while (inflight.size > 0 && Date.now() < deadline) await Promise.race([...inflight.values()].map((p) => p.catch(() => 0)).concat(sleep(50).then(() => 0)));
    },
  };
}
export type Pipeline = ReturnType<typeof createPipeline>;
