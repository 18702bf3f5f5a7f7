import { afterAll, describe, expect, test } from "bun:test";
import { BACKPRESSURE_LIMIT, IDLE_TIMEOUT_S } from "../services/ws/gateway.ts";
import { mintToken, uniqueUser } from "./client.ts";
import { alive, connectReady, httpStatus, metric, presence, rssBytes, Sender, waitUntil, startHealthyCluster } from "./chaos.ts";
import type { Cluster } from "../scripts/cluster.ts";

// Resource limits: a client that stops reading is cut off once its outbound buffer passes
// BACKPRESSURE_LIMIT (the gateway's memory stays bounded and it keeps serving others), and the
// per-user rate limit answers a burst with `rate_limited` errors carrying the send ids.

const clusters: Cluster[] = [];
afterAll(async () => {
  await Promise.all(clusters.map((c) => c.stop()));
});

const IDLE_CLIENT = new URL("./fixtures/idle-client.ts", import.meta.url).pathname;

/** Runs the idle client as its own process and resolves once it is registered. */
async function spawnIdleClient(url: string, token: string) {
  const proc = Bun.spawn(["bun", "run", IDLE_CLIENT, url, token], { stdout: "pipe", stderr: "inherit" });
  const lines: string[] = [];
  let onLine: (() => void) | undefined;
  void (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        onLine?.();
      }
    }
  })();
  const line = (pred: (l: string) => boolean, what: string, timeoutMs = 15_000) =>
    waitUntil(what, () => lines.find(pred), timeoutMs, 20).then((r) => r.value);
  await line((l) => l === "ready", "the idle client to be ready");
  return { proc, line };
}

describe("a silently dead client", () => {
  test("is closed and shown offline within about IDLE_TIMEOUT_S (it answers no pings)", async () => {
    const cluster = await startHealthyCluster({ ws: 1 });
    clusters.push(cluster);
    const url = cluster.wsUrls[0]!;
    const frozen = uniqueUser("frozen");
    const watcher = uniqueUser("watcher");
    const idle = await spawnIdleClient(url, await mintToken(frozen, cluster.jwtSecret));
    expect((await presence(url, watcher, cluster.jwtSecret, [frozen]))[frozen]).toBe(true);
    idle.proc.kill("SIGSTOP"); // the network freezes: no frame, no pong
    try {
      const t0 = performance.now();
      const { ms } = await waitUntil("the frozen user shown offline", async () => !(await presence(url, watcher, cluster.jwtSecret, [frozen]))[frozen], 3 * IDLE_TIMEOUT_S * 1000, 200);
      console.log(`silently dead client: offline after ${ms} ms (idle timeout ${IDLE_TIMEOUT_S} s), measured from the freeze ${Math.round(performance.now() - t0)} ms`);
    } finally {
      idle.proc.kill("SIGKILL");
    }
  }, 60_000);
});

describe("a client that does not read", () => {
  test(
    "is disconnected once its outbound buffer passes the limit; memory stays bounded and others are served",
    async () => {
      const cluster = await startHealthyCluster({ ws: 1 });
      clusters.push(cluster);
      const url = cluster.wsUrls[0]!;
      const wsPid = cluster.ws[0]!.proc.pid;
      const slow = uniqueUser("slow");
      const watcher = uniqueUser("watcher");
      const idle = await spawnIdleClient(url, await mintToken(slow, cluster.jwtSecret));
      const observer = await connectReady(url, uniqueUser("observer"), cluster.jwtSecret);
      expect((await presence(url, watcher, cluster.jwtSecret, [slow]))[slow]).toBe(true);
      const BODY = "x".repeat(4000);
      const frameBytes = BODY.length + 200;
      const flood = (to: string, perSender: number) =>
        Array.from({ length: 4 }, () => new Sender({ user: uniqueUser("flood"), secret: cluster.jwtSecret, to, total: perSender, window: 50, retryDelayMs: 100, body: () => BODY }));

      // Warm-up: a flood to a client that reads grows the gateway's heap and allocator towards
      // their working size (Bun returns little of it to the OS), so that the growth measured below
      // is mostly what the gateway keeps, not what it needs to handle a flood at all.
      const reader = await connectReady(url, uniqueUser("reader"), cluster.jwtSecret);
      const warm = flood(reader.user, 2000);
      try {
        await Promise.all(warm.map((s) => s.connect(url)));
        await Promise.all(warm.map((s) => s.finish(120_000)));
      } finally {
        for (const s of warm) s.close();
        reader.close();
      }
      const rssBefore = await rssBytes(wsPid);
      const connsBefore = await metric(url, "ws_connections");

      // Freeze the client: from now on it reads nothing and the kernel buffers fill up, then the gateway's.
      idle.proc.kill("SIGSTOP");
      const PER_SENDER = 16_000;
      const senders = flood(slow, PER_SENDER);
      let closedAtAcks = 0;
      let peakRss = rssBefore;
      const t0 = performance.now();
      try {
        await Promise.all(senders.map((s) => s.connect(url)));
        const acked = () => senders.reduce((a, s) => a + s.acked.size, 0);
        const offline = await waitUntil(
          "the gateway to drop the slow client",
          async () => {
            peakRss = Math.max(peakRss, await rssBytes(wsPid));
            return (await presence(url, watcher, cluster.jwtSecret, [slow]))[slow] === false;
          },
          60_000,
          50,
        );
        closedAtAcks = acked();
        const cutMs = offline.ms;
        // Keep flooding the (now offline) user: nothing accumulates for them any more.
        await Promise.all(senders.map((s) => s.finish(120_000)));
        for (let i = 0; i < 5; i++) peakRss = Math.max(peakRss, await rssBytes(wsPid));
        const rssAfter = await rssBytes(wsPid);
        const connsAfter = await metric(url, "ws_connections");
        const total = acked();

        // The instance still serves others, live.
        const sender = await connectReady(url, uniqueUser("later"), cluster.jwtSecret);
        const ack = await sender.sendMessage({ to: observer.user }, "still serving");
        expect(ack.type).toBe("ack");
        await observer.waitFor((f) => f.type === "message" && f.msgId === ack.msgId, "live delivery to a reader", 5000);
        expect(await httpStatus(`${url}/health`)).toBe(200);
        expect(alive(cluster.ws[0]!)).toBe(true);

        // Unfreeze the client: it drains what the kernel held, then sees the connection is gone.
        idle.proc.kill("SIGCONT");
        const end = await idle.line((l) => l.startsWith("closed "), "the idle client to see the close", 30_000);
        const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
        console.log(
          `slow client: cut off after ${cutMs} ms, when ${closedAtAcks} messages (~${mb(closedAtAcks * frameBytes)}) had been acked for it ` +
            `(limit ${mb(BACKPRESSURE_LIMIT)} + kernel buffers); it then reported "${end}" (~${mb(Number(/after (\d+)/.exec(end)?.[1] ?? 0) * frameBytes)} read); ` +
            `${total} messages (~${mb(total * frameBytes)}) flooded in all; gateway RSS ${mb(rssBefore)} before, peak ${mb(peakRss)}, ${mb(rssAfter)} after; ` +
            `ws_connections ${connsBefore} before, ${connsAfter} after (observer, later and flooders still open)`,
        );
        expect(total).toBe(senders.length * PER_SENDER);
        expect(closedAtAcks).toBeLessThan(total);
        // Bounded: the gateway keeps none of the flood (~256 MiB). Handling it grows the RSS anyway
        // (garbage not yet collected, allocator caches): measured at 36 to 120 MiB after the warm-up
        // on a 2-core machine. A gateway that kept the flooded messages grows by at least their size
        // on top of that (measured: 350 MiB with every message retained). Three quarters of the
        // flood lies between the two; with the old bound of 128 MiB for a 32 MiB flood, keeping
        // every frame passed.
        expect(peakRss - rssBefore).toBeLessThan(total * frameBytes * 0.75);
        expect(end).toMatch(/^closed \d+ after \d+ messages$/);
        sender.close();
      } finally {
        idle.proc.kill("SIGCONT");
        idle.proc.kill("SIGKILL");
        for (const s of senders) s.close();
        observer.close();
      }
      expect(performance.now() - t0).toBeLessThan(120_000);
    },
    150_000,
  );
});

describe("per-user rate limit", () => {
  test("a burst past RATE_LIMIT_BURST gets rate_limited errors with ids, while other users continue", async () => {
    const cluster = await startHealthyCluster({ ws: 1, env: { RATE_LIMIT_PER_SEC: "5", RATE_LIMIT_BURST: "5" } });
    clusters.push(cluster);
    const url = cluster.wsUrls[0]!;
    const [greedy, calm, bob] = [uniqueUser("greedy"), uniqueUser("calm"), uniqueUser("bob")];
    const g = await connectReady(url, greedy, cluster.jwtSecret);
    const c = await connectReady(url, calm, cluster.jwtSecret);
    const ids = Array.from({ length: 30 }, (_, i) => `burst-${i}`);
    for (const id of ids) g.send({ type: "send", id, to: bob, body: id });
    const replies = await Promise.all(ids.map((id) => g.waitFor((f) => (f.type === "ack" || f.type === "error") && f.id === id, `reply to ${id}`)));
    const acked = replies.filter((f) => f.type === "ack");
    const limited = replies.filter((f) => f.type === "error" && f.code === "rate_limited");
    // Meanwhile another user is unaffected.
    const calmReplies = [];
    for (let i = 0; i < 4; i++) calmReplies.push(await c.sendMessage({ to: bob }, `calm ${i}`));
    // The greedy user gets through again once the bucket refills (5 per second).
    const retry = await waitUntil(
      "a rate-limited send to be accepted after the refill",
      async () => {
        const id = limited[0]!.id;
        const reply = g.next((f) => (f.type === "ack" || f.type === "error") && f.id === id, `reply to ${id}`);
        g.send({ type: "send", id, to: bob, body: id });
        const f = await reply;
        return f.type === "ack" ? f : undefined;
      },
      5000,
      250,
    );
    console.log(
      `rate limit 5/s burst 5: of 30 sent at once ${acked.length} acked, ${limited.length} rate_limited (ids ${limited.slice(0, 3).map((f) => f.id).join(", ")}, …); ` +
        `the other user's 4 sends: ${calmReplies.map((f) => f.type).join(",")}; a limited id accepted again after ${retry.ms} ms`,
    );
    expect(acked.length + limited.length).toBe(30);
    expect(acked.length).toBeGreaterThanOrEqual(5);
    expect(acked.length).toBeLessThanOrEqual(7);
    expect(limited.length).toBeGreaterThanOrEqual(23);
    for (const f of limited) expect(ids).toContain(f.id);
    expect(calmReplies.every((f) => f.type === "ack")).toBe(true);
    g.close();
    c.close();
  });
});
