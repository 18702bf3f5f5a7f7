import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { join } from "node:path";
import amqp from "amqplib";
import postgres from "postgres";
import { createAmqpConnection, type AmqpConnection } from "../../shared/amqp.ts";
import { silentLogger } from "../../shared/log.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createAmqpQueue, queueTopology, type AmqpQueue } from "../../shared/queue/queue-amqp.ts";
import { closeRedis, createRedis } from "../../shared/redis.ts";

const ENTRY = join(import.meta.dir, "index.ts");
const AMQP_URL = process.env.AMQP_URL!;
const DATABASE_URL = process.env.DATABASE_URL!;
const REDIS_URL = process.env.REDIS_URL!;
/** This file's own queue and allocator keyspace: messages of other test files never reach it. */
const QUEUE_NAME = `persist.it.${randomUUID()}`;
const REDIS_PREFIX = `persist-it-${randomUUID().slice(0, 8)}:`;

type Persist = { proc: Bun.Subprocess<"ignore", "pipe", "pipe">; url: string; stderr: () => string };

/** Spawns the real service and resolves once it printed its URL. */
async function startPersist(env: Record<string, string | undefined>): Promise<Persist> {
  const proc = Bun.spawn(["bun", "run", ENTRY, "--port", "0"], { env: env as Record<string, string>, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let err = "";
  void (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  let out = "";
  const reader = proc.stdout.getReader();
  for (;;) {
    const m = /persist listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
    if (m) {
      reader.releaseLock();
      return { proc, url: m[1]!, stderr: () => err };
    }
    const { done, value } = await reader.read();
    if (done) throw new Error(`persist exited before listening (code ${await proc.exited}): ${err}`);
    out += new TextDecoder().decode(value);
  }
}

const baseEnv = (databaseUrl: string, extra: Record<string, string> = {}) => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  AMQP_URL,
  DATABASE_URL: databaseUrl,
  REDIS_URL,
  REDIS_PREFIX,
  QUEUE_NAME,
  LOG_LEVEL: "warn",
  ...extra,
});

let admin: ReturnType<typeof postgres>;
let schema: string;
let scopedUrl: string;
let conn: AmqpConnection;
let queue: AmqpQueue;
const running = new Set<Persist>();

beforeAll(async () => {
  admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  schema = `persist_it_${randomUUID().replaceAll("-", "")}`;
  await admin.unsafe(
    `create schema ${schema}; create table ${schema}.messages (like public.messages including all); create table ${schema}.stream (like public.stream including all)`,
  );
  const u = new URL(DATABASE_URL);
  u.searchParams.set("search_path", schema);
  scopedUrl = u.toString();
  conn = createAmqpConnection(AMQP_URL, silentLogger, { name: "persist index.test" });
  queue = createAmqpQueue(conn, { log: silentLogger, queue: QUEUE_NAME });
  await queue.whenReady(AbortSignal.timeout(10_000));
});

afterEach(async () => {
  for (const p of running) {
    p.proc.kill("SIGKILL");
    await p.proc.exited;
  }
  running.clear();
});

afterAll(async () => {
  await queue.close();
  await conn.close();
  const broker = await amqp.connect(AMQP_URL);
  const ch = await broker.createChannel();
  const t = queueTopology({ queue: QUEUE_NAME });
  await ch.deleteQueue(t.queue);
  await ch.deleteQueue(t.deadLetterQueue);
  await ch.deleteExchange(t.deadLetterExchange);
  await broker.close();
  await admin.unsafe(`drop schema ${schema} cascade`);
  await admin.end();
});

const spawnPersist = async (env: Record<string, string | undefined>) => {
  const p = await startPersist(env);
  running.add(p);
  return p;
};

let seq = 0;
const batchOf = (prefix: string, n: number, from = "alice", to = "bob"): ChatMessage[] =>
  Array.from({ length: n }, () => {
    seq++;
    return { msgId: `${prefix}-${seq}`, id: `c${seq}`, from, to, body: `m ${seq}`, ts: 1_700_000_000_000 + seq, rcpt: [from, to] };
  });

const rowsWith = async (prefix: string) => {
  const [r] = await admin.unsafe(`select count(*)::int as n, count(distinct id)::int as d from ${schema}.messages where id like $1`, [`${prefix}-%`]);
  return { n: Number(r!.n), distinct: Number(r!.d) };
};

/**
 * Waits (bounded) until PostgreSQL holds `n` rows with the prefix, then a little longer to see
 * that no more arrive; returns the counts for the test to compare.
 */
const rowsOnceWritten = async (prefix: string, n: number, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs;
  let r = await rowsWith(prefix);
  while (r.n < n && Date.now() < deadline) {
    await Bun.sleep(50);
    r = await rowsWith(prefix);
  }
  await Bun.sleep(100);
  return rowsWith(prefix);
};

/**
 * Resolves once /health answers 200: the consumer channel is set up (it prints its URL even while
 * RabbitMQ is not connected yet). Bounded.
 */
const consuming = async (p: Persist, timeoutMs = 15_000) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetch(`${p.url}/health`).then((r) => r.status, () => 0);
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`persist not healthy within ${timeoutMs} ms (last status ${status})`);
    await Bun.sleep(25);
  }
};

/** `user`'s stream entries in the test schema: how many, in how many epochs, and the highest position. */
const streamOf = async (user: string) => {
  // stream rows, and the entries direct messages keep in their own rows
  const [r] = await admin.unsafe(
    `select count(*)::int as n, count(distinct epoch)::int as epochs, max(pos)::int as top, count(distinct msg_id)::int as msgs from (
      select epoch, pos, msg_id from ${schema}.stream where user_id = $1
      union all select s_epoch, s_pos, id from ${schema}.messages where sender = $1 and s_pos is not null
      union all select r_epoch, r_pos, id from ${schema}.messages where recipient = $1 and r_pos is not null) e`,
    [user],
  );
  return { n: Number(r!.n), epochs: Number(r!.epochs), top: Number(r!.top ?? 0), msgs: Number(r!.msgs) };
};

describe("persist as a process", () => {
  test("writes every published message exactly once, with its stream entries, and serves /health and /metrics", async () => {
    const p = await spawnPersist(baseEnv(scopedUrl, { BATCH_SIZE: "250", BATCH_MS: "20" }));
    const prefix = `it${randomUUID()}`;
    const [from, to] = [`s-${prefix.slice(2, 10)}`, `r-${prefix.slice(2, 10)}`];
    const batches = Array.from({ length: 300 }, () => batchOf(prefix, 10, from, to));
    await Promise.all(batches.map((b) => queue.publish(b)));
    expect(await rowsOnceWritten(prefix, 3000, 15_000)).toEqual({ n: 3000, distinct: 3000 });
    // each message in the sender's and the recipient's stream: one epoch, positions 1..3000
    expect(await streamOf(from)).toEqual({ n: 3000, epochs: 1, top: 3000, msgs: 3000 });
    expect(await streamOf(to)).toEqual({ n: 3000, epochs: 1, top: 3000, msgs: 3000 });

    const health = await fetch(`${p.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true, queue: true, database: true });
    const metrics = await (await fetch(`${p.url}/metrics`)).text();
    const inserted = /^persist_rows_inserted_total\{[^}]*\} (\d+)/m.exec(metrics);
    expect(Number(inserted?.[1])).toBeGreaterThanOrEqual(3000);
    for (const name of ["persist_batches_total", "persist_batch_size_bucket", "persist_insert_seconds_bucket", "persist_dead_lettered_total", "persist_db_errors_total", "persist_floor_rounds_total", "persist_floor_users_waiting"]) {
      expect(metrics).toContain(name);
    }
    // within a few rounds (every 2 s) it moves both users' floors in the allocator to 3000: all stored
    const redis = createRedis(REDIS_URL, silentLogger);
    if (redis.status !== "ready") await new Promise((resolve) => redis.once("ready", resolve));
    try {
      const floorOf = (u: string) => redis.hget(`${REDIS_PREFIX}{u:${u}}:s`, "f");
      const deadline = Date.now() + 10_000;
      while ((await floorOf(from)) !== "3000" || (await floorOf(to)) !== "3000") {
        if (Date.now() > deadline) throw new Error(`floors not moved: ${await floorOf(from)}, ${await floorOf(to)}`);
        await Bun.sleep(100);
      }
    } finally {
      await closeRedis(redis);
    }
    const moved = /^persist_floors_moved_total\{[^}]*\} (\d+)/m.exec(await (await fetch(`${p.url}/metrics`)).text());
    expect(Number(moved?.[1])).toBeGreaterThanOrEqual(2);
  });

  test("SIGTERM mid-stream: exits within 10 s and loses nothing that was acknowledged", async () => {
    const env = baseEnv(scopedUrl, { BATCH_SIZE: "100", BATCH_MS: "200", PREFETCH: "500" });
    const first = await spawnPersist(env);
    await consuming(first);
    const prefix = `term${randomUUID()}`;
    const [from, to] = [`s-${prefix.slice(4, 12)}`, `r-${prefix.slice(4, 12)}`];
    let confirmed = 0;
    const stop = async () => {
      const t0 = performance.now();
      first.proc.kill("SIGTERM");
      const code = await first.proc.exited;
      return { code, ms: performance.now() - t0 };
    };
    let stopped: Promise<{ code: number; ms: number }> | undefined;
    for (let round = 0; round < 30; round++) {
      await Promise.all(Array.from({ length: 20 }, () => queue.publish(batchOf(prefix, 5, from, to)).then(() => void (confirmed += 5))));
      if (round === 10) stopped = stop();
    }
    const { code, ms } = await stopped!;
    expect(code).toBe(0);
    expect(ms).toBeLessThan(10_000);
    expect(first.stderr()).not.toContain('"level":"error"');
    const before = await rowsWith(prefix);
    expect(before.n).toBeGreaterThan(0);
    expect(before.n).toBeLessThan(confirmed);

    await spawnPersist(env);
    expect(confirmed).toBe(3000);
    expect(await rowsOnceWritten(prefix, confirmed, 15_000)).toEqual({ n: confirmed, distinct: confirmed });
    // what the first one held unacked was allocated again by the second: the same positions, no holes
    expect(await streamOf(from)).toEqual({ n: confirmed, epochs: 1, top: confirmed, msgs: confirmed });
    expect(await streamOf(to)).toEqual({ n: confirmed, epochs: 1, top: confirmed, msgs: confirmed });
  });

  test("its database sessions terminated again and again mid-stream: it keeps running and stores every message once", async () => {
    // pg_terminate_backend lands in and between batch transactions; postgres.js then sometimes lets
    // a rejection escape unhandled, which would end a Bun process (see surviveStrayConnectionErrors).
    const app = `persist-kill-${randomUUID().slice(0, 8)}`;
    const u = new URL(scopedUrl);
    u.searchParams.set("application_name", app);
    const p = await spawnPersist(baseEnv(u.toString(), { BATCH_SIZE: "20", BATCH_MS: "2" }));
    await consuming(p);
    const prefix = `kill${randomUUID()}`;
    const [from, to] = [`s-${prefix.slice(4, 12)}`, `r-${prefix.slice(4, 12)}`];
    let kills = 0;
    let confirmed = 0;
    let publishing = true;
    const killer = (async () => {
      while (publishing) {
        const r = await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${app}`;
        kills += r.length;
        await Bun.sleep(15 + Math.random() * 30);
      }
    })();
    for (const end = Date.now() + 4000; Date.now() < end; ) {
      await Promise.all(Array.from({ length: 5 }, () => queue.publish(batchOf(prefix, 2, from, to)).then(() => void (confirmed += 2))));
      await Bun.sleep(3);
    }
    publishing = false;
    await killer;
    const rows = await rowsOnceWritten(prefix, confirmed, 30_000);
    const metrics = await (await fetch(`${p.url}/metrics`)).text();
    const dbErrors = /^persist_db_errors_total\{[^}]*\} (\d+)/m.exec(metrics)?.[1];
    console.log(`persist under session kills: ${kills} backends terminated, ${dbErrors} failed inserts retried; published ${confirmed}, stored ${rows.n} (${rows.distinct} distinct); alive: ${p.proc.exitCode === null}`);
    expect(kills).toBeGreaterThan(5);
    expect(p.proc.exitCode).toBeNull();
    expect(rows).toEqual({ n: confirmed, distinct: confirmed });
    // failed inserts were retried with the same positions: no holes, no message twice
    expect(await streamOf(from)).toEqual({ n: confirmed, epochs: 1, top: confirmed, msgs: confirmed });
    expect(await streamOf(to)).toEqual({ n: confirmed, epochs: 1, top: confirmed, msgs: confirmed });
    expect((await fetch(`${p.url}/health`)).status).toBe(200);
  }, 60_000);

  test("starts while RabbitMQ is unreachable: /health answers 503, and SIGTERM still exits cleanly", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const p = await spawnPersist({ ...baseEnv(scopedUrl), AMQP_URL: `amqp://guest:guest@127.0.0.1:${closedPort}` });
    const health = await fetch(`${p.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toEqual({ ok: false, queue: false, database: true });
    p.proc.kill("SIGTERM");
    expect(await p.proc.exited).toBe(0);
  });

  test("a bad AMQP_URL stops it at once with a message naming AMQP_URL", async () => {
    const proc = Bun.spawn(["bun", "run", ENTRY, "--port", "0"], {
      env: { ...baseEnv(scopedUrl), AMQP_URL: "nope" } as Record<string, string>,
      stdout: "pipe",
      stderr: "pipe",
    });
    const code = await proc.exited;
    expect(code).not.toBe(0);
    expect(await new Response(proc.stderr).text()).toContain("AMQP_URL");
    expect(await new Response(proc.stdout).text()).toBe("");
  });

  test("a missing DATABASE_URL stops it with a message naming DATABASE_URL", async () => {
    const env: Record<string, string | undefined> = { ...baseEnv(scopedUrl) };
    delete env.DATABASE_URL;
    const proc = Bun.spawn(["bun", "run", ENTRY], { env: env as Record<string, string>, stdout: "pipe", stderr: "pipe" });
    expect(await proc.exited).not.toBe(0);
    expect(await new Response(proc.stderr).text()).toContain("DATABASE_URL");
  });
});
