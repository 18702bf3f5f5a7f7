import { afterEach, describe, expect, test } from "bun:test";
import type { ChatMessage } from "../protocol.ts";
import { QueueUnavailable, type MessageQueue, type QueueConsumer, type QueueDelivery } from "./queue.ts";

/**
 * The one behaviour suite for every MessageQueue. `make` gives a fresh, empty, ready queue (a
 * unique queue name on a real broker); `another` a second handle on the same queue, as a second
 * process would hold it.
 */
export interface QueueUnderTest {
  queue: MessageQueue;
  another(): Promise<MessageQueue>;
  cleanup(): Promise<void>;
}

let seq = 0;
export function chatMessage(tag: string, overrides: Partial<ChatMessage> = {}): ChatMessage {
  seq++;
  return { msgId: `${tag}-${seq}`, id: `c${seq}`, from: "alice", to: "bob", body: `hello ${seq}`, ts: 1_700_000_000_000 + seq, ...overrides };
}

type Event = { kind: "delivery"; delivery: QueueDelivery } | { kind: "barrier"; done: () => void };

/** A consumer that records what arrives and lets a test await a condition on it. */
export function recorder(auto: { ack?: boolean; done?: boolean } = {}) {
  const events: Event[] = [];
  const watchers = new Set<() => void>();
  const consumer: QueueConsumer = {
    onDelivery(delivery) {
      events.push({ kind: "delivery", delivery });
      if (auto.ack) delivery.ack();
      notify();
    },
    onBarrier(done) {
      events.push({ kind: "barrier", done });
      if (auto.done) done();
      notify();
    },
  };
  const notify = () => {
    for (const w of [...watchers]) w();
  };
  const deliveries = () => events.flatMap((e) => (e.kind === "delivery" ? [e.delivery] : []));
  const barriers = () => events.flatMap((e) => (e.kind === "barrier" ? [e.done] : []));
  return {
    consumer,
    events,
    deliveries,
    barriers,
    messages: () => deliveries().flatMap((d) => d.messages),
    /** Resolves when `pred` holds; it is checked after every event. */
    until(pred: () => boolean, what = "condition"): Promise<void> {
      if (pred()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred()) return;
          watchers.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`timed out waiting for ${what}; events: ${events.map((e) => e.kind).join(",")}`));
        }, 4000);
        watchers.add(check);
      });
    },
  };
}

function settledFlag(p: Promise<unknown>) {
  const s = { settled: false };
  p.then(
    () => (s.settled = true),
    () => (s.settled = true),
  );
  return s;
}

const ids = (ms: ChatMessage[]) => ms.map((m) => m.msgId);

export function queueContract(name: string, make: () => Promise<QueueUnderTest>) {
  describe(`MessageQueue contract: ${name}`, () => {
    let cur: QueueUnderTest | undefined;
    const cleanups: Array<() => Promise<unknown>> = [];
    const setup = async () => (cur = await make());
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
      await cur?.cleanup();
      cur = undefined;
    });

    test("delivers each publish as one delivery, in publish order, messages intact", async () => {
      const { queue } = await setup();
      const a = [chatMessage("ord"), chatMessage("ord", { to: undefined, group: "g1" })];
      const b = [chatMessage("ord")];
      const c = [chatMessage("ord"), chatMessage("ord"), chatMessage("ord")];
      await queue.publish(a);
      await Promise.all([queue.publish(b), queue.publish([])]);
      await queue.publish(c);
      const r = recorder({ ack: true });
      const sub = await queue.consume(r.consumer, { prefetch: 10 });
      cleanups.push(sub.stop);
      await r.until(() => r.deliveries().length >= 3, "3 deliveries");
      expect(r.deliveries().map((d) => d.messages)).toEqual([a, b, c]);
    });

    test("many publishes in flight at once all resolve and arrive in order", async () => {
      const { queue } = await setup();
      const batches = Array.from({ length: 200 }, () => [chatMessage("many")]);
      await Promise.all(batches.map((b) => queue.publish(b)));
      const r = recorder({ ack: true });
      cleanups.push((await queue.consume(r.consumer, { prefetch: 50 })).stop);
      await r.until(() => r.deliveries().length >= 200, "200 deliveries");
      expect(ids(r.messages()).sort()).toEqual(ids(batches.flat()).sort());
    });

    test("an acked delivery is gone; an unacked one comes back to the next consumer, in order", async () => {
      const { queue } = await setup();
      const ms = [chatMessage("redel"), chatMessage("redel"), chatMessage("redel"), chatMessage("redel")];
      for (const m of ms) await queue.publish([m]);
      const first = recorder();
      const sub1 = await queue.consume(first.consumer, { prefetch: 10 });
      await first.until(() => first.deliveries().length === 4, "4 deliveries");
      first.deliveries()[0]!.ack();
      first.deliveries()[2]!.ack();
      await sub1.stop();
      first.deliveries()[1]!.ack(); // after stop: ignored, the message comes back

      const sentinel = chatMessage("redel");
      await queue.publish([sentinel]);
      const second = recorder({ ack: true });
      cleanups.push((await queue.consume(second.consumer, { prefetch: 10 })).stop);
      await second.until(() => second.messages().some((m) => m.msgId === sentinel.msgId), "the sentinel");
      expect(ids(second.messages())).toEqual([ms[1]!.msgId, ms[3]!.msgId, sentinel.msgId]);
    });

    test("a consumer never holds more than `prefetch` unacked deliveries", async () => {
      const { queue } = await setup();
      const prefetch = 3;
      for (let i = 0; i < 12; i++) await queue.publish([chatMessage("pf")]);
      const held: QueueDelivery[] = [];
      let maxHeld = 0;
      let total = 0;
      let release: () => void = () => {};
      const allSeen = new Promise<void>((resolve) => (release = resolve));
      const sub = await queue.consume(
        {
          onDelivery(d) {
            held.push(d);
            total++;
            maxHeld = Math.max(maxHeld, held.length);
            if (total === 12) release();
            if (held.length === prefetch) setTimeout(() => held.shift()?.ack(), 5);
          },
          onBarrier: (done) => done(),
        },
        { prefetch },
      );
      cleanups.push(sub.stop);
      await allSeen;
      expect(maxHeld).toBe(prefetch);
      for (const d of held.splice(0)) d.ack();
    });

    test("barrier resolves only after the consumer's done, which comes after every earlier delivery", async () => {
      const { queue } = await setup();
      const before = [chatMessage("bar"), chatMessage("bar")];
      await queue.publish([before[0]!]);
      await queue.publish([before[1]!]);
      const r = recorder();
      cleanups.push((await queue.consume(r.consumer, { prefetch: 10 })).stop);
      const barrier = queue.barrier(4000);
      const state = settledFlag(barrier);
      await r.until(() => r.barriers().length === 1, "the barrier");
      expect(r.events.map((e) => e.kind)).toEqual(["delivery", "delivery", "barrier"]);
      expect(ids(r.messages())).toEqual(ids(before));
      await queue.publish([chatMessage("bar")]); // a broker round trip: the barrier still waits
      expect(state.settled).toBe(false);
      for (const d of r.deliveries()) d.ack();
      r.barriers()[0]!();
      await barrier;
    });

    test("concurrent barrier calls share markers: callers during an outstanding marker wait for the next one", async () => {
      const { queue } = await setup();
      const r = recorder();
      cleanups.push((await queue.consume(r.consumer, { prefetch: 10 })).stop);
      const first = queue.barrier(4000);
      await r.until(() => r.barriers().length === 1, "the first marker");
      const later = Array.from({ length: 5 }, () => queue.barrier(4000));
      const laterState = settledFlag(Promise.all(later));
      r.barriers()[0]!();
      await first;
      expect(laterState.settled).toBe(false);
      await r.until(() => r.barriers().length === 2, "the second marker");
      r.barriers()[1]!();
      await Promise.all(later);
      expect(r.barriers().length).toBe(2);
    });

    test("only one consumer is active; a standby takes over, with the unacked deliveries, when it stops", async () => {
      const { queue, another } = await setup();
      const other = await another();
      const a = recorder();
      const b = recorder({ ack: true, done: true });
      const subA = await queue.consume(a.consumer, { prefetch: 10 });
      cleanups.push(subA.stop);
      cleanups.push((await other.consume(b.consumer, { prefetch: 10 })).stop);
      const ms = [chatMessage("sac"), chatMessage("sac"), chatMessage("sac")];
      for (const m of ms) await queue.publish([m]);
      const barrier = queue.barrier(4000);
      await a.until(() => a.barriers().length === 1, "the barrier at the active consumer");
      a.barriers()[0]!();
      await barrier;
      expect(ids(a.messages())).toEqual(ids(ms));
      expect(b.events).toEqual([]);
      await subA.stop();
      await b.until(() => b.deliveries().length === 3, "the standby to get all three");
      expect(ids(b.messages())).toEqual(ids(ms));
    });

    test("barrier rejects with QueueUnavailable after its timeout when nobody consumes, and works once someone does", async () => {
      const { queue } = await setup();
      await queue.publish([chatMessage("to")]);
      const err = await queue.barrier(150).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueueUnavailable);
      const r = recorder({ ack: true, done: true });
      cleanups.push((await queue.consume(r.consumer, { prefetch: 10 })).stop);
      await queue.barrier(4000);
      expect(r.messages().length).toBe(1);
    });

    test("after close, publish and barrier reject with QueueUnavailable", async () => {
      const { queue } = await setup();
      await queue.close();
      expect(queue.ready()).toBe(false);
      expect(await queue.publish([chatMessage("closed")]).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
      expect(await queue.barrier(100).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
    });
  });
}
