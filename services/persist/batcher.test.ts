import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { asc, count, eq, inArray, like, sql } from "drizzle-orm";
import postgres from "postgres";
import { openPglite, openPostgres, type DbHandle } from "../../shared/db/index.ts";
import { ENTRIES, ofUser, rowsOf, type StreamEntry } from "../../shared/db/messages.ts";
import { messages, stream } from "../../shared/db/schema.ts";
import { silentLogger, type Logger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createMemoryQueue } from "../../shared/queue/queue-memory.ts";
import type { QueueConsumer, QueueDelivery } from "../../shared/queue/queue.ts";
import { createMemoryAllocator } from "../../shared/stream/allocator-memory.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import { createBatcher, type Batcher, type BatcherOptions } from "./batcher.ts";
import { createFloorKeeper } from "./floors.ts";
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
  await admin.unsafe(
    `create schema ${schema}; create table ${schema}.messages (like public.messages including all); create table ${schema}.stream (like public.stream including all)`,
  );
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

/** Records acks (and what the test notes) in order, and lets a test await a count of them. */
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

/** `user`'s stream entries as `epoch.pos:msgId`, in stream order. */
async function entriesOf(handle: DbHandle, user: string): Promise<string[]> {
  const rows = rowsOf<{ epoch: string; pos: string; msg_id: string }>(
    await handle.db.execute(sql`select s.epoch, s.pos, s.msg_id from ${ENTRIES} where ${ofUser(user)} order by s.epoch, s.pos`),
  );
  return rows.map((r) => `${r.epoch}.${r.pos}:${r.msg_id}`);
}

/** How many stream entries the given messages have, over all users. */
async function entriesFor(handle: DbHandle, msgIds: string[]): Promise<number> {
  const [r] = await handle.db.select({ n: count() }).from(stream).where(inArray(stream.msgId, msgIds));
  // and those direct messages keep in their own rows
  const [i] = await handle.db
    .select({ n: sql<number>`(count(${messages.senderPos}) + count(${messages.recipientPos}))::int` })
    .from(messages)
    .where(inArray(messages.id, msgIds));
  return Number(r?.n ?? 0) + Number(i?.n ?? 0);
}

/** An allocator that counts its allocate calls. */
function counting(inner: StreamAllocator): { calls: number; allocator: StreamAllocator } {
  const c = {
    calls: 0,
    allocator: {
      ...inner,
      allocate: (reqs) => {
        c.calls++;
        return inner.allocate(reqs);
      },
    } satisfies StreamAllocator,
  };
  return c;
}

const uid = (name: string) => `${name}-${randomUUID().slice(0, 8)}`;

function batcherSuite(backend: string, open: () => Promise<TestDb>) {
  describe(`batcher on ${backend}`, () => {
    let tdb: TestDb;
    // One allocator for the suite, as one Redis serves every persist: two memory allocators could
    // open the same epoch for a user and hand out its positions twice.
    const allocator = createMemoryAllocator();
    beforeAll(async () => {
      tdb = await open();
    }, 120_000);
    afterAll(async () => {
      await tdb.close();
    });

    const rows = (prefix: string) => rowsWith(tdb.handle, prefix);
    const entries = (user: string) => entriesOf(tdb.handle, user);
    const make = (t: ReturnType<typeof tracker>, o: Partial<BatcherOptions> = {}) => {
      const metrics = createPersistMetrics(createMetrics("test"));
      const alloc = counting(o.allocator ?? allocator);
      const batcher = createBatcher({ database: tdb.handle, maxRows: 1000, maxWaitMs: 60_000, log: warnInto(t), metrics, ...o, allocator: alloc.allocator });
      return { batcher, metrics, alloc };
    };

    test("writes a batch as soon as it reaches maxRows, one allocator call and one INSERT per batch", async () => {
      const p = `size${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics, alloc } = make(t, { maxRows: 5 });
      for (let i = 0; i < 12; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      await t.until(() => t.acks().length === 10, "two full batches");
      expect(await rows(p)).toBe(10);
      // the two batches may commit in either order (two are written at once)
      expect(t.acks().sort()).toEqual(Array.from({ length: 10 }, (_, i) => `ack:${i}`).sort());
      expect(await batcher.drain(5000)).toBe(true); // writes the last, partial batch
      expect(t.acks().length).toBe(12);
      expect(await rows(p)).toBe(12);
      expect(alloc.calls).toBe(3);
      expect(await metricValue(metrics.batches)).toBe(3);
      expect(await metricValue(metrics.batchSize, "persist_batch_size_sum")).toBe(12);
      expect(await metricValue(metrics.rowsInserted)).toBe(12);
    });

    test("holding as many deliveries as the consumer's prefetch, it writes at once instead of waiting for more that cannot come", async () => {
      const p = `pre${randomUUID()}`;
      const t = tracker();
      // maxWaitMs is a minute: only the prefetch rule can get these written within the wait below
      const { batcher } = make(t, { prefetch: 3 });
      for (let i = 0; i < 3; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      await t.until(() => t.acks().length === 3, "the batch of 3 (the prefetch)");
      expect(await rows(p)).toBe(3);
      // and again once those are acked: the count follows the acks
      for (let i = 3; i < 6; i++) batcher.onDelivery(t.delivery(String(i), [msg(p)]));
      await t.until(() => t.acks().length === 6, "the next 3");
      // fewer than the prefetch held: it waits for maxWaitMs or maxRows as before
      batcher.onDelivery(t.delivery("6", [msg(p)]));
      await Bun.sleep(300);
      expect(t.acks().length).toBe(6);
      expect(await batcher.drain(5000)).toBe(true);
      expect(await rows(p)).toBe(7);
    });

    test("writes the next batch while an earlier one is held up (two in flight), and only one batch at a time with concurrency 1", async () => {
      for (const concurrency of [2, 1]) {
        const p = `conc${randomUUID()}`;
        const t = tracker();
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        let first = true;
        // the first batch's allocation hangs until released
        const slow: StreamAllocator = {
          ...allocator,
          allocate: async (reqs) => {
            if (first) {
              first = false;
              await held;
            }
            return allocator.allocate(reqs);
          },
        };
        const { batcher } = make(t, { maxRows: 2, allocator: slow, concurrency });
        for (const name of ["a1", "a2", "b1", "b2"]) batcher.onDelivery(t.delivery(name, [msg(p)]));
        if (concurrency === 2) {
          await t.until(() => t.acks().length === 2, "the second batch while the first is held");
          expect(t.acks().sort()).toEqual(["ack:b1", "ack:b2"]);
        } else {
          await Bun.sleep(300);
          expect(t.acks()).toEqual([]);
        }
        release();
        await t.until(() => t.acks().length === 4, "both batches");
        expect(await rows(p)).toBe(4);
      }
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

    test("is idempotent on msgId: the same message twice, in one batch or later, is one row with one entry per user", async () => {
      const p = `idem${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxWaitMs: 0 });
      const [from, to] = [uid("alice"), uid("bob")];
      const m = msg(p, { from, to });
      batcher.onDelivery(t.delivery("1", [m]));
      batcher.onDelivery(t.delivery("2", [{ ...m }, msg(p)]));
      await t.until(() => t.acks().length === 2, "the first batch");
      batcher.onDelivery(t.delivery("3", [{ ...m }]));
      await t.until(() => t.acks().length === 3, "the redelivery");
      expect(await rows(p)).toBe(2);
      const stored = await tdb.handle.db.select().from(messages).where(like(messages.id, m.msgId));
      expect(stored.map((r) => [r.id, r.body, r.sender, r.recipient])).toEqual([[m.msgId, m.body, from, to]]);
      // no rcpt (queued by the previous version): one entry in the sender's and one in the recipient's stream
      expect((await entries(from)).map((e) => e.split(":")[1])).toEqual([m.msgId]);
      expect((await entries(to)).map((e) => e.split(":")[1])).toEqual([m.msgId]);
    });

    test("stores every column as given: a field the message lacks is NULL (not JSON null), an event keeps its kind, ref and data", async () => {
      const p = `cols${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxWaitMs: 0 });
      const [a, b] = [uid("alice"), uid("bob")];
      const dm = msg(p, { from: a, to: b });
      const inGroup = msg(p, { from: a, to: undefined, group: "g1", rcpt: [a, b] });
      const event = msg(p, { from: b, to: a, body: "", kind: "note", ref: dm.msgId, data: { n: 1, s: "x", list: [1, null] } });
      batcher.onDelivery(t.delivery("1", [dm, inGroup, event]));
      await t.until(() => t.acks().length === 1, "the batch");
      const stored = await tdb.handle.db
        .select({ id: messages.id, recipient: messages.recipient, group: messages.groupId, conv: messages.conv, kind: messages.kind, ref: messages.ref, data: messages.data, dataIsNull: sql<boolean>`${messages.data} is null` })
        .from(messages)
        .where(like(messages.id, `${p}-%`));
      expect(Object.fromEntries(stored.map(({ id, ...r }) => [id, r]))).toEqual({
        [dm.msgId]: { recipient: b, group: null, conv: `d:${a}:${b}`, kind: "message", ref: null, data: null, dataIsNull: true },
        [inGroup.msgId]: { recipient: null, group: "g1", conv: "g:g1", kind: "message", ref: null, data: null, dataIsNull: true },
        [event.msgId]: { recipient: a, group: null, conv: `d:${a}:${b}`, kind: "note", ref: dm.msgId, data: { n: 1, s: "x", list: [1, null] }, dataIsNull: false },
      });
    });

    test("writes an entry for every rcpt user, at the positions the gateway was given when it allocated first", async () => {
      const p = `rcpt${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxWaitMs: 0 });
      const [a, b, c] = [uid("a"), uid("b"), uid("c")];
      const group = msg(p, { from: a, to: undefined, group: "g", rcpt: [a, b, c] });
      const direct = msg(p, { from: b, to: c, rcpt: [b, c] });
      const self = msg(p, { from: c, to: c }); // no rcpt, to self: one entry
      // the gateway allocated the group message (with its claim) before persist got it
      const [atGateway] = await allocator.allocate([{ msgId: group.msgId, users: [a, b, c], claim: { sender: a, ts: group.ts } }]);
      batcher.onDelivery(t.delivery("1", [group, direct, self]));
      await t.until(() => t.acks().length === 1, "the batch");
      const at = (u: string, mm: ChatMessage) => {
        const pos = atGateway!.positions[u];
        return pos ? `${pos.epoch}.${pos.pos}:${mm.msgId}` : undefined;
      };
      expect(await entries(a)).toEqual([at(a, group)!]);
      const bs = await entries(b);
      expect(bs[0]).toBe(at(b, group)!);
      expect(bs.map((e) => e.split(":")[1])).toEqual([group.msgId, direct.msgId]);
      expect((await entries(c)).map((e) => e.split(":")[1])).toEqual([group.msgId, direct.msgId, self.msgId]);
      // positions follow 1, 2, 3 within the user's epoch
      expect((await entries(c)).map((e) => e.split(":")[0]!.split(".")[1])).toEqual(["1", "2", "3"]);
      expect(await entriesFor(tdb.handle, [group.msgId, direct.msgId, self.msgId])).toBe(3 + 2 + 1);
    });

    test("a message persist gets far behind its user's other messages is still written at the gateway's position, whatever the floors", async () => {
      const p = `lag${randomUUID()}`;
      const t = tracker();
      const small = createMemoryAllocator({ window: 3 });
      const floors = createFloorKeeper({ allocator: small, database: tdb.handle, log: silentLogger, intervalMs: 0 });
      const { batcher } = make(t, { maxWaitMs: 0, allocator: small, onWritten: floors.written });
      const [a, b] = [uid("a"), uid("b")];
      const late = msg(p, { from: a, to: b, rcpt: [a, b] });
      const [atGateway] = await small.allocate([{ msgId: late.msgId, users: [a, b], claim: { sender: a, ts: late.ts } }]);
      // Ten more for b are allocated and written before `late` reaches persist (another persist was slow).
      for (let i = 0; i < 10; i++) batcher.onDelivery(t.delivery(`o${i}`, [msg(p, { from: a, to: b, rcpt: [a, b], body: `o${i}` })]));
      await t.until(() => t.acks().length === 10, "the others");
      // the floor keeper sees positions 2..11 stored and 1 not: no floor yet, so ten more
      // allocations (rotations of the window of 3) keep `late`'s
      await floors.round();
      expect((await small.floors([b]))[b]!.pos).toBe(0);
      await small.allocate(Array.from({ length: 10 }, (_, i) => ({ msgId: `${p}-more${i}`, users: [a, b] })));
      batcher.onDelivery(t.delivery("late", [late]));
      await t.until(() => t.acks().length === 11, "the late one");
      const pb = atGateway!.positions[b]!;
      expect(await entries(b)).toContain(`${pb.epoch}.${pb.pos}:${late.msgId}`);
      expect((await entries(b)).length).toBe(11); // no entry elsewhere, no hole at the gateway's position
      // now everything up to 11 is stored: the floor moves there
      await floors.round();
      expect((await small.floors([b]))[b]).toEqual({ epoch: pb.epoch, pos: 11 });
    });

    test("the floor keeper: a user's floor becomes the highest position persist wrote only once storage holds every position up to it; allocations at or below it may then leave the window", async () => {
      const p = `floor${randomUUID()}`;
      const t = tracker();
      const small = createMemoryAllocator({ window: 3 });
      const fm = createPersistMetrics(createMetrics("test"));
      const floors = createFloorKeeper({ allocator: small, database: tdb.handle, log: silentLogger, intervalMs: 0, metrics: fm });
      const written: StreamEntry[][] = [];
      const { batcher } = make(t, { maxWaitMs: 0, allocator: small, onWritten: (es) => (written.push(es), floors.written(es)) });
      const [a, b] = [uid("fa"), uid("fb")];
      const ms = Array.from({ length: 6 }, (_, i) => msg(p, { from: a, to: b, rcpt: [a, b], body: `f${i}` }));
      // the gateways allocated all six (positions 1..6 for both users) ...
      const at = await small.allocate(ms.map((m) => ({ msgId: m.msgId, users: [a, b], claim: { sender: a, ts: m.ts } })));
      // ... and persist writes all but the second (still in the queue, or in another persist's batch)
      for (const [i, m] of ms.entries()) if (i !== 1) batcher.onDelivery(t.delivery(`m${i}`, [m]));
      await t.until(() => t.acks().length === 5, "five of six");
      // the entries of each committed batch, after its commit, with the positions it wrote
      expect(written.flat().filter((e) => e.user === b).map((e) => e.position.pos).sort()).toEqual([1, 3, 4, 5, 6]);
      await floors.round();
      expect(Object.values(await small.floors([a, b])).map((f) => f.pos)).toEqual([0, 0]);
      expect(await metricValue(fm.floorsMoved)).toBe(0);
      expect(await metricValue(fm.floorsWaiting)).toBe(2);
      // however many allocations follow, the unwritten second keeps its positions
      await small.allocate(Array.from({ length: 10 }, (_, i) => ({ msgId: `${p}-x${i}`, users: [a, b] })));
      const [second] = await small.allocate([{ msgId: ms[1]!.msgId, users: [a, b] }]);
      expect(second!.positions).toEqual(at[1]!.positions);
      // once it is written the next round moves both floors to 6 (the highest written; 7..16 are not)
      batcher.onDelivery(t.delivery("m1", [ms[1]!]));
      await t.until(() => t.acks().length === 6, "the second");
      await floors.round();
      expect(await small.floors([a, b])).toEqual({ [a]: at[5]!.positions[a]!, [b]: at[5]!.positions[b]! });
      expect(await metricValue(fm.floorsMoved)).toBe(2);
      expect(await metricValue(fm.floorsWaiting)).toBe(0);
      // and allocations at or below the floor may now leave: after more rotations the first is new
      await small.allocate(Array.from({ length: 10 }, (_, i) => ({ msgId: `${p}-y${i}`, users: [a, b] })));
      const [first] = await small.allocate([{ msgId: ms[0]!.msgId, users: [a] }]);
      expect(first!.positions[a]!.pos).toBeGreaterThan(26);
      // a round with nothing new sets nothing and reads nothing
      await floors.round();
      expect(await small.floors([a, b])).toEqual({ [a]: at[5]!.positions[a]!, [b]: at[5]!.positions[b]! });
    });

    test("the floor keeper keeps what it could not check for the next round (allocator or database away), and forgets a user whose epoch changed", async () => {
      const p = `floorfail${randomUUID()}`;
      const t = tracker();
      const small = createMemoryAllocator();
      let away = true;
      const reads: string[][] = [];
      const flaky: StreamAllocator = {
        ...small,
        floors: (users) => (reads.push(users), away ? Promise.reject(new Error("allocator away")) : small.floors(users)),
      };
      const floors = createFloorKeeper({ allocator: flaky, database: tdb.handle, log: warnInto(t), intervalMs: 0 });
      const { batcher } = make(t, { maxWaitMs: 0, allocator: small, onWritten: floors.written });
      const [a, b] = [uid("ga"), uid("gb")];
      for (let i = 0; i < 3; i++) batcher.onDelivery(t.delivery(`m${i}`, [msg(p, { from: a, to: b, rcpt: [a, b] })]));
      await t.until(() => t.acks().length === 3, "three");
      await floors.round();
      expect(t.log.filter((e) => e.startsWith("warn:"))).toEqual(["warn:could not move the allocator's floors; retrying next round"]);
      away = false;
      await floors.round();
      expect(Object.values(await small.floors([a, b])).map((f) => f.pos)).toEqual([3, 3]);
      // the database away: the same
      batcher.onDelivery(t.delivery("m3", [msg(p, { from: a, to: b, rcpt: [a, b] })]));
      await t.until(() => t.acks().length === 4, "the fourth");
      await tdb.breakInserts(); // renames the messages table: the count fails too
      try {
        await floors.round();
      } finally {
        await tdb.healInserts();
      }
      expect(Object.values(await small.floors([a, b])).map((f) => f.pos)).toEqual([3, 3]);
      await floors.round();
      expect(Object.values(await small.floors([a, b])).map((f) => f.pos)).toEqual([4, 4]);
      // written in an epoch the allocator no longer has (it lost the users' data): dropped, not retried
      batcher.onDelivery(t.delivery("m4", [msg(p, { from: a, to: b, rcpt: [a, b] })]));
      await t.until(() => t.acks().length === 5, "the fifth");
      small.wipe();
      const [n] = await small.allocate([{ msgId: `${p}-new`, users: [a, b] }]);
      reads.length = 0;
      await floors.round();
      await floors.round();
      expect(reads).toEqual([[a, b]]); // read once, then forgotten
      expect((await small.floors([a]))[a]).toEqual({ epoch: n!.positions[a]!.epoch, pos: 0 });
      expect(t.log.filter((e) => e.startsWith("warn:")).length).toBe(2); // the allocator, then the database
    });

    test("healthy() turns false while a batch keeps failing, and true again once it is written", async () => {
      const p = `health${randomUUID()}`;
      const t = tracker();
      let down = true;
      const flaky: StreamAllocator = {
        ...allocator,
        allocate: (reqs) => (down ? Promise.reject(new Error("allocator down")) : allocator.allocate(reqs)),
      };
      const { batcher } = make(t, { maxWaitMs: 0, allocator: flaky, unhealthyAfterMs: 50 });
      expect(batcher.healthy()).toBe(true);
      batcher.onDelivery(t.delivery("1", [msg(p)]));
      // healthy() changes with time, not on an event the tracker sees: poll it, bounded.
      for (const end = Date.now() + 5000; batcher.healthy() && Date.now() < end; ) await Bun.sleep(10);
      expect(batcher.healthy()).toBe(false);
      expect(t.acks()).toEqual([]);
      down = false;
      await t.until(() => t.acks().length === 1, "the write");
      expect(batcher.healthy()).toBe(true);
    });

    test("copies of one message naming different users (a group resent after a member joined) give every named user an entry", async () => {
      const p = `union${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxWaitMs: 0 });
      const [a, b, c] = [uid("a"), uid("b"), uid("c")];
      const first = msg(p, { from: a, to: undefined, group: "g", rcpt: [a, b] });
      const resent = { ...first, rcpt: [a, b, c] };
      // the resend's gateway gave c a position; without the union c's stream would keep a hole there
      const [atGateway] = await allocator.allocate([{ msgId: first.msgId, users: [a, b, c] }]);
      batcher.onDelivery(t.delivery("1", [first, resent]));
      await t.until(() => t.acks().length === 1, "the batch");
      const cPos = atGateway!.positions[c]!;
      expect(await entries(c)).toEqual([`${cPos.epoch}.${cPos.pos}:${first.msgId}`]);
      expect(await entriesFor(tdb.handle, [first.msgId])).toBe(3);
    });

    test("a redelivered batch writes nothing twice: no new rows, no entries at new positions", async () => {
      const p = `redel${randomUUID()}`;
      const t = tracker();
      const [a, b, c] = [uid("a"), uid("b"), uid("c")];
      const ms = Array.from({ length: 4 }, (_, i) => msg(p, { from: a, to: undefined, group: "g", rcpt: [a, b, c], body: `r${i}` }));
      const first = make(t, { maxWaitMs: 0 });
      first.batcher.onDelivery(t.delivery("1", ms.slice(0, 2)));
      first.batcher.onDelivery(t.delivery("2", ms.slice(2)));
      await t.until(() => t.acks().length === 2, "the first write");
      const before = { a: await entries(a), b: await entries(b), c: await entries(c) };
      expect(before.a.length).toBe(4);
      // The consumer died before its ack reached the broker: the deliveries come again, to another
      // batcher, mixed with a new message and grouped differently.
      const fresh = msg(p, { from: a, to: undefined, group: "g", rcpt: [a, b, c], body: "new" });
      const second = make(t, { maxWaitMs: 0 });
      second.batcher.onDelivery(t.delivery("3", [ms[3]!, ms[0]!]));
      second.batcher.onDelivery(t.delivery("4", [ms[1]!, fresh, ms[2]!]));
      await t.until(() => t.acks().length === 4, "the redelivery");
      expect(await metricValue(second.metrics.rowsInserted)).toBe(1);
      expect(await rows(p)).toBe(5);
      expect(await entriesFor(tdb.handle, ms.map((m) => m.msgId))).toBe(12);
      for (const u of [a, b, c] as const) {
        const now = await entries(u);
        const key = u === a ? "a" : u === b ? "b" : "c";
        expect(now.slice(0, 4)).toEqual(before[key]);
        expect(now.length).toBe(5);
        expect(now[4]).toEndWith(`:${fresh.msgId}`);
      }
    });

    test("two batchers consuming one queue at once both write; every message is stored once, with an entry for every rcpt user", async () => {
      const p = `two${randomUUID()}`;
      const t = tracker();
      const queue = createMemoryQueue();
      const [a, b, c] = [uid("a"), uid("b"), uid("c")];
      const ms: ChatMessage[] = Array.from({ length: 60 }, (_, i) =>
        i % 3 === 0 ? msg(p, { from: b, to: a, rcpt: [b, a] }) : msg(p, { from: a, to: undefined, group: "g", rcpt: [a, b, c] }),
      );
      const one = make(t, { maxRows: 4, maxWaitMs: 5 });
      const two = make(t, { maxRows: 4, maxWaitMs: 5 });
      const got = { one: 0, two: 0 };
      const via = (name: "one" | "two", batcher: Batcher): QueueConsumer => ({
        onDelivery(d) {
          got[name]++;
          batcher.onDelivery({ messages: d.messages, ack: () => (d.ack(), t.note(`ack:${name}`)) });
        },
      });
      const subs = [await queue.consume(via("one", one.batcher), { prefetch: 8 }), await queue.consume(via("two", two.batcher), { prefetch: 8 })];
      try {
        // 30 deliveries of two messages, and 5 of them published twice (a resend through another gateway)
        const deliveries = Array.from({ length: 30 }, (_, i) => ms.slice(2 * i, 2 * i + 2));
        const twice = deliveries.slice(10, 15);
        await Promise.all([...deliveries, ...twice].map((d) => queue.publish(d)));
        await t.until(() => t.acks().length === 35, "every delivery acked");
      } finally {
        for (const s of subs) await s.stop();
        await Promise.all([one.batcher.drain(1000), two.batcher.drain(1000)]);
      }
      expect(got.one).toBeGreaterThan(0);
      expect(got.two).toBeGreaterThan(0);
      expect(got.one + got.two).toBe(35);
      const inserted = [await metricValue(one.metrics.rowsInserted), await metricValue(two.metrics.rowsInserted)];
      expect(inserted[0]).toBeGreaterThan(0);
      expect(inserted[1]).toBeGreaterThan(0);
      expect(inserted[0]! + inserted[1]!).toBe(60);
      expect(await rows(p)).toBe(60);
      const involving = (u: string) => ms.filter((m) => m.rcpt!.includes(u)).map((m) => m.msgId);
      for (const u of [a, b, c]) {
        const es = await entries(u);
        const want = involving(u);
        expect(es.length).toBe(want.length);
        expect(es.map((e) => e.split(":")[1]).sort()).toEqual([...want].sort());
        // one epoch, positions 1..n without holes
        expect(new Set(es.map((e) => e.split(".")[0])).size).toBe(1);
        expect(es.map((e) => Number(e.split(":")[0]!.split(".")[1]))).toEqual(want.map((_, i) => i + 1));
      }
      expect(await entriesFor(tdb.handle, ms.map((m) => m.msgId))).toBe(20 * 2 + 40 * 3);
    });

    test("acks a delivery only once its rows and entries are committed", async () => {
      const p = `ackafter${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t, { maxRows: 3 });
      const [from, to] = [uid("from"), uid("to")];
      const seenAtAck: Array<Promise<[number, number]>> = [];
      const ms = [msg(p, { from, to }), msg(p, { from, to }), msg(p, { from, to })];
      for (const m of ms)
        batcher.onDelivery({
          messages: [m],
          ack: () => {
            seenAtAck.push(Promise.all([rows(p), entriesFor(tdb.handle, [m.msgId])]));
            t.note(`ack:${m.msgId}`);
          },
        });
      await t.until(() => t.acks().length === 3, "the batch");
      for (const seen of await Promise.all(seenAtAck)) expect(seen).toEqual([3, 2]);
    });

    test("acks nothing while the database fails, keeps the batch and retries; after recovery writes and acks it", async () => {
      const p = `fail${randomUUID()}`;
      const t = tracker();
      const { batcher, metrics } = make(t, { maxRows: 2, maxWaitMs: 50 });
      await tdb.breakInserts();
      try {
        batcher.onDelivery(t.delivery("1", [msg(p)]));
        batcher.onDelivery(t.delivery("2", [msg(p)]));
        batcher.onDelivery(t.delivery("3", [msg(p)]));
        await t.until(() => t.log.some((e) => e.startsWith("warn:")), "a failed insert");
        expect(t.acks()).toEqual([]);
        expect(await metricValue(metrics.dbErrors)).toBeGreaterThanOrEqual(1);
      } finally {
        await tdb.healInserts();
      }
      await t.until(() => t.acks().length === 3, "the acks after recovery");
      expect(t.log.filter((e) => !e.startsWith("warn:")).sort()).toEqual(["ack:1", "ack:2", "ack:3"]);
      expect(await rows(p)).toBe(3);
    });

    test("drain commits and acks what it holds, then ignores new deliveries", async () => {
      const p = `drain${randomUUID()}`;
      const t = tracker();
      const { batcher } = make(t);
      batcher.onDelivery(t.delivery("1", [msg(p)]));
      batcher.onDelivery(t.delivery("2", [msg(p)]));
      expect(await batcher.drain(5000)).toBe(true);
      expect(t.acks()).toEqual(["ack:1", "ack:2"]);
      batcher.onDelivery(t.delivery("late", [msg(p)]));
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
    const batcher = createBatcher({ database: tdb.handle, allocator: createMemoryAllocator(), maxRows: 3, maxWaitMs: 10, log, metrics, stallMs: 300 });
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
    await t.until(() => t.acks().length === 3, "the batch after the lock", 15_000);
    expect(t.log).toEqual(["ack:0", "ack:1", "ack:2"]);
    expect(await rowsWith(tdb.handle, p)).toBe(3);
  });
});
