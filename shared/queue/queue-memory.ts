import type { ChatMessage } from "../protocol.ts";
import { QueueUnavailable, type MessageQueue, type QueueConsumer } from "./queue.ts";

type Item = { seq: number; messages: ChatMessage[] };

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
  let next = 0;
  let pumpScheduled = false;

  const schedulePump = () => {
    if (pumpScheduled) return;
    pumpScheduled = true;
    queueMicrotask(() => {
      pumpScheduled = false;
      pump();
    });
  };

  /** Round robin over consumers with room in their prefetch window, as RabbitMQ does. */
  const pump = () => {
    while (!closed && ready.length > 0) {
      let c: ConsumerState | undefined;
      for (let i = 0; i < consumers.length; i++) {
        const cand = consumers[(next + i) % consumers.length]!;
        if (cand.unacked.size < cand.prefetch) {
          c = cand;
          next = (next + i + 1) % consumers.length;
          break;
        }
      }
      if (!c) return;
      const item = ready.shift()!;
      c.unacked.set(item.seq, item);
      const owner = c;
      owner.consumer.onDelivery({
        messages: item.messages.map((m) => ({ ...m })),
        ack: () => {
          if (owner.stopped || !owner.unacked.delete(item.seq)) return;
          schedulePump();
        },
      });
    }
  };

  return {
    async publish(messages) {
      if (closed) throw new QueueUnavailable("queue closed");
      if (messages.length === 0) return;
      ready.push({ seq: ++seq, messages: messages.map((m) => ({ ...m })) });
      schedulePump();
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
    },
  };
}
