import type { Channel, ConfirmChannel, ConsumeMessage, Message } from "amqplib";
import type { AmqpConnection, KeptChannel } from "../amqp.ts";
import type { Logger } from "../log.ts";
import { parseBrokerBody } from "./broker-batch.ts";
import { QUEUE_TOPOLOGY, QueueUnavailable, type MessageQueue, type QueueConsumer } from "./queue.ts";


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
  /**
   * A publish nacked, or unconfirmed when its channel or connection closed, is published again on
   * the next channel while it is younger than this (then it rejects with QueueUnavailable). Default 5 s.
   */
  retryMs?: number;
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
 * Declares the queue and its dead-letter queue, both quorum queues. A quorum queue: it confirms persistent messages as
 * soon as its write-ahead log is synced (a classic queue batches fsyncs for up to hundreds of ms,
 * which was most of our ack latency), survives a broker restart, and is what a cluster replicates.
 * Any number of consumers share it (RabbitMQ spreads deliveries over them): positions are assigned
 * before persisting and writes are idempotent, so the order in which consumers write is free.
 */
export async function assertQueueTopology(ch: Channel, t: QueueTopology): Promise<void> {
  await ch.assertExchange(t.deadLetterExchange, "fanout", { durable: true });
  // quorum as well: a classic queue lives on one node, and while that node is down every
  // redeclaration of it fails (404 "home node … is down"), so no channel could be set up anywhere
  await ch.assertQueue(t.deadLetterQueue, { durable: true, arguments: { "x-queue-type": "quorum" } });
  await ch.bindQueue(t.deadLetterQueue, t.deadLetterExchange, "");
  await ch.assertQueue(t.queue, {
    durable: true,
    deadLetterExchange: t.deadLetterExchange,
    arguments: { "x-queue-type": "quorum" },
  });
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

  /**
   * A publish until the broker confirmed it. A nack (seen on a cluster after a quorum queue's leader
   * moved: the channel kept nacking until reopened) closes the channel, and every publish not yet
   * confirmed on a channel that closed is published again on the next one (possibly on another
   * node) while it is younger than retryMs: idempotent, storage keeps one row per msgId.
   */
  interface InFlight {
    id: string;
    body: Buffer;
    started: number;
    /** The channel of the current attempt; undefined while waiting for one. */
    ch: ConfirmChannel | undefined;
    done: boolean;
    resolve(): void;
    reject(err: unknown): void;
    timer: ReturnType<typeof setTimeout>;
  }
  const retryMs = opts.retryMs ?? 5000;
  let pubCh: ConfirmChannel | undefined;
  const pending = new Set<InFlight>();
  const returned = new WeakMap<ConfirmChannel, Set<string>>();
  let publishSeq = 0;
  const outstanding = new Set<Promise<void>>();

  const finish = (e: InFlight, err?: unknown) => {
    if (e.done) return;
    e.done = true;
    pending.delete(e);
    clearTimeout(e.timer);
    if (err) e.reject(err);
    else e.resolve();
  };

  const send = (e: InFlight) => {
    const ch = pubCh;
    e.ch = ch;
    if (!ch) return;
    try {
      ch.publish(
        "",
        topology.queue,
        e.body,
        { persistent: true, mandatory: true, contentType: "application/json", messageId: e.id },
        (err: unknown) => settle(e, ch, err),
      );
    } catch (err) {
      settle(e, ch, err ?? new Error("publish failed"));
    }
  };

  const retryOrFail = (e: InFlight, reason: string) => {
    if (e.done) return;
    if (closed || Date.now() - e.started >= retryMs) return finish(e, new QueueUnavailable(reason));
    send(e);
  };

  /** Closes a channel that nacked; its unconfirmed publishes are retried once another is open. */
  const abandon = (ch: ConfirmChannel) => {
    if (pubCh !== ch) return;
    pubCh = undefined;
    log.warn("the broker nacked a publish; reopening the publish channel", { queue: topology.queue });
    ch.close().catch(() => {});
  };

  const settle = (e: InFlight, ch: ConfirmChannel, err: unknown) => {
    if (e.done || e.ch !== ch) return;
    const wasReturned = returned.get(ch)?.delete(e.id) ?? false;
    if (err) {
      e.ch = undefined;
      abandon(ch);
      return retryOrFail(e, "the broker refused the message");
    }
    if (wasReturned) return finish(e, new QueueUnavailable("the broker could not route the message"));
    finish(e);
  };

  const failAll = (reason: string) => {
    for (const e of [...pending]) finish(e, new QueueUnavailable(reason));
  };

  const kept: KeptChannel<Channel>[] = [];
  if (publisher) {
    kept.push(
      conn.keepConfirmChannel({
        name: "publish",
        setup: async (ch) => {
          await assertQueueTopology(ch, topology);
          const mine = new Set<string>();
          returned.set(ch, mine);
          ch.on("return", (msg: Message) => {
            if (typeof msg.properties.messageId === "string") mine.add(msg.properties.messageId);
          });
        },
        onOpen: (ch) => {
          pubCh = ch;
          for (const e of pending) if (!e.ch) send(e);
          checkReady();
        },
        onClose: (ch) => {
          if (pubCh === ch) pubCh = undefined;
          for (const e of [...pending]) if (e.ch === ch) retryOrFail(e, "queue connection lost before the broker confirmed");
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
      if (!pubCh) return Promise.reject(new QueueUnavailable("queue not connected"));
      if (messages.length === 0) return Promise.resolve();
      const p = new Promise<void>((resolve, reject) => {
        const e: InFlight = {
          id: String(++publishSeq),
          body: Buffer.from(JSON.stringify(messages)),
          started: Date.now(),
          ch: undefined,
          done: false,
          resolve,
          reject,
          timer: setTimeout(() => finish(e, new QueueUnavailable(`the broker did not confirm within ${publishTimeoutMs} ms`)), publishTimeoutMs),
        };
        pending.add(e);
        send(e);
      });
      outstanding.add(p);
      const forget = () => void outstanding.delete(p);
      p.then(forget, forget);
      return p;
    },

    async consume(consumer: QueueConsumer, { prefetch }) {
      if (closed) throw new QueueUnavailable("queue closed");
      type ChannelAcks = ReturnType<typeof channelAcks>;
      const channelsAcks = new Set<ChannelAcks>();
      const keptConsumer = conn.keepChannel({
        name: "consume",
        setup: async (ch) => {
          const acks = channelAcks(ch);
          ch.once("close", () => acks.close());
          await assertQueueTopology(ch, topology);
          await ch.prefetch(Math.max(1, prefetch));
          await ch.consume(topology.queue, (msg) => onMessage(ch, acks, msg), { noAck: false });
        },
        onOpen: () => checkReady(),
      });
      consumers.add(keptConsumer);
      await keptConsumer.settled();
      return {
        stop: async () => {
          consumers.delete(keptConsumer);
          for (const a of channelsAcks) a.flush();
          await keptConsumer.stop();
        },
      };

      function onMessage(ch: Channel, acks: ChannelAcks, msg: ConsumeMessage | null) {
        if (msg === null) {
          log.warn("queue consumer cancelled by the broker; subscribing again", { queue: topology.queue });
          ch.close().catch(() => {});
          return;
        }
        const tag = msg.fields.deliveryTag;
        let settled = false;
        const ack = () => {
          if (settled) return;
          settled = true;
          acks.ack(tag);
        };
        const parsed = parseBrokerBody(msg.content.toString("utf8"));
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
        acks.received(tag);
        guard(() => consumer.onDelivery({ messages: parsed.messages, ack: () => ack() }));
      }

      /**
       * A channel's acks, sent once per event-loop turn: the longest run of acked deliveries at the
       * head of what the channel holds goes out as one ack with `multiple` (batches commit mostly in
       * delivery order, so usually that is all), any other acked delivery on its own. Every ack
       * is sent at the next turn of the event loop (or at stop(), before the channel closes).
       */
      function channelAcks(ch: Channel) {
        let open = true;
        /** Delivery tags received and not yet acked, ascending (the broker numbers them so). */
        let held: number[] = [];
        const acked = new Set<number>();
        let scheduled = false;
        const self = {
          received(tag: number) {
            held.push(tag);
          },
          ack(tag: number) {
            if (!open) return;
            acked.add(tag);
            if (!scheduled) {
              scheduled = true;
              setImmediate(self.flush);
            }
          },
          flush() {
            scheduled = false;
            if (!open || acked.size === 0) return;
            let head = 0;
            while (head < held.length && acked.has(held[head]!)) acked.delete(held[head++]!);
            const upTo = head > 0 ? held[head - 1]! : undefined;
            held = held.slice(head).filter((t) => !acked.has(t));
            const single = [...acked];
            acked.clear();
            try {
              if (upTo !== undefined) ch.ack({ fields: { deliveryTag: upTo } } as ConsumeMessage, true);
              for (const t of single) ch.ack({ fields: { deliveryTag: t } } as ConsumeMessage);
            } catch {
              // the channel died meanwhile: the broker redelivers
            }
          },
          close() {
            open = false;
            channelsAcks.delete(self);
          },
        };
        channelsAcks.add(self);
        return self;
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
      failAll("queue closed");
    },
  };
}
