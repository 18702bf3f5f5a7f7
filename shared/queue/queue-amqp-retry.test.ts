import { expect, test } from "bun:test";
import type { ConfirmChannel } from "amqplib";
import type { AmqpConnection, ChannelSpec, KeptChannel } from "../amqp.ts";
import { silentLogger } from "../log.ts";
import { createAmqpQueue } from "./queue-amqp.ts";
import { chatMessage } from "./queue.contract.ts";
import { QueueUnavailable } from "./queue.ts";

/**
 * A fake broker connection at the far side of AmqpConnection: each confirm channel answers its
 * publishes by `answer(channelNumber)` (true: ack, false: nack, "hang": never); closing a channel opens the next.
 */
function fakeConnection(answer: (channel: number) => boolean | "hang") {
  let closeCurrent = async () => {};
  const published: Array<{ channel: number; body: string }> = [];
  let opened = 0;
  const conn: AmqpConnection = {
    ready: () => true,
    whenReady: async () => {},
    keepChannel: () => {
      throw new Error("not used");
    },
    keepConfirmChannel(spec: ChannelSpec<ConfirmChannel>): KeptChannel<ConfirmChannel> {
      let current: ConfirmChannel | undefined;
      let stopped = false;
      const open = async () => {
        const n = ++opened;
        const handlers: Record<string, (...a: unknown[]) => void> = {};
        const ch = {
          assertExchange: async () => {},
          assertQueue: async () => {},
          bindQueue: async () => {},
          on: (ev: string, fn: (...a: unknown[]) => void) => void (handlers[ev] = fn),
          publish: (_x: string, _q: string, body: Buffer, _o: unknown, cb: (err: unknown) => void) => {
            published.push({ channel: n, body: body.toString() });
            const ok = answer(n);
            if (ok === "hang") return true;
            queueMicrotask(() => cb(ok ? null : new Error("nack")));
            return true;
          },
          close: async () => {
            if (current !== ch) return;
            current = undefined;
            spec.onClose?.(ch);
            if (!stopped) setTimeout(open, 5);
          },
        } as unknown as ConfirmChannel;
        await spec.setup(ch);
        current = ch;
        spec.onOpen?.(ch);
      };
      closeCurrent = async () => void (await current?.close());
      const first = open();
      return {
        current: () => current,
        settled: () => first,
        stop: async () => {
          stopped = true;
          await current?.close();
        },
      };
    },
    close: async () => {},
  };
  return { conn, published, opened: () => opened, closeCurrent: () => closeCurrent() };
}

test("a nacked publish reopens the channel and is published again there; the caller sees one success", async () => {
  // channel 1 nacks everything (the cluster trial: nacks until the channel is reopened), channel 2 acks
  const fake = fakeConnection((n) => n >= 2);
  const queue = createAmqpQueue(fake.conn, { log: silentLogger, queue: "q" });
  await Bun.sleep(0);
  const m = chatMessage("x");
  await queue.publish([m]);
  expect(fake.opened()).toBe(2);
  expect(fake.published.map((p) => p.channel)).toEqual([1, 2]);
  expect(fake.published[0]!.body).toBe(fake.published[1]!.body);
  await queue.close();
});

test("a publish nacked for longer than retryMs rejects with QueueUnavailable", async () => {
  const fake = fakeConnection(() => false);
  const queue = createAmqpQueue(fake.conn, { log: silentLogger, queue: "q", retryMs: 100 });
  await Bun.sleep(0);
  const err = await queue.publish([chatMessage("x")]).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(QueueUnavailable);
  expect((err as Error).message).toBe("the broker refused the message");
  expect(fake.opened()).toBeGreaterThan(2);
  await queue.close();
});

test("unconfirmed publishes of a channel that closed (its node died) are published again on the next one", async () => {
  const fake = fakeConnection((n) => (n === 1 ? "hang" : true));
  const queue = createAmqpQueue(fake.conn, { log: silentLogger, queue: "q" });
  await Bun.sleep(0);
  const p = queue.publish([chatMessage("y")]);
  await Bun.sleep(10);
  await fake.closeCurrent();
  await p;
  expect(fake.published.map((x) => x.channel)).toEqual([1, 2]);
  await queue.close();
});
