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

/** A consumer that records what arrives and lets a test await a condition on it. */
export function recorder(auto: { ack?: boolean } = {}) {
  const received: QueueDelivery[] = [];
  const watchers = new Set<() => void>();
  const consumer: QueueConsumer = {
    onDelivery(delivery) {
      received.push(delivery);
      if (auto.ack) delivery.ack();
      notify();
    },
  };
  const notify = () => {
    for (const w of [...watchers]) w();
  };
  const deliveries = () => [...received];
  return {
    consumer,
    deliveries,
    messages: () => received.flatMap((d) => d.messages),
    /** Resolves when `pred` holds; it is checked after every delivery. */
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
          reject(new Error(`timed out waiting for ${what}; ${received.length} deliveries`));
        }, 4000);
        watchers.add(check);
      });
    },
  };
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
        },
        { prefetch },
      );
      cleanups.push(sub.stop);
      await allSeen;
      expect(maxHeld).toBe(prefetch);
      for (const d of held.splice(0)) d.ack();
    });

    test("consumers on one queue share it: deliveries alternate between them, each delivered once", async () => {
      const { queue, another } = await setup();
      const other = await another();
      const a = recorder();
      const b = recorder();
      cleanups.push((await queue.consume(a.consumer, { prefetch: 20 })).stop);
      cleanups.push((await other.consume(b.consumer, { prefetch: 20 })).stop);
      const ms = Array.from({ length: 10 }, () => chatMessage("rr"));
      for (const m of ms) await queue.publish([m]);
      const total = () => a.deliveries().length + b.deliveries().length;
      await Promise.race([a.until(() => total() === 10, "10 deliveries"), b.until(() => total() === 10, "10 deliveries")]);
      // Round robin: both take part (an exact 5/5 split is the broker's business, both getting a share is not).
      expect(a.deliveries().length).toBeGreaterThanOrEqual(3);
      expect(b.deliveries().length).toBeGreaterThanOrEqual(3);
      expect(ids([...a.messages(), ...b.messages()]).sort()).toEqual(ids(ms).sort());
      await Bun.sleep(50);
      expect(total()).toBe(10); // nothing delivered twice while both hold their deliveries unacked
    });

    test("a stopped consumer's unacked deliveries go to the other consumer; its acked ones do not", async () => {
      const { queue, another } = await setup();
      const other = await another();
      const a = recorder();
      const b = recorder();
      const subA = await queue.consume(a.consumer, { prefetch: 20 });
      cleanups.push(subA.stop);
      cleanups.push((await other.consume(b.consumer, { prefetch: 20 })).stop);
      const ms = Array.from({ length: 10 }, () => chatMessage("handover"));
      for (const m of ms) await queue.publish([m]);
      const total = () => a.deliveries().length + b.deliveries().length;
      await Promise.race([a.until(() => total() === 10, "10 deliveries"), b.until(() => total() === 10, "10 deliveries")]);
      const heldByA = a.deliveries();
      expect(heldByA.length).toBeGreaterThanOrEqual(2);
      heldByA[0]!.ack();
      const acked = heldByA[0]!.messages[0]!.msgId;
      const unacked = ids(heldByA.slice(1).flatMap((d) => d.messages));
      const bBefore = ids(b.messages());
      await subA.stop();
      await b.until(() => b.deliveries().length === bBefore.length + unacked.length, "A's unacked deliveries at B");
      const redelivered = ids(b.messages()).slice(bBefore.length);
      expect([...redelivered].sort()).toEqual([...unacked].sort());
      expect(redelivered).not.toContain(acked);
      for (const d of b.deliveries()) d.ack();
      // everything published reached B, apart from the one A acked
      expect(ids(b.messages()).sort()).toEqual(ids(ms).filter((id) => id !== acked).sort());
      await Bun.sleep(50);
      expect(a.deliveries().length).toBe(heldByA.length);
    });

    test("messages published while nobody consumes wait in the queue and arrive once someone does", async () => {
      const { queue } = await setup();
      const m = chatMessage("wait");
      await queue.publish([m]);
      await Bun.sleep(100);
      const r = recorder({ ack: true });
      cleanups.push((await queue.consume(r.consumer, { prefetch: 10 })).stop);
      await r.until(() => r.messages().length === 1, "the waiting message");
      expect(r.messages()).toEqual([m]);
    });

    test("after close, publish and consume reject with QueueUnavailable", async () => {
      const { queue } = await setup();
      await queue.close();
      expect(queue.ready()).toBe(false);
      expect(await queue.publish([chatMessage("closed")]).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
      expect(await queue.consume(recorder().consumer, { prefetch: 1 }).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
    });
  });
}
