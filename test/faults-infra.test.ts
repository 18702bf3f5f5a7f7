import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type postgres from "postgres";
import { uniqueUser } from "./client.ts";
import { alive, connectReady, diff, httpStatus, openSql, presence, Recipient, restoreInfra, senderToRecipient, storedIds, waitUntil, startHealthyCluster } from "./chaos.ts";
import { testInfra } from "./env.ts";
import { spawnService, stopService, type Cluster, type ServiceProcess } from "../scripts/cluster.ts";

// Dependency faults (CONTRACT.md sections 1 and 6): RabbitMQ, Redis or PostgreSQL stopped or killed
// under a running stream, and services started while a dependency is down. While it is down:
// /health 503, sends answered (ack or `unavailable`, never silence), no process exits. After it is
// back: everything reconnects by itself, and acked == stored == received.
// Every test starts what it stopped in a `finally` and waits until the whole cluster is healthy.

const infra = testInfra();
let cluster: Cluster;
let sql: postgres.Sql;

beforeAll(async () => {
  cluster = await startHealthyCluster({ ws: 2 });
  sql = openSql();
}, 60_000);
afterAll(async () => {
  if (infra) await restoreInfra([]);
  await sql?.end();
  await cluster?.stop();
});

const serviceUrls = () => [cluster.discoverUrl, ...cluster.wsUrls, cluster.persistUrl];
/** "discover 12, ws1 30, ..." from restoreInfra's answer. */
const recoveryText = (times: Record<string, number>) => {
  const names = new Map([[cluster.discoverUrl, "discover"], ...cluster.wsUrls.map((u, i) => [u, `ws${i + 1}`] as [string, string]), [cluster.persistUrl, "persist"]]);
  return Object.entries(times)
    .map(([u, ms]) => `${names.get(u) ?? u} ${ms}`)
    .join(", ");
};
const ok = (name: string) => `${name}: 0 missing [], 0 extra []`;
const status = async (urls: string[]) => Promise.all(urls.map((u) => httpStatus(`${u}/health`)));
let lastStatuses = "";
const allAre = (code: number) => async (urls: string[]) => {
  const st = await status(urls);
  lastStatuses = st.join(",");
  if (!st.every((s) => s === code)) throw new Error(`statuses ${lastStatuses}`);
  return true;
};

/** On failure, the last lines each service logged (they run with LOG_LEVEL=warn). */
function withLogs<T>(p: Promise<T>): Promise<T> {
  return p.catch((err) => {
    const logs = [cluster.discover, ...cluster.ws, cluster.persist].map((s) => `[${s.name}] ${s.logs.slice(-8).join(`\n[${s.name}] `)}`).join("\n");
    throw new Error(`${String(err)}\n--- service logs ---\n${logs.slice(-6000)}`);
  });
}

async function rowsFor(from: string, to: string, acked: Set<string>, timeoutMs = 20_000) {
  let ids: string[] = [];
  const t0 = performance.now();
  await waitUntil(`rows ${from}→${to} to reach ${acked.size}`, async () => {
    ids = await storedIds(sql, from, to);
    return ids.length >= acked.size;
  }, timeoutMs).catch(async (err) => {
    // Diagnostics: what persist says about it.
    const m = await fetch(`${cluster.persistUrl}/metrics`).then((r) => r.text()).catch((e) => String(e));
    const lines = m.split("\n").filter((l) => /^persist_(rows|batches|db_errors|dead)/.test(l)).join("; ");
    console.error(`rows incomplete: ${String(err)}; have ${ids.length}; persist metrics: ${lines}\npersist logs:\n${cluster.persist.logs.slice(-15).join("\n")}`);
  });
  return { ids, ms: Math.round(performance.now() - t0) };
}

function expectAllEqual(acked: Set<string>, stored: string[], received: Set<string>) {
  expect(new Set(stored).size).toBe(stored.length);
  expect(diff("stored vs acked", acked, stored).text).toBe(ok("stored vs acked"));
  expect(diff("received vs acked", acked, received).text).toBe(ok("received vs acked"));
}

function expectAllAlive() {
  for (const p of [cluster.discover, ...cluster.ws, cluster.persist]) expect(`${p.name} alive: ${alive(p)}`).toBe(`${p.name} alive: true`);
}

/** A sender on ws[0] streaming to a recipient on ws[1] (live) that retries errored sends. */
function stream(total: number, opts: { retryDelayMs?: number } = {}) {
  return withLogs(senderToRecipient(cluster.jwtSecret, cluster.wsUrls[0]!, cluster.wsUrls[1]!, { total, window: 10, retryDelayMs: opts.retryDelayMs ?? 200, replyBoundMs: 12_000 }));
}

describe.skipIf(!infra)("RabbitMQ", () => {
  test.each(["stop", "kill"] as const)(
    "%s, then start: health 503 then 200, sends answered unavailable, nothing acked lost, reconnects by itself",
    async (mode) => {
      const { alice, bob, bobR, s } = await stream(1500);
      await s.ackedAtLeast(200);
      const rabbit = infra!.rabbit;
      let downMs = 0;
      let unhealthyMs = 0;
      let firstUnavailableMs = 0;
      let probe = "";
      let ackedInOutage = 0;
      let startMs = 0;
      let healthy = "";
      const t0 = performance.now();
      try {
        await (mode === "stop" ? rabbit.stop() : rabbit.kill());
        downMs = Math.round(performance.now() - t0);
        const down = performance.now();
        const ackedAtDown = s.acked.size;
        unhealthyMs = (await withLogs(waitUntil("ws and persist /health 503", () => allAre(503)([...cluster.wsUrls, cluster.persistUrl]), 10_000))).ms;
        firstUnavailableMs = (await waitUntil("a send answered unavailable", () => s.errors.some((e) => e.at > down && e.code === "unavailable"), 15_000)).ms;
        // Sync reads storage up to the allocator's top and needs no queue barrier: a user with
        // nothing waiting in the queue is answered while the broker is down.
        const p = new Recipient(uniqueUser("probe"), cluster.jwtSecret);
        await p.connect(cluster.wsUrls[0]!);
        probe = await p.sync();
        p.close();
        ackedInOutage = s.acked.size - ackedAtDown;
        expectAllAlive();
      } finally {
        const t1 = performance.now();
        await rabbit.start();
        startMs = Math.round(performance.now() - t1);
        healthy = recoveryText(await withLogs(restoreInfra(serviceUrls())));
      }
      await s.finish(60_000);
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked);
      await withLogs(bobR.syncUntilSynced());
      const codes = [...new Set(s.errors.map((e) => e.code))];
      console.log(
        `RabbitMQ ${mode}: took ${downMs} ms; /health 503 after ${unhealthyMs} ms; first unavailable after ${firstUnavailableMs} ms; ` +
          `sync while down: ${probe}; ${ackedInOutage} acked while down; broker start ${startMs} ms, then healthy after (ms) ${healthy}; ` +
          `errors ${s.errors.length} (${codes.join(",")}), slowest reply ${Math.round(s.maxReplyMs)} ms; ` +
          `acked ${acked.size}, stored ${rows.ids.length}, received ${bobR.ids().size} (${bobR.duplicates()} dup)`,
      );
      expect(probe).toBe("synced");
      expect(codes.every((c) => c === "unavailable")).toBe(true);
      expect(s.maxReplyMs).toBeLessThan(12_000);
      expect(acked.size).toBe(1500);
      expectAllAlive();
      expectAllEqual(acked, rows.ids, bobR.ids());
    },
    120_000,
  );
});

describe.skipIf(!infra)("Redis", () => {
  test.each(["stop", "kill"] as const)(
    "%s, then start: discover and ws /health 503 then 200, sends acked or unavailable, presence recovers by itself",
    async (mode) => {
      const { alice, bob, bobR, s } = await stream(1500);
      await s.ackedAtLeast(200);
      const redis = infra!.redis;
      let discoverDownMs = 0;
      let wsDownMs = 0;
      let presenceDuring = 0;
      let healthy = "";
      let outage = { replies: 0, acks: 0, errors: 0 };
      const t0 = performance.now();
      try {
        const r0 = { replies: s.replies, acks: s.acked.size, errors: s.errors.length };
        await (mode === "stop" ? redis.stop() : redis.kill());
        const down = performance.now();
        discoverDownMs = (await waitUntil("discover /health 503", () => allAre(503)([cluster.discoverUrl]), 10_000)).ms;
        wsDownMs = (await waitUntil("ws /health 503", () => allAre(503)(cluster.wsUrls), 10_000)).ms;
        await waitUntil("sends answered while Redis is down", () => s.errors.some((e) => e.at > down), 15_000);
        outage = { replies: s.replies - r0.replies, acks: s.acked.size - r0.acks, errors: s.errors.length - r0.errors };
        presenceDuring = await presence(cluster.wsUrls[0]!, alice, cluster.jwtSecret, [bob]).then(
          () => 200,
          (e: Error) => Number(/answered (\d+)/.exec(e.message)?.[1] ?? 0),
        );
        expectAllAlive();
      } finally {
        await redis.start();
        healthy = recoveryText(await withLogs(restoreInfra(serviceUrls())));
      }
      const outageMs = Math.round(performance.now() - t0);
      const back = await waitUntil("presence to show bob online again", async () => (await presence(cluster.wsUrls[0]!, alice, cluster.jwtSecret, [bob]))[bob] === true, 10_000);
      await s.finish(60_000);
      // Live routing works again without anyone reconnecting.
      const a2 = await connectReady(cluster.wsUrls[0]!, alice, cluster.jwtSecret);
      const ack = await a2.sendMessage({ to: bob }, "after the outage");
      expect(ack.type).toBe("ack");
      await waitUntil("bob to get a message live after recovery", () => bobR.counts.has(ack.msgId), 5000);
      a2.close();

      const acked = s.ackedMsgIds();
      acked.add(ack.msgId);
      const rows = await rowsFor(alice, bob, acked);
      await withLogs(bobR.syncUntilSynced());
      const codes = [...new Set(s.errors.map((e) => e.code))];
      console.log(
        `Redis ${mode}: discover /health 503 after ${discoverDownMs} ms, ws after ${wsDownMs} ms; ${outage.replies} replies while down (${outage.acks} acks, ${outage.errors} errors); presence while down: ${presenceDuring}; ` +
          `outage ${outageMs} ms; healthy after start (ms): ${healthy}; presence back ${back.ms} ms later; errors ${s.errors.length} (${codes.join(",") || "none"}), slowest reply ${Math.round(s.maxReplyMs)} ms; ` +
          `acked ${acked.size}, stored ${rows.ids.length}, received ${bobR.ids().size} (${bobR.duplicates()} dup)`,
      );
      expect(codes.every((c) => c === "unavailable")).toBe(true);
      expect(s.maxReplyMs).toBeLessThan(12_000);
      expectAllAlive();
      expectAllEqual(acked, rows.ids, bobR.ids());
    },
    120_000,
  );
});

describe.skipIf(!infra)("PostgreSQL", () => {
  test.each(["stop", "kill"] as const)(
    "%s, then start: sends still acked, sync unavailable and /health 503 while down, rows land after",
    async (mode) => {
      const { alice, bob, bobR, s } = await stream(1500);
      await s.ackedAtLeast(200);
      const pg = infra!.postgres;
      let unhealthyMs = 0;
      let ackedInOutage = 0;
      let probe = "";
      let probeMs = 0;
      let startMs = 0;
      try {
        await (mode === "stop" ? pg.stop() : pg.kill());
        const ackedAtDown = s.acked.size;
        const p = new Recipient(uniqueUser("probe"), cluster.jwtSecret);
        await p.connect(cluster.wsUrls[1]!);
        const p0 = performance.now();
        const probing = p.sync().then((r) => ((probe = r), (probeMs = Math.round(performance.now() - p0))));
        unhealthyMs = (await withLogs(waitUntil("ws and persist /health 503", () => allAre(503)([...cluster.wsUrls, cluster.persistUrl]), 10_000))).ms;
        await s.ackedAtLeast(Math.min(1500, ackedAtDown + 300), 10_000);
        await probing;
        p.close();
        ackedInOutage = s.acked.size - ackedAtDown;
        expectAllAlive();
      } finally {
        const t1 = performance.now();
        await pg.start();
        startMs = Math.round(performance.now() - t1);
      }
      const t2 = performance.now();
      const healthy = recoveryText(await withLogs(restoreInfra(serviceUrls())));
      await s.finish(60_000);
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked);
      const rowsMs = Math.round(performance.now() - t2);
      await withLogs(bobR.syncUntilSynced());
      if (rows.ids.length < acked.size) console.error(`after bob's sync: ${(await storedIds(sql, alice, bob)).length} rows`);
      console.log(
        `PostgreSQL ${mode}: /health 503 after ${unhealthyMs} ms; ${ackedInOutage} acked while down; sync while down: ${probe} after ${probeMs} ms; ` +
          `server start ${startMs} ms, then healthy after (ms) ${healthy}; all rows ${rowsMs} ms after start; errors ${s.errors.length}; ` +
          `acked ${acked.size}, stored ${rows.ids.length}, received ${bobR.ids().size} (${bobR.duplicates()} dup)`,
      );
      expect(ackedInOutage).toBeGreaterThanOrEqual(300);
      expect(probe).toBe("unavailable");
      expect(s.errors).toHaveLength(0);
      expectAllAlive();
      expectAllEqual(acked, rows.ids, bobR.ids());
    },
    120_000,
  );
});

describe.skipIf(!infra)("started while a dependency is down", () => {
  test(
    "discover (Redis down), ws and persist (RabbitMQ down) start, answer 503, and come up healthy when it returns",
    async () => {
      const extra: ServiceProcess[] = [];
      let startedMs: number[] = [];
      let during: number[] = [];
      let healthyMs = 0;
      try {
        await Promise.all([infra!.rabbit.stop(), infra!.redis.stop()]);
        const t0 = performance.now();
        const discover2 = await spawnService("discover-late", "services/discover/index.ts", cluster.discover.env);
        extra.push(discover2);
        const t1 = performance.now();
        const [ws3, persist2] = await Promise.all([
          spawnService("ws-late", "services/ws/index.ts", { ...cluster.env, DISCOVER_URL: discover2.url }),
          cluster.restart(cluster.persist),
        ]);
        extra.push(ws3);
        startedMs = [Math.round(t1 - t0), Math.round(performance.now() - t1)];
        const late = [discover2, ws3, persist2];
        during = await status(late.map((p) => p.url));
        expect(during).toEqual([503, 503, 503]);
        for (const p of late) expect(alive(p)).toBe(true);

        await Promise.all([infra!.rabbit.start(), infra!.redis.start()]);
        const t2 = performance.now();
        await restoreInfra([...serviceUrls(), ...late.map((p) => p.url)]);
        healthyMs = Math.round(performance.now() - t2);

        // The late gateway works end to end: a message from it reaches a user on an old one, live and stored.
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const bobR = new Recipient(bob, cluster.jwtSecret);
        await bobR.connect(cluster.wsUrls[1]!);
        await withLogs(bobR.syncUntilSynced());
        const a = await connectReady(ws3.url, alice, cluster.jwtSecret);
        const ack = await a.sendMessage({ to: bob }, "from a late starter");
        expect(ack.type).toBe("ack");
        await waitUntil("bob to get it live", () => bobR.counts.has(ack.msgId), 5000);
        // Hand the queue to the late persist (the first one stops gracefully): it stores the next message.
        expect(await stopService(cluster.persist, "SIGTERM")).toBe(0);
        const ack2 = await a.sendMessage({ to: bob }, "stored by the late persist");
        expect(ack2.type).toBe("ack");
        const rows = await rowsFor(alice, bob, new Set([ack.msgId, ack2.msgId]));
        expect(rows.ids.sort()).toEqual([ack.msgId, ack2.msgId].sort());
        a.close();
        bobR.close();
        cluster.persist = persist2;
        cluster.persistUrl = persist2.url;
      } finally {
        await restoreInfra([]);
        await Promise.all(extra.map((p) => stopService(p)));
      }
      console.log(
        `started while down: discover started in ${startedMs[0]} ms with Redis down, ws and persist in ${startedMs[1]} ms with RabbitMQ down; ` +
          `their /health while down: ${during.join(",")}; all healthy ${healthyMs} ms after the servers were back`,
      );
    },
    120_000,
  );
});
