import { createBarrierRounds } from "./barrier.ts";
import type { ChatMessage } from "../protocol.ts";
import { QueueUnavailable, type MessageQueue, type QueueConsumer } from "./queue.ts";


type Item =
  | { seq: number; kind: "messages"; messages: ChatMessage[] }
  | { seq: number; kind: "barrier"; finish: (err?: unknown) => void; abandoned: boolean };

interface ConsumerState {
  consumer: QueueConsumer;
  prefetch: number;
  unacked: Map<number, Item>;
  stopped: boolean;
}

/** The in-process queue for `bun run dev` and unit tests, with the semantics of the RabbitMQ one. */
export function createMemoryQueue(): MessageQueue {
  let seq = 0;
  let closed = false;
  let ready: Item[] = [];
  const consumers: ConsumerState[] = [];
  let pumping = false;
  let pumpScheduled = false;

  const schedulePump = () => {
    if (pumpScheduled) return;
    pumpScheduled = true;
    queueMicrotask(() => {
      pumpScheduled = false;
      pump();
    });
  };

  const pump = () => {
    if (pumping) return;
    pumping = true;
    try {
      for (;;) {
        const c = consumers[0];
        if (!c || closed || c.unacked.size >= c.prefetch) return;
        const item = ready.shift();
        if (!item) return;
        if (item.kind === "barrier" && item.abandoned) continue;
        c.unacked.set(item.seq, item);
        deliver(c, item);
      }
    } finally {
      pumping = false;
    }
  };

  const settleItem = (c: ConsumerState, item: Item) => {
    if (c.stopped || !c.unacked.delete(item.seq)) return false;
    schedulePump();
    return true;
  };

  const deliver = (c: ConsumerState, item: Item) => {
    if (item.kind === "barrier") {
      c.consumer.onBarrier(() => {
        if (settleItem(c, item)) item.finish();
      });
    } else {
      c.consumer.onDelivery({ messages: item.messages.map((m) => ({ ...m })), ack: () => void settleItem(c, item) });
    }
  };

  const barriers = createBarrierRounds((finish) => {
    if (closed) throw new QueueUnavailable("queue closed");
    const item: Item = { seq: ++seq, kind: "barrier", finish, abandoned: false };
    ready.push(item);
    schedulePump();
    return () => {
      item.abandoned = true;
    };
  });

  return {
    async publish(messages) {
      if (closed) throw new QueueUnavailable("queue closed");
      if (messages.length === 0) return;
      ready.push({ seq: ++seq, kind: "messages", messages: messages.map((m) => ({ ...m })) });
      schedulePump();
    },
    barrier(timeoutMs) {
      if (closed) return Promise.reject(new QueueUnavailable("queue closed"));
      return barriers.wait(timeoutMs);
    },
    async consume(consumer, { prefetch }) {
      if (closed) throw new QueueUnavailable("queue closed");
      const state: ConsumerState = { consumer, prefetch: Math.max(1, prefetch), unacked: new Map(), stopped: false };
      consumers.push(state);
      schedulePump();
      return {
        stop: async () => {
          if (state.stopped) return;
          state.stopped = true;
          const i = consumers.indexOf(state);
          if (i !== -1) consumers.splice(i, 1);
          if (state.unacked.size) {
            ready = [...state.unacked.values(), ...ready].sort((a, b) => a.seq - b.seq);
            state.unacked.clear();
          }
          schedulePump();
        },
      };
    },
    ready: () => !closed,
    async close() {
      closed = true;
      for (const c of consumers) c.stopped = true;
      consumers.length = 0;
      barriers.failAll(new QueueUnavailable("queue closed"));
    },
  };
}
