import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import net from "node:net";
import amqp from "amqplib";
import type { Channel, ChannelModel } from "amqplib";
import { createAmqpConnection, type AmqpConnection } from "../amqp.ts";
import { retryForever } from "../backoff.ts";
import { silentLogger } from "../log.ts";
import { createAmqpQueue, queueTopology, type AmqpQueueOptions } from "./queue-amqp.ts";
import { chatMessage, queueContract, recorder } from "./queue.contract.ts";
import { QUEUE_TOPOLOGY, QueueUnavailable } from "./queue.ts";

const AMQP_URL = process.env.AMQP_URL!;

let admin: ChannelModel;
let adminCh: Channel;
beforeAll(async () => {
  admin = await amqp.connect(AMQP_URL);
  adminCh = await admin.createChannel();
});
afterAll(async () => {
  await admin.close();
});

async function deleteTopology(queue: string) {
  const t = queueTopology({ queue });
  await adminCh.deleteQueue(t.queue);
  await adminCh.deleteQueue(t.deadLetterQueue);
  await adminCh.deleteExchange(t.deadLetterExchange);
}

/** A connection and queue on a fresh queue name, closed and deleted by `cleanup`. */
async function openQueue(queue: string, extra: Partial<AmqpQueueOptions> = {}, url = AMQP_URL) {
  const conn = createAmqpConnection(url, silentLogger, { name: "queue-amqp.test" });
  const q = createAmqpQueue(conn, { queue, log: silentLogger, ...extra });
  return { conn, queue: q, close: async () => (await q.close(), await conn.close()) };
}

const withTimeout = (ms: number) => AbortSignal.timeout(ms);

queueContract("amqp", async () => {
  const name = `test.q.${randomUUID()}`;
  const closers: Array<() => Promise<void>> = [];
  const open = async () => {
    const h = await openQueue(name);
    closers.push(h.close);
    await h.queue.whenReady(withTimeout(4000));
    return h.queue;
  };
  const queue = await open();
  return {
    queue,
    another: open,
    cleanup: async () => {
      for (const c of closers) await c();
      await deleteTopology(name);
    },
  };
});

/**
 * A TCP proxy in front of the broker that a test can cut (an abrupt network loss), make refuse,
 * or make hold back what the broker sends (its confirms and replies) while the client's bytes still
 * reach the broker.
 */
function createTcpProxy(target: URL) {
  const sockets = new Set<net.Socket>();
  const upstreams: Array<{ upstream: net.Socket; client: net.Socket }> = [];
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return void client.destroy();
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
    upstreams.push({ upstream, client });
  });
  const listening = new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    async url() {
      await listening;
      const port = (server.address() as net.AddressInfo).port;
      const u = new URL(target);
      u.host = `127.0.0.1:${port}`;
      return u.toString();
    },
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      upstreams.length = 0;
    },
    holdReplies() {
      for (const { upstream, client } of upstreams) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    refuse(on: boolean) {
      refusing = on;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Retries an operation that fails fast (QueueUnavailable) until the queue is back. */
const eventually = <T>(op: () => Promise<T>) => retryForever(op, { baseMs: 20, capMs: 200, signal: withTimeout(8000) });

describe("amqp queue specifics", () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const fresh = async (extra: Partial<AmqpQueueOptions> = {}, url = AMQP_URL) => {
    const name = `test.q.${randomUUID()}`;
    const h = await openQueue(name, extra, url);
    cleanups.push(() => deleteTopology(name));
    cleanups.push(h.close);
    return { name, ...h };
  };

  test("declares a durable quorum queue with dead-lettering and without single active consumer, and its dead-letter queue (quorum too)", async () => {
    const { name, queue } = await fresh();
    await queue.whenReady(withTimeout(4000));
    const t = queueTopology({ queue: name });
    expect(t.deadLetterQueue).toBe(`${name}.dead`);
    expect(queueTopology({})).toEqual({ ...QUEUE_TOPOLOGY });
    // re-declaring with the same arguments succeeds; any other arguments are refused by the broker
    const ch = await admin.createChannel();
    await ch.assertQueue(name, { durable: true, deadLetterExchange: t.deadLetterExchange, arguments: { "x-queue-type": "quorum" } });
    expect((await ch.checkQueue(t.deadLetterQueue)).queue).toBe(t.deadLetterQueue);
    // the dead-letter queue is a quorum queue too (a classic one is unusable while its one node is down)
    await ch.assertQueue(t.deadLetterQueue, { durable: true, arguments: { "x-queue-type": "quorum" } });
    await ch.close();
    // ...such as single active consumer, which the queue no longer has (PRECONDITION_FAILED closes the channel)
    const sac = await admin.createChannel();
    sac.on("error", () => {});
    const refused = await sac
      .assertQueue(name, { durable: true, deadLetterExchange: t.deadLetterExchange, arguments: { "x-queue-type": "quorum", "x-single-active-consumer": true } })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Error);
    expect(String((refused as Error).message)).toContain("x-single-active-consumer");
  });

  test("publishes one persistent JSON broker message per publish call", async () => {
    const { name, queue } = await fresh();
    await queue.whenReady(withTimeout(4000));
    const ms = [chatMessage("raw"), chatMessage("raw")];
    await queue.publish(ms);
    // Read it with a consumer, as the service does.
    const ch = await admin.createChannel();
    const got = await new Promise<import("amqplib").ConsumeMessage>((resolve) => {
      void ch.consume(name, (m) => m && resolve(m), { noAck: true });
    });
    await ch.close();
    expect(got.properties.contentType).toBe("application/json");
    expect(got.properties.deliveryMode).toBe(2);
    expect(JSON.parse(got.content.toString())).toEqual(ms);
  });

  test("an invalid broker message is dead-lettered with a count, and the queue keeps flowing", async () => {
    const reasons: string[] = [];
    const { name, queue } = await fresh({ onDeadLetter: (r) => reasons.push(r) });
    await queue.whenReady(withTimeout(4000));
    const r = recorder({ ack: true });
    cleanups.push((await queue.consume(r.consumer, { prefetch: 10 })).stop);
    const good = chatMessage("dl");
    adminCh.sendToQueue(name, Buffer.from("not json"));
    adminCh.sendToQueue(name, Buffer.from(JSON.stringify([{ ...good, from: "no spaces allowed" }])));
    adminCh.sendToQueue(name, Buffer.from(JSON.stringify([{ ...good, group: "g" }])));
    // The raw publishes are unconfirmed and on another channel: wait for the three verdicts.
    for (const until = Date.now() + 5000; reasons.length < 3 && Date.now() < until; ) await Bun.sleep(20);
    await queue.publish([good]);
    await r.until(() => r.messages().length >= 1, "the valid message");
    await Bun.sleep(50);
    expect(r.messages()).toEqual([good]);
    expect(reasons.length).toBe(3);
    const dlq = queueTopology({ queue: name }).deadLetterQueue;
    const dead: string[] = [];
    for (let m = await adminCh.get(dlq, { noAck: true }); m; m = await adminCh.get(dlq, { noAck: true })) dead.push(m.content.toString());
    expect(dead.length).toBe(3);
    expect(dead[0]).toBe("not json");
  });

  test("while the broker is unreachable: starts anyway, publish fails fast, then it connects by itself", async () => {
    const proxy = createTcpProxy(new URL(AMQP_URL));
    cleanups.push(proxy.close);
    proxy.refuse(true);
    const { queue, conn } = await fresh({}, await proxy.url());
    const r = recorder({ ack: true });
    const sub = await queue.consume(r.consumer, { prefetch: 10 });
    cleanups.push(sub.stop);
    expect(conn.ready()).toBe(false);
    expect(queue.ready()).toBe(false);
    expect(await queue.publish([chatMessage("down")]).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
    proxy.refuse(false);
    await queue.whenReady(withTimeout(8000));
    const m = chatMessage("down");
    await queue.publish([m]);
    await r.until(() => r.messages().length >= 1, "the message");
    expect(r.messages()).toEqual([m]);
  });

  test("after a connection loss it reconnects, re-creates the consumer, and redelivers what was unacked", async () => {
    const proxy = createTcpProxy(new URL(AMQP_URL));
    cleanups.push(proxy.close);
    const viaProxy = await fresh({}, await proxy.url());
    const direct = await openQueue(viaProxy.name, { publisher: true });
    cleanups.push(direct.close);
    await Promise.all([viaProxy.queue.whenReady(withTimeout(4000)), direct.queue.whenReady(withTimeout(4000))]);

    const r = recorder();
    cleanups.push((await viaProxy.queue.consume(r.consumer, { prefetch: 10 })).stop);
    const m1 = chatMessage("cut");
    await direct.queue.publish([m1]);
    await r.until(() => r.deliveries().length === 1, "the first delivery");

    proxy.cut();
    for (const until = Date.now() + 4000; viaProxy.queue.ready() && Date.now() < until; ) await Bun.sleep(10);
    expect(viaProxy.queue.ready()).toBe(false);
    r.deliveries()[0]!.ack(); // on the dead channel: ignored, the broker redelivers
    await r.until(() => r.deliveries().length === 2, "the redelivery");
    expect(r.deliveries()[1]!.messages).toEqual([m1]);
    r.deliveries()[1]!.ack();

    const m2 = chatMessage("cut");
    await eventually(() => viaProxy.queue.publish([m2]));
    await r.until(() => r.messages().some((m) => m.msgId === m2.msgId), "the message published after the reconnect");
    for (const d of r.deliveries()) d.ack();
    expect(r.messages().map((m) => m.msgId)).toEqual([m1.msgId, m1.msgId, m2.msgId]);
  });

  for (const retryMs of [0, undefined])
    test(`publishes in flight when the connection drops ${retryMs === 0 ? "reject with QueueUnavailable (retryMs 0)" : "are published again on the next connection (default retryMs)"}; none hangs`, async () => {
      const proxy = createTcpProxy(new URL(AMQP_URL));
      cleanups.push(proxy.close);
      const { name, queue } = await fresh({ retryMs }, await proxy.url());
      await queue.whenReady(withTimeout(4000));
      // The broker gets every publish but its confirms are held back, so all 200 are in flight at the cut.
      proxy.holdReplies();
      const publishes = Array.from({ length: 200 }, () => queue.publish([chatMessage("drop")]).then(() => "ok", (e: unknown) => e));
      await eventually(async () => {
        const { messageCount } = await adminCh.checkQueue(name);
        if (messageCount < 200) throw new Error(`the broker holds ${messageCount} of 200 publishes`);
      });
      proxy.cut();
      const results = await Promise.all(publishes);
      if (retryMs === 0) {
        expect(results.filter((x) => x === "ok")).toEqual([]);
        expect(results.filter((x) => x instanceof QueueUnavailable).length).toBe(200);
      } else {
        // reconnected at once and confirmed there: every one resolves (the broker holds duplicates, harmless)
        expect(results.filter((x) => x !== "ok")).toEqual([]);
        await eventually(async () => {
          const { messageCount } = await adminCh.checkQueue(name);
          if (messageCount < 400) throw new Error(`the broker holds ${messageCount} of 400 (200 + their 200 resends)`);
        });
      }
      await eventually(() => queue.publish([chatMessage("drop")]));
    });

  test("a consumer-only handle does not publish", async () => {
    const { queue } = await fresh({ publisher: false });
    expect(await queue.publish([chatMessage("nop")]).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailable);
  });
});

describe("amqp connection", () => {
  test("close() while still connecting stops retrying and resolves", async () => {
    const proxy = createTcpProxy(new URL(AMQP_URL));
    proxy.refuse(true);
    const conn: AmqpConnection = createAmqpConnection(await proxy.url(), silentLogger);
    const waiting = conn.whenReady().catch((e: unknown) => e);
    await conn.close();
    expect(await waiting).toBeInstanceOf(Error);
    expect(conn.ready()).toBe(false);
    await proxy.close();
  });

  test("with several nodes it connects to a reachable one, and moves to another when its node goes", async () => {
    const a = createTcpProxy(new URL(AMQP_URL));
    const b = createTcpProxy(new URL(AMQP_URL));
    a.refuse(true);
    const conn = createAmqpConnection(`${await a.url()},${await b.url()}`, silentLogger);
    const name = `test.q.${randomUUID()}`;
    const queue = createAmqpQueue(conn, { queue: name, log: silentLogger });
    try {
      await queue.whenReady(withTimeout(4000));
      await queue.publish([chatMessage("via b")]);
      // b's node dies (and stays dead): the connection moves to a
      a.refuse(false);
      b.refuse(true);
      b.cut();
      await eventually(() => queue.publish([chatMessage("via a")]));
      expect(conn.ready()).toBe(true);
    } finally {
      await queue.close();
      await conn.close();
      await Promise.all([a.close(), b.close()]);
      await deleteTopology(name);
    }
  });

  test("a channel closed by the broker alone is re-created on the same connection", async () => {
    const conn = createAmqpConnection(AMQP_URL, silentLogger);
    const opened: Channel[] = [];
    let onOpen = () => {};
    await conn.whenReady();
    const kept = conn.keepChannel({
      name: "provoke",
      setup: async () => {},
      onOpen: (ch) => (opened.push(ch), onOpen()),
    });
    await kept.settled();
    const ch = kept.current()!;
    const reopened = new Promise<void>((resolve) => (onOpen = resolve));
    // a channel error: redeclaring a queue with other arguments makes the broker close the channel
    const name = `test.q.${randomUUID()}`;
    await ch.assertQueue(name, { durable: false, autoDelete: true });
    expect(await ch.assertQueue(name, { durable: true }).catch((e: unknown) => e)).toBeInstanceOf(Error);
    await reopened;
    expect(opened.length).toBe(2);
    expect(kept.current()).toBe(opened[1]);
    expect(conn.ready()).toBe(true);
    await conn.close();
    expect(kept.current()).toBeUndefined();
  });
});
