import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { count, like, sql } from "drizzle-orm";
import postgres from "postgres";
import { openPglite, openPostgres, type DbHandle } from "../../shared/db/index.ts";
import { messages } from "../../shared/db/schema.ts";
import { silentLogger, type Logger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { QueueDelivery } from "../../shared/queue/queue.ts";
import { createBatcher, type BatcherOptions } from "./batcher.ts";
import { createPersistMetrics } from "./metrics.ts";

/** A database for one suite, with a way to make inserts fail for real and to heal it. */
interface TestDb {
  handle: DbHandle;
  breakInserts(): Promise<void>;
  healInserts(): Promise<void>;
  close(): Promise<void>;
}

/** PostgreSQL's test database can also hold an exclusive lock on the table, making inserts wait. */
interface PgTestDb extends TestDb {
  /** Resolves once the lock is held; the returned function releases it. */
  lockTable(): Promise<() => Promise<void>>;
}

async function postgresDb(): Promise<PgTestDb> {
  const url = process.env.DATABASE_URL!;
  const schema = `persist_test_${randomUUID().replaceAll("-", "")}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create schema ${schema}; create table ${schema}.messages (like public.messages including all)`);
  const scoped = new URL(url);
  scoped.searchParams.set("search_path", schema);
  const handle = openPostgres(scoped.toString(), { max: 2 });
  return {
    handle,
    breakInserts: async () => void (await admin.unsafe(`alter table ${schema}.messages rename to messages_away`)),
    healInserts: async () => void (await admin.unsafe(`alter table ${schema}.messages_away rename to messages`)),
    lockTable: async () => {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let held!: () => void;
      const holding = new Promise<void>((r) => (held = r));
      const tx = admin.begin(async (sql) => {
        await sql.unsafe(`lock table ${schema}.messages in access exclusive mode`);
        held();
        await released;
      });
      await Promise.race([holding, tx]);
      return async () => {
        release();
        await tx;
      };
    },
    close: async () => {
      await handle.close();
      await admin.unsafe(`drop schema ${schema} cascade`);
      await admin.end();
    },
  };
}

async function pgliteDb(): Promise<TestDb> {
  const dir = mkdtempSync(join(tmpdir(), "persist-batcher-"));
  const handle = await openPglite(dir);
  return {
    handle,
    breakInserts: async () => void (await handle.db.execute(sql`alter table messages rename to messages_away`)),
    healInserts: async () => void (await handle.db.execute(sql`alter table messages_away rename to messages`)),
    close: async () => {
      await handle.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
const msg = (prefix: string, o: Partial<ChatMessage> = {}): ChatMessage => {
  seq++;
  return { msgId: `${prefix}-${seq}`, id: `c${seq}`, from: "alice", to: "bob", body: `body ${seq}`, ts: 1_700_000_000_000 + seq, ...o };
};

/** Records acks and barrier completions in order, and lets a test await a count of them. */
function tracker() {
  const log: string[] = [];
  const watchers = new Set<() => void>();
  const note = (entry: string) => {
    log.push(entry);
    for (const w of [...watchers]) w();
  };
  return {
    log,
    acks: () => log.filter((e) => e.startsWith("ack:")),
    delivery(name: string, ms: ChatMessage[]): QueueDelivery {
      return { messages: ms, ack: () => note(`ack:${name}`) };
    },
    barrier(name: string) {
      return () => note(`done:${name}`);
    },
    note,
    until(pred: () => boolean, what: string, ms = 8000): Promise<void> {
      if (pred()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!pred()) return;
          watchers.delete(check);
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => (watchers.delete(check), reject(new Error(`timed out waiting for ${what}; log: ${log.join(" ")}`))), ms);
        watchers.add(check);
      });
    },
  };
}

/** A logger that reports warnings to the tracker. */
const warnInto = (t: ReturnType<typeof tracker>): Logger => {
  const l: Logger = { ...silentLogger, warn: (m) => t.note(`warn:${m}`), child: () => l };
  return l;
};

async function metricValue(metric: { get(): Promise<{ values: Array<{ value: number; metricName?: string }> }> }, name?: string) {
  const { values } = await metric.get();
  return values.find((v) => name === undefined || v.metricName === name)?.value ?? 0;
}

async function rowsWith(handle: DbHandle, prefix: string): Promise<number> {
  const [r] = await handle.db.select({ n: count() }).from(messages).where(like(messages.id, `${prefix}-%`));
  return Number(r?.n ?? 0);
}

function batcherSuite(backend: string, open: () => Promise<TestDb>) {
  describe(`batcher on ${backend}`, () => {
    let tdb: TestDb;
    beforeAll(async () => {
      tdb = await open();
    });
    afterAll(async () => {
      await tdb.close();
    });

    const rows = (prefix: string) => rowsWith(tdb.handle, prefix);
    const make = (t: ReturnType<typeof tracker>, o: Partial<BatcherOptions> = {}) => {
      const metrics = createPersistMetrics(createMetrics("test"));
      const batcher = createBatcher({ database: tdb.handle, maxRows: 1000, maxWaitMs: 60_000, log: warnInto(t), metrics, ...o });
      return { batcher, metrics };
    };

    test("writes a batch as soon as it reaches maxRows, one INSERT per batch", async () => {
      const p = `size${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics } = make(t, { maxRows: 5 });
      for (let i = 0; i < 12; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      await t.until(() => t.acks().length === 10, "two full batches");
      expect(await rows(p)).toBe(10);
      expect(t.acks()).toEqual(Array.from({ length: 10 }, (_, i) => `ack:${i}`));
      batcher.onBarrier(t.barrier("b"));
      await t.until(() => t.log.includes("done:b"), "the barrier");
      expect(await rows(p)).toBe(12);
      expect(await metricValue(metrics.batches)).toBe(3);
      expect(await metricValue(metrics.batchSize, "persist_batch_size_sum")).toBe(12);
      expect(await metricValue(metrics.rowsInserted)).toBe(12);
    });

    test("counts rows across deliveries that carry several messages", async () => {
      const p = `multi${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics } = make(t, { maxRows: 6 });
      batcher.onDelivery(t.delivery("a", [msg(p), msg(p), msg(p)]));
      batcher.onDelivery(t.delivery("b", [msg(p), msg(p), msg(p), msg(p)]));
      await t.until(() => t.acks().length === 2, "the batch");
      expect(await rows(p)).toBe(7);
      expect(await metricValue(metrics.batches)).toBe(1);
    });

    test("writes a smaller batch once maxWaitMs passed since its first delivery", async () => {
      const p = `time${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics } = make(t, { maxRows: 1000, maxWaitMs: 30 });
      for (let i = 0; i < 3; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      await t.until(() => t.acks().length === 3, "the timed batch");
      expect(await rows(p)).toBe(3);
      expect(await metricValue(metrics.batches)).toBe(1);
    });

    test("is idempotent on msgId: the same message twice, in one batch or later, is one row", async () => {
      const p = `idem${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxWaitMs: 0 });
      const m = msg(p);
      batcher.onDelivery(t.delivery("1", [m]));
      batcher.onDelivery(t.delivery("2", [{ ...m }, msg(p)]));
      await t.until(() => t.acks().length === 2, "the first batch");
      batcher.onDelivery(t.delivery("3", [{ ...m }]));
      await t.until(() => t.acks().length === 3, "the redelivery");
      expect(await rows(p)).toBe(2);
      const stored = await tdb.handle.db.select().from(messages).where(like(messages.id, m.msgId));
      expect(stored.map((r) => [r.id, r.body, r.sender, r.recipient])).toEqual([[m.msgId, m.body, "alice", "bob"]]);
    });

    test("acks nothing while the database fails, keeps the batch and retries; after recovery writes and acks it", async () => {
      const p = `fail${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics } = make(t, { maxRows: 2 });
      await tdb.breakInserts();
      try {
        batcher.onDelivery(t.delivery("1", [msg(p)]));
        batcher.onDelivery(t.delivery("2", [msg(p)]));
        batcher.onDelivery(t.delivery("3", [msg(p)]));
        batcher.onBarrier(t.barrier("b"));
        await t.until(() => t.log.some((e) => e.startsWith("warn:")), "a failed insert");
        expect(t.acks()).toEqual([]);
        expect(await metricValue(metrics.dbErrors)).toBeGreaterThanOrEqual(1);
      } finally {
        await tdb.healInserts();
      }
      await t.until(() => t.log.includes("done:b"), "the barrier after recovery");
      expect(t.log.filter((e) => !e.startsWith("warn:"))).toEqual(["ack:1", "ack:2", "ack:3", "done:b"]);
      expect(await rows(p)).toBe(3);
    });

    test("a barrier is done only after everything received before it is committed and acked", async () => {
      const p = `bar${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t);
      batcher.onBarrier(t.barrier("empty"));
      await t.until(() => t.log.includes("done:empty"), "a barrier with nothing before it");
      batcher.onDelivery(t.delivery("1", [msg(p)]));
      batcher.onDelivery(t.delivery("2", [msg(p), msg(p)]));
      let committedAtDone: Promise<number> | undefined;
      batcher.onBarrier(() => {
        committedAtDone = rows(p);
        t.note("done:b1");
      });
      batcher.onDelivery(t.delivery("3", [msg(p)]));
      batcher.onBarrier(t.barrier("b2"));
      await t.until(() => t.log.includes("done:b2"), "both barriers");
      expect(t.log).toEqual(["done:empty", "ack:1", "ack:2", "done:b1", "ack:3", "done:b2"]);
      expect(await committedAtDone).toBeGreaterThanOrEqual(3);
      expect(await rows(p)).toBe(4);
    });

    test("drain commits and acks what it holds, then ignores new deliveries and barriers", async () => {
      const p = `drain${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t);
      batcher.onDelivery(t.delivery("1", [msg(p)]));
      batcher.onDelivery(t.delivery("2", [msg(p)]));
      expect(await batcher.drain(5000)).toBe(true);
      expect(t.acks()).toEqual(["ack:1", "ack:2"]);
      batcher.onDelivery(t.delivery("late", [msg(p)]));
      batcher.onBarrier(t.barrier("late"));
      expect(await batcher.drain(5000)).toBe(true);
      expect(t.log).toEqual(["ack:1", "ack:2"]);
      expect(await rows(p)).toBe(2);
    });

    test("drain gives up after its timeout while the database is down, acking nothing", async () => {
      const p = `drainfail${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t);
      await tdb.breakInserts();
      try {
        batcher.onDelivery(t.delivery("1", [msg(p)]));
        expect(await batcher.drain(300)).toBe(false);
        expect(t.acks()).toEqual([]);
      } finally {
        await tdb.healInserts();
      }
      expect(await rows(p)).toBe(0);
    });
  });
}

batcherSuite("PostgreSQL", postgresDb);
batcherSuite("PGlite", pgliteDb);

describe("batcher on PostgreSQL, when inserts do not settle", () => {
  let tdb: PgTestDb;
  beforeAll(async () => {
    tdb = await postgresDb();
  });
  afterAll(async () => {
    await tdb.close();
  });

  test("an insert blocked past stallMs is abandoned, the connections reset, and the batch commits once it can", async () => {
    const p = `stall${randomUUID()}`;
    const t = tracker();
    const metrics = createPersistMetrics(createMetrics("test"));
    const errors: string[] = [];
    const log: Logger = { ...silentLogger, error: (m) => void errors.push(m), child: () => log };
    const batcher = createBatcher({ database: tdb.handle, maxRows: 3, maxWaitMs: 10, log, metrics, stallMs: 300 });
    const unlock = await tdb.lockTable();
    try {
      for (let i = 0; i < 3; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      for (const deadline = Date.now() + 8000; errors.length < 2 && Date.now() < deadline; ) await Bun.sleep(20);
      expect(errors[0]).toContain("stalled");
      expect(await metricValue(metrics.dbStalls)).toBeGreaterThanOrEqual(2);
      expect(t.acks()).toEqual([]);
    } finally {
      await unlock();
    }
    batcher.onBarrier(t.barrier("b"));
    await t.until(() => t.log.includes("done:b"), "the batch after the lock", 15_000);
    expect(t.log).toEqual(["ack:0", "ack:1", "ack:2", "done:b"]);
    expect(await rowsWith(tdb.handle, p)).toBe(3);
  });
});
