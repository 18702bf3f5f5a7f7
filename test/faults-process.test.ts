import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type postgres from "postgres";
import { TestClient, mintToken, uniqueUser } from "./client.ts";
import { alive, connectReady, diff, httpStatus, lookup, openSql, presence, Recipient, Sender, senderToRecipient, storedIds, waitUntil, startHealthyCluster } from "./chaos.ts";
import { stopService, type Cluster, type ServiceProcess } from "../scripts/cluster.ts";

// Process faults (CONTRACT.md sections 1 and 6): a gateway or persist killed, frozen or asked to
// stop mid-stream. Each test has its own cluster and ends with: the set of acknowledged msgIds equals
// the rows in PostgreSQL equals what the recipient received (live, then by sync after recovery).

let sql: postgres.Sql;
let cluster: Cluster | undefined;

beforeAll(() => {
  sql = openSql();
});
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});
afterAll(async () => {
  await sql?.end();
});

const ok = (name: string) => `${name}: 0 missing [], 0 extra []`;

/** Waits until PostgreSQL holds every acked message of the pair; returns the ids and how long it took. */
async function rowsFor(from: string, to: string, acked: Set<string>, timeoutMs = 15_000) {
  const t0 = performance.now();
  let ids: string[] = [];
  await waitUntil(`rows ${from}→${to} to reach ${acked.size}`, async () => {
    ids = await storedIds(sql, from, to);
    return ids.length >= acked.size;
  }, timeoutMs).catch(() => {});
  return { ids, ms: Math.round(performance.now() - t0) };
}

function expectAllEqual(acked: Set<string>, stored: string[], received: Set<string>) {
  expect(new Set(stored).size).toBe(stored.length); // each message stored once
  expect(diff("stored vs acked", acked, stored).text).toBe(ok("stored vs acked"));
  expect(diff("received vs acked", acked, received).text).toBe(ok("received vs acked"));
}

describe("gateway SIGKILL", () => {
  test(
    "within 10 s the directory stops routing to it and presence shows its users offline; their messages wait for sync",
    async () => {
      cluster = await startHealthyCluster({ ws: 2 });
      const [survivor, victim] = [cluster.wsUrls[0]!, cluster.wsUrls[1]!];
      const [a, b, v1, v2] = ["alice", "bob", "vic", "val"].map((p) => uniqueUser(p)) as [string, string, string, string];
      // v1 only on the victim; v2 on the victim and also on the survivor (a second device).
      const v1R = new Recipient(v1, cluster.jwtSecret);
      await v1R.connect(victim);
      await v1R.syncUntilSynced();
      const v2R = new Recipient(v2, cluster.jwtSecret);
      await v2R.connect(victim);
      await v2R.syncUntilSynced();
      const v2Other = new Recipient(v2, cluster.jwtSecret);
      await v2Other.connect(survivor);
      await v2Other.syncUntilSynced();
      const before = await presence(survivor, a, cluster.jwtSecret, [v1, v2]);
      expect(before).toEqual({ [v1]: true, [v2]: true });
      const victimId = (await lookup(cluster, [v1]))[v1]![0]!.id;

      const s1 = new Sender({ user: a, secret: cluster.jwtSecret, to: v1, total: 800, window: 10, retryDelayMs: 100 });
      const s2 = new Sender({ user: b, secret: cluster.jwtSecret, to: v2, total: 800, window: 10, retryDelayMs: 100 });
      await Promise.all([s1.connect(survivor), s2.connect(survivor)]);
      await Promise.all([s1.ackedAtLeast(200), s2.ackedAtLeast(200)]);

      cluster.ws[1]!.proc.kill("SIGKILL");
      const routed = waitUntil("the directory to stop routing v1 and v2 to the dead instance", async () => {
        const where = await lookup(cluster!, [v1, v2]);
        return (where[v1] ?? []).length === 0 && (where[v2] ?? []).every((i) => i.id !== victimId) && (where[v2] ?? []).length === 1;
      }, 10_000, 50);
      const offline = waitUntil("presence to show v1 offline and v2 still online", async () => {
        const p = await presence(survivor, a, cluster!.jwtSecret, [v1, v2]);
        return p[v1] === false && p[v2] === true;
      }, 10_000, 50);
      const [r, o] = await Promise.all([routed, offline]);
      const routeMs = r.ms;
      await Promise.all([s1.finish(), s2.finish()]);

      // v1 and v2's first device come back on the survivor and sync from their last cursor.
      const liveV1 = v1R.ids().size;
      const liveV2 = v2R.ids().size;
      v1R.close();
      v2R.close();
      await v1R.connect(survivor);
      await v2R.connect(survivor);
      const syncMs = Math.max(await v1R.syncUntilSynced(), await v2R.syncUntilSynced());

      const acked1 = s1.ackedMsgIds();
      const acked2 = s2.ackedMsgIds();
      const rows1 = await rowsFor(a, v1, acked1);
      const rows2 = await rowsFor(b, v2, acked2);
      // v2's device on the survivor stayed connected: it got everything live, no sync needed.
      await waitUntil("v2's surviving device to have every acked message live", () => diff("", acked2, v2Other.ids()).missing.length === 0, 5000).catch(() => {});

      console.log(
        `gateway SIGKILL: directory stopped routing after ${routeMs} ms, presence offline after ${o.ms} ms; ` +
          `v1 acked ${acked1.size} stored ${rows1.ids.length} received ${v1R.ids().size} (${liveV1} live before the kill, ${v1R.duplicates()} dup); ` +
          `v2 acked ${acked2.size} stored ${rows2.ids.length} received ${v2R.ids().size} (${liveV2} live before the kill), its surviving device ${v2Other.ids().size} live; ` +
          `sync after reconnect ${syncMs} ms; sender errors ${s1.errors.length + s2.errors.length}`,
      );
      expect(r.ms).toBeLessThanOrEqual(10_000);
      expect(o.ms).toBeLessThanOrEqual(10_000);
      expect(acked1.size).toBe(800);
      expect(acked2.size).toBe(800);
      expectAllEqual(acked1, rows1.ids, v1R.ids());
      expectAllEqual(acked2, rows2.ids, v2R.ids());
      expect(diff("surviving device vs acked", acked2, v2Other.ids()).text).toBe(ok("surviving device vs acked"));
      expect(alive(cluster.ws[0]!)).toBe(true);
    },
    90_000,
  );
});

describe("persist", () => {
  test(
    "SIGKILL mid-stream, then restart: every acked message in PostgreSQL exactly once",
    async () => {
      cluster = await startHealthyCluster({ ws: 2 });
      const { alice, bob, bobR, s } = await senderToRecipient(cluster.jwtSecret, cluster.wsUrls[0]!, cluster.wsUrls[1]!, { total: 2000, window: 20, retryDelayMs: 100 });
      await s.ackedAtLeast(500);

      const killedAt = performance.now();
      const code = await stopService(cluster.persist, "SIGKILL");
      const ackedAtKill = s.acked.size;
      // While no persist runs: sends are still acked (the queue holds them) ...
      await s.ackedAtLeast(Math.min(2000, ackedAtKill + 500));
      // ... and a sync of the recipient, whose stream holds positions nobody has written yet, cannot
      // complete: unavailable, not silence, and nothing skipped.
      const probe = new Recipient(bob, cluster.jwtSecret);
      await probe.connect(cluster.wsUrls[0]!);
      const p0 = performance.now();
      const probeAnswer = await probe.sync();
      const probeMs = Math.round(performance.now() - p0);
      probe.close();
      await s.finish();
      const ackedWhileDown = s.acked.size - ackedAtKill;

      const restartAt = performance.now();
      const next = await cluster.restart(cluster.persist);
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked, 20_000);
      const recoveryMs = Math.round(performance.now() - restartAt);
      await bobR.syncUntilSynced();

      console.log(
        `persist SIGKILL: exit ${code}; acked ${acked.size} (${ackedWhileDown} while no persist ran), stored ${rows.ids.length}, ` +
          `received ${bobR.ids().size} (${bobR.duplicates()} dup); sync while down: ${probeAnswer} after ${probeMs} ms; ` +
          `all rows in ${recoveryMs} ms after the restart began (${Math.round(restartAt - killedAt)} ms after the kill)`,
      );
      expect(ackedWhileDown).toBeGreaterThanOrEqual(500);
      expect(probeAnswer).toBe("unavailable");
      expectAllEqual(acked, rows.ids, bobR.ids());
      expect(await httpStatus(`${next.url}/health`)).toBe(200);
    },
    90_000,
  );

  test(
    "SIGSTOP for a few seconds, then SIGCONT: sends still acked, rows appear after",
    async () => {
      cluster = await startHealthyCluster({ ws: 2 });
      const TOTAL = 3000;
      const { alice, bob, bobR, s } = await senderToRecipient(cluster.jwtSecret, cluster.wsUrls[0]!, cluster.wsUrls[1]!, { total: TOTAL, window: 20, retryDelayMs: 100 });
      await s.ackedAtLeast(300);

      const persistPid = cluster.persist.proc.pid;
      process.kill(persistPid, "SIGSTOP");
      const stoppedAt = performance.now();
      let rowsAtStop = -1;
      let rowsBeforeCont = -1;
      let ackedWhileStopped = 0;
      try {
        const ackedAtStop = s.acked.size;
        rowsAtStop = (await storedIds(sql, alice, bob)).length;
        // Frozen while the rest of the stream is sent, and for at least 3 s (the fault's duration):
        // the queue keeps acknowledging. (Under 15 s: RabbitMQ drops a consumer that misses two 10 s heartbeats.)
        await s.finish(15_000);
        await waitUntil("3 s of freeze", () => performance.now() - stoppedAt >= 3000, 5000, 50);
        ackedWhileStopped = s.acked.size - ackedAtStop;
        expect(ackedWhileStopped).toBe(TOTAL - ackedAtStop);
        rowsBeforeCont = (await storedIds(sql, alice, bob)).length;
      } finally {
        process.kill(persistPid, "SIGCONT");
      }
      const frozenMs = Math.round(performance.now() - stoppedAt);
      const contAt = performance.now();
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked);
      const catchUpMs = Math.round(performance.now() - contAt);
      await bobR.syncUntilSynced();

      const codes = [...new Set(s.errors.map((e) => e.code))];
      console.log(
        `persist SIGSTOP ${frozenMs} ms: ${ackedWhileStopped} acked while frozen; rows ${rowsAtStop} at stop, ${rowsBeforeCont} just before SIGCONT; ` +
          `after SIGCONT acked ${acked.size}, stored ${rows.ids.length} (all within ${catchUpMs} ms), received ${bobR.ids().size} (${bobR.duplicates()} dup); ` +
          `sender errors ${s.errors.length} (${codes.join(",") || "none"})`,
      );
      expect(acked.size).toBe(TOTAL);
      expect(rowsBeforeCont).toBeLessThan(acked.size);
      expect(codes.every((c) => c === "rate_limited")).toBe(true);
      expect(alive(cluster.persist)).toBe(true);
      expectAllEqual(acked, rows.ids, bobR.ids());
    },
    90_000,
  );

  test(
    "SIGTERM mid-stream: exits 0 within 10 s and nothing acked is lost",
    async () => {
      cluster = await startHealthyCluster({ ws: 2 });
      const { alice, bob, bobR, s } = await senderToRecipient(cluster.jwtSecret, cluster.wsUrls[0]!, cluster.wsUrls[1]!, { total: 2000, window: 20, retryDelayMs: 100 });
      await s.ackedAtLeast(500);

      const t0 = performance.now();
      const code = await stopService(cluster.persist, "SIGTERM");
      const exitMs = Math.round(performance.now() - t0);
      const rowsAtExit = (await storedIds(sql, alice, bob)).length;
      const ackedAtExit = s.acked.size;
      await s.finish();
      const next = await cluster.restart(cluster.persist);
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked);
      await bobR.syncUntilSynced();

      console.log(
        `persist SIGTERM: exit ${code} after ${exitMs} ms, ${rowsAtExit} rows / ${ackedAtExit} acked at exit; ` +
          `after restart acked ${acked.size}, stored ${rows.ids.length} (in ${rows.ms} ms), received ${bobR.ids().size} (${bobR.duplicates()} dup)`,
      );
      expect(code).toBe(0);
      expect(exitMs).toBeLessThan(10_000);
      expectAllEqual(acked, rows.ids, bobR.ids());
      expect(await httpStatus(`${next.url}/health`)).toBe(200);
    },
    90_000,
  );
});

describe("gateway SIGTERM", () => {
  test(
    "closes sockets with 1001 within 10 s, answers in-flight sends, exits 0; resends elsewhere are acked once",
    async () => {
      cluster = await startHealthyCluster({ ws: 2 });
      const [stayUrl, goingUrl] = [cluster.wsUrls[0]!, cluster.wsUrls[1]!];
      const [alice, bob, idle] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("idle")];
      const bobR = new Recipient(bob, cluster.jwtSecret);
      await bobR.connect(stayUrl);
      await bobR.syncUntilSynced();
      const idleC = await connectReady(goingUrl, idle, cluster.jwtSecret);
      const s = new Sender({ user: alice, secret: cluster.jwtSecret, to: bob, total: 1500, window: 20, retryDelayMs: 100 });
      await s.connect(goingUrl);
      await s.ackedAtLeast(300);

      const going: ServiceProcess = cluster.ws[1]!;
      const repliesBefore = s.replies;
      const t0 = performance.now();
      going.proc.kill("SIGTERM");
      const [idleClose, code] = await Promise.all([idleC.closed, going.exited]);
      const exitMs = Math.round(performance.now() - t0);
      await waitUntil("the sender's socket to close", () => s.closes.length > 0, 10_000);
      const senderClose = s.closes[0]!;
      const closeMs = Math.round(senderClose.at - t0);
      const answeredDuringDrain = s.replies - repliesBefore;
      const unanswered = s.unansweredAtClose;
      const drainErrors = s.errors.filter((e) => e.at >= t0).map((e) => e.code);

      // The client reconnects to the other instance and resends what got no answer (same ids).
      await s.connect(stayUrl);
      await s.finish();
      const acked = s.ackedMsgIds();
      const rows = await rowsFor(alice, bob, acked);
      await bobR.syncUntilSynced();

      console.log(
        `gateway SIGTERM: exit ${code} after ${exitMs} ms; sockets closed ${senderClose.code}/${idleClose.code} after ${closeMs} ms; ` +
          `${answeredDuringDrain} replies during the drain (${drainErrors.length} errors: ${[...new Set(drainErrors)].join(",") || "none"}), ${unanswered} sends unanswered at close and resent; ` +
          `acked ${acked.size}, stored ${rows.ids.length}, received ${bobR.ids().size} (${bobR.duplicates()} dup), stray replies ${s.strayReplies}`,
      );
      expect(code).toBe(0);
      expect(exitMs).toBeLessThan(10_000);
      expect(senderClose.code).toBe(1001);
      expect(idleClose.code).toBe(1001);
      expect(closeMs).toBeLessThan(10_000);
      expect(drainErrors.every((c) => c === "unavailable")).toBe(true);
      expect(unanswered).toBeLessThanOrEqual(20);
      expect(s.msgIdMismatches).toBe(0);
      expect(acked.size).toBe(1500);
      expectAllEqual(acked, rows.ids, bobR.ids());
      // The other instance keeps serving.
      const c = await TestClient.connect(stayUrl, alice, await mintToken(alice, cluster.jwtSecret));
      expect((await c.sendMessage({ to: bob }, "after the drain")).type).toBe("ack");
      c.close();
    },
    90_000,
  );
});
