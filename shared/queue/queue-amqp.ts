import { z } from "zod";
import type { Channel, ConfirmChannel, ConsumeMessage, Message } from "amqplib";
import type { AmqpConnection, KeptChannel } from "../amqp.ts";
import type { Logger } from "../log.ts";
import { ChatMessageSchema, describeIssues, type ChatMessage } from "../protocol.ts";
import { QUEUE_TOPOLOGY, QueueUnavailable, type MessageQueue, type QueueConsumer } from "./queue.ts";


const BrokerBatch = z
  .array(ChatMessageSchema.refine((m) => (m.to === undefined) !== (m.group === undefined), "needs exactly one of to and group"))
  .min(1);

export interface AmqpQueueOptions {
  log: Logger;
  /** Queue name; default QUEUE_TOPOLOGY.queue. Tests pass a unique one. */
  queue?: string;
  /** Default QUEUE_TOPOLOGY names for the default queue, else `<queue>.dlx` and `<queue>.dead`. */
  deadLetterExchange?: string;
  deadLetterQueue?: string;
  /** False for a consumer-only process: no publisher channels; publish rejects. Default true. */
  publisher?: boolean;
  /** A publish not confirmed within this rejects with QueueUnavailable. Default 10 s. */
  publishTimeoutMs?: number;
  /** Called for each broker message dead-lettered as invalid. */
  onDeadLetter?(reason: string): void;
}

export interface AmqpQueue extends MessageQueue {
  /** Resolves once ready() is true (connected, channels open); rejects when `signal` aborts. */
  whenReady(signal?: AbortSignal): Promise<void>;
}

export type QueueTopology = { queue: string; deadLetterExchange: string; deadLetterQueue: string };

export function queueTopology(opts: Pick<AmqpQueueOptions, "queue" | "deadLetterExchange" | "deadLetterQueue">): QueueTopology {
  const queue = opts.queue ?? QUEUE_TOPOLOGY.queue;
  const isDefault = queue === QUEUE_TOPOLOGY.queue;
  return {
    queue,
    deadLetterExchange: opts.deadLetterExchange ?? (isDefault ? QUEUE_TOPOLOGY.deadLetterExchange : `${queue}.dlx`),
    deadLetterQueue: opts.deadLetterQueue ?? (isDefault ? QUEUE_TOPOLOGY.deadLetterQueue : `${queue}.dead`),
  };
}

/**
 * Declares the queue and its dead-letter queue. A quorum queue: it confirms persistent messages as
 * soon as its write-ahead log is synced (a classic queue batches fsyncs for up to hundreds of ms,
 * which was most of our ack latency), survives a broker restart, and is what a cluster replicates.
 * Any number of consumers share it (RabbitMQ spreads deliveries over them): positions are assigned
 * before persisting and writes are idempotent, so the order in which consumers write is free.
 */
export async function assertQueueTopology(ch: Channel, t: QueueTopology): Promise<void> {
  await ch.assertExchange(t.deadLetterExchange, "fanout", { durable: true });
  await ch.assertQueue(t.deadLetterQueue, { durable: true });
  await ch.bindQueue(t.deadLetterQueue, t.deadLetterExchange, "");
  await ch.assertQueue(t.queue, {
    durable: true,
    deadLetterExchange: t.deadLetterExchange,
    arguments: { "x-queue-type": "quorum" },
  });
}

type Parsed = { ok: true; messages: ChatMessage[] } | { ok: false; reason: string };

function parseBrokerMessage(msg: Message): Parsed {
  let raw: unknown;
  try {
    raw = JSON.parse(msg.content.toString("utf8"));
  } catch {
    return { ok: false, reason: "body is not JSON" };
  }
  const r = BrokerBatch.safeParse(raw);
  if (!r.success) return { ok: false, reason: describeIssues(r.error) };
  return { ok: true, messages: r.data as ChatMessage[] };
}

/** The queue role over RabbitMQ; `conn` is owned by the caller. */
export function createAmqpQueue(conn: AmqpConnection, opts: AmqpQueueOptions): AmqpQueue {
  const log = opts.log;
  const topology = queueTopology(opts);
  const publisher = opts.publisher ?? true;
  const publishTimeoutMs = opts.publishTimeoutMs ?? 10_000;
  let closed = false;
  const readyWaiters = new Set<() => void>();
  const checkReady = () => {
    if (!isReady()) return;
    for (const w of readyWaiters) w();
    readyWaiters.clear();
  };

  interface InFlight {
    resolve(): void;
    reject(err: unknown): void;
    timer: ReturnType<typeof setTimeout>;
  }
  let pubCh: ConfirmChannel | undefined;
  let inFlight = new Map<string, InFlight>();
  let returned = new Set<string>();
  let publishSeq = 0;
  const outstanding = new Set<Promise<void>>();

  const failInFlight = (reason: string) => {
    const failed = inFlight;
    inFlight = new Map();
    returned = new Set();
    for (const p of failed.values()) {
      clearTimeout(p.timer);
      p.reject(new QueueUnavailable(reason));
    }
  };

  const kept: KeptChannel<Channel>[] = [];
  if (publisher) {
    kept.push(
      conn.keepConfirmChannel({
        name: "publish",
        setup: async (ch) => {
          await assertQueueTopology(ch, topology);
          ch.on("return", (msg: Message) => {
            if (ch === pubCh && typeof msg.properties.messageId === "string") returned.add(msg.properties.messageId);
          });
        },
        onOpen: (ch) => {
          pubCh = ch;
          checkReady();
        },
        onClose: (ch) => {
          if (pubCh !== ch) return;
          pubCh = undefined;
          failInFlight("queue connection lost before the broker confirmed");
        },
      }),
    );
  }

  const consumers = new Set<KeptChannel<Channel>>();

  function isReady() {
    if (closed || !conn.ready()) return false;
    if (publisher && !pubCh) return false;
    for (const c of consumers) if (!c.current()) return false;
    return true;
  }

  return {
    publish(messages) {
      if (closed) return Promise.reject(new QueueUnavailable("queue closed"));
      if (!publisher) return Promise.reject(new QueueUnavailable("this queue handle does not publish"));
      const ch = pubCh;
      if (!ch) return Promise.reject(new QueueUnavailable("queue not connected"));
      if (messages.length === 0) return Promise.resolve();
      const body = Buffer.from(JSON.stringify(messages));
      const id = String(++publishSeq);
      const p = new Promise<void>((resolve, reject) => {
        const entry: InFlight = {
          resolve,
          reject,
          timer: setTimeout(() => {
            inFlight.delete(id);
            reject(new QueueUnavailable(`the broker did not confirm within ${publishTimeoutMs} ms`));
          }, publishTimeoutMs),
        };
        inFlight.set(id, entry);
        const settle = (err: unknown) => {
          if (inFlight.get(id) !== entry) return;
          inFlight.delete(id);
          clearTimeout(entry.timer);
          const wasReturned = returned.delete(id);
          if (err) reject(new QueueUnavailable("the broker refused the message"));
          else if (wasReturned) reject(new QueueUnavailable("the broker could not route the message"));
          else resolve();
        };
        try {
          ch.publish(
            "",
            topology.queue,
            body,
            { persistent: true, mandatory: true, contentType: "application/json", messageId: id },
            settle,
          );
        } catch (err) {
          settle(err ?? new Error("publish failed"));
        }
      });
      outstanding.add(p);
      const forget = () => void outstanding.delete(p);
      p.then(forget, forget);
      return p;
    },

    async consume(consumer: QueueConsumer, { prefetch }) {
      if (closed) throw new QueueUnavailable("queue closed");
      const keptConsumer = conn.keepChannel({
        name: "consume",
        setup: async (ch) => {
          let open = true;
          ch.once("close", () => (open = false));
          await assertQueueTopology(ch, topology);
          await ch.prefetch(Math.max(1, prefetch));
          await ch.consume(topology.queue, (msg) => onMessage(ch, () => open, msg), { noAck: false });
        },
        onOpen: () => checkReady(),
      });
      consumers.add(keptConsumer);
      await keptConsumer.settled();
      return {
        stop: async () => {
          consumers.delete(keptConsumer);
          await keptConsumer.stop();
        },
      };

      function onMessage(ch: Channel, isOpen: () => boolean, msg: ConsumeMessage | null) {
        if (msg === null) {
          log.warn("queue consumer cancelled by the broker; subscribing again", { queue: topology.queue });
          ch.close().catch(() => {});
          return;
        }
        let settled = false;
        const ack = () => {
          if (settled) return;
          settled = true;
          if (!isOpen()) return;
          try {
            ch.ack(msg);
          } catch {
            // the channel died meanwhile: the broker redelivers
          }
        };
        const parsed = parseBrokerMessage(msg);
        if (!parsed.ok) {
          settled = true;
          try {
            ch.nack(msg, false, false);
          } catch {
            return;
          }
          log.warn("dead-lettered an invalid queue message", { queue: topology.queue, reason: parsed.reason.slice(0, 200), bytes: msg.content.length });
          opts.onDeadLetter?.(parsed.reason);
          return;
        }
        guard(() => consumer.onDelivery({ messages: parsed.messages, ack: () => ack() }));
      }

      function guard(fn: () => void) {
        try {
          fn();
        } catch (err) {
          log.error("queue consumer threw; the delivery stays unacked", { err });
        }
      }
    },

    ready: isReady,

    whenReady(signal) {
      if (isReady()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const done = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          readyWaiters.delete(done);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        readyWaiters.add(done);
      });
    },

    async close() {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...outstanding]);
      await Promise.all([...kept, ...consumers].map((k) => k.stop()));
      consumers.clear();
      failInFlight("queue closed");
    },
  };
}
