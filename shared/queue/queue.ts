import type { ChatMessage } from "../protocol.ts";

/**
 * The queue role: the durable pipe from gateways to persist. Implemented over RabbitMQ
 * (queue-amqp.ts) and in process (queue-memory.ts); one contract suite (queue.contract.ts) runs on both.
 */

export interface QueueDelivery {
  messages: ChatMessage[];
  /** Removes the delivery from the queue. Call only after its messages are committed. */
  ack(): void;
}

export interface QueueConsumer {
  /** Deliveries arrive in queue order; unacked ones are redelivered if the consumer goes away. */
  onDelivery(delivery: QueueDelivery): void;
}

export interface MessageQueue {
  /**
   * Resolves once the queue holds every message durably (the broker's publisher confirm); rejects
   * with QueueUnavailable otherwise. One call may carry many messages in one broker message.
   */
  publish(messages: ChatMessage[]): Promise<void>;
  /**
   * Starts consuming with at most `prefetch` unacked messages. Any number of consumers share the
   * queue: each delivery goes to one of them, and an unacked one to another when its consumer goes. Unparseable broker
   * messages are dead-lettered with a log line and never reach the consumer.
   */
  consume(consumer: QueueConsumer, opts: { prefetch: number }): Promise<{ stop(): Promise<void> }>;
  /** True while connected (for /health). */
  ready(): boolean;
  close(): Promise<void>;
}

export class QueueUnavailable extends Error {}

/** RabbitMQ topology shared by publishers and consumers. */
export const QUEUE_TOPOLOGY = {
  queue: "chat.stream",
  deadLetterExchange: "chat.stream.dlx",
  deadLetterQueue: "chat.stream.dead",
} as const;
