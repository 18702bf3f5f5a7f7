import { describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import type { ChatMessage } from "../protocol.ts";
import { LEGACY_EPOCH, type Position } from "../stream/position.ts";
import type { Db } from "./index.ts";
import { conversationKey, countEntries, countEntriesOf, ENTRIES, insertBatch, latestPosition, latestQuery, ofUser, streamQuery, legacyPosition, readConversation, readStream, rowsOf, type StreamEntry, type StreamMessage } from "./messages.ts";

const dialect = new PgDialect();
type PlanNode = { "Node Type": string; "Relation Name"?: string; "Actual Rows": number; "Actual Loops"?: number; Plans?: PlanNode[] };

/**
 * The database role's contract, run against PostgreSQL and PGlite: the same queries must mean the
 * same on both, including positions compared as (epoch, pos) row values with bound parameters.
 */
export function dbContract(name: string, open: () => Promise<{ db: Db; concurrent: boolean }>) {
  describe(`database role: ${name}`, () => {
    const tag = () => crypto.randomUUID().slice(0, 8);
    let n = 0;
    const msg = (from: string, to: { to: string } | { group: string }, body = `b${n}`): ChatMessage => ({
      msgId: `m-${tag()}-${n++}`,
      id: `c${n}`,
      from,
      body,
      ts: 1_700_000_000_000 + n,
      ...to,
    });
    const entry = (user: string, epoch: number, pos: number, m: ChatMessage): StreamEntry => ({ user, position: { epoch, pos }, msgId: m.msgId, conv: conversationKey(m) });
    /** What readStream/readConversation should return for `m` at `position`. */
    const asRead = (m: ChatMessage, position: Position): StreamMessage => ({ ...m, position });
    const at = (ms: StreamMessage[]) => ms.map((m) => `${m.position.epoch}.${m.position.pos}:${m.msgId}`);
    const key = (m: ChatMessage, p: Position) => `${p.epoch}.${p.pos}:${m.msgId}`;
    const streamRows = async (db: Db, user: string) => {
      const r = await db.execute(sql`select s.epoch::text as e, s.pos::text as p, s.msg_id from ${ENTRIES} where ${ofUser(user)} order by s.epoch, s.pos`);
      const rows = (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows) as Array<{ e: string; p: string; msg_id: string }>;
      return rows.map((x) => `${x.e}.${x.p}:${x.msg_id}`);
    };

    test("insertBatch writes messages and entries once: a redelivered or overlapping batch writes nothing twice", async () => {
      const { db } = await open();
      const [a, b] = [`a-${tag()}`, `b-${tag()}`];
      const E = 1_700_000_000_000_000;
      const ms = [msg(a, { to: b }), msg(b, { to: a }), msg(a, { to: b })];
      const entries = ms.flatMap((m, i) => [entry(a, E, i + 1, m), entry(b, E, i + 1, m)]);
      expect(await insertBatch(db, ms, entries)).toBe(3);
      // the same batch again (a redelivery): nothing new
      expect(await insertBatch(db, ms, entries)).toBe(0);
      // overlapping: one old message with its entries, one new
      const extra = msg(a, { to: b });
      expect(await insertBatch(db, [ms[1]!, extra], [entry(a, E, 2, ms[1]!), entry(b, E, 2, ms[1]!), entry(a, E, 4, extra), entry(b, E, 4, extra)])).toBe(1);
      // a conflicting entry for a taken (user, epoch, pos) does not replace the first one
      expect(await insertBatch(db, [], [entry(a, E, 1, extra)])).toBe(0);
      const want = [...ms, extra].map((m, i) => key(m, { epoch: E, pos: i + 1 }));
      expect(await streamRows(db, a)).toEqual(want);
      expect(await streamRows(db, b)).toEqual(want);
      const read = await readStream(db, a, { epoch: E, pos: 0 }, { epoch: E, pos: 100 }, 100);
      expect(read).toEqual([...ms, extra].map((m, i) => asRead(m, { epoch: E, pos: i + 1 })));
      const r = await db.execute(sql`select count(*)::int as n from messages where id in (${sql.join([...ms, extra].map((m) => sql`${m.msgId}`), sql`, `)})`);
      const rows = (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows) as Array<{ n: number }>;
      expect(Number(rows[0]!.n)).toBe(4);
      expect(await insertBatch(db, [], [])).toBe(0);
    });

    test("concurrent insertBatch calls with overlapping batches store every message and entry once", async () => {
      const { db, concurrent } = await open();
      const u = `c-${tag()}`;
      const E = 42;
      const ms = Array.from({ length: 60 }, () => msg(u, { to: `d-${tag()}` }));
      const writers = Array.from({ length: concurrent ? 6 : 1 }, async (_, w) => {
        // each writer writes the whole range in its own order of batches, all overlapping
        const batches = Array.from({ length: 6 }, (_, i) => ms.slice(i * 10, i * 10 + 10));
        const order = w % 2 ? batches.reverse() : batches;
        let inserted = 0;
        for (const b of order) inserted += await insertBatch(db, b, b.map((m) => entry(u, E, ms.indexOf(m) + 1, m)));
        return inserted;
      });
      const counts = await Promise.all(writers);
      expect(counts.reduce((x, y) => x + y, 0)).toBe(60);
      expect(await streamRows(db, u)).toEqual(ms.map((m, i) => key(m, { epoch: E, pos: i + 1 })));
      expect(await countEntries(db, u, E, 0, 60)).toBe(60);
    });

    test("a direct message keeps its two entries in its own row; stored again at new positions (a redelivery after the window), it enters the stream there too", async () => {
      const { db } = await open();
      const [a, b] = [`a-${tag()}`, `b-${tag()}`];
      const E = 77;
      const m = msg(a, { to: b });
      expect(await insertBatch(db, [m], [entry(a, E, 1, m), entry(b, E, 3, m)])).toBe(1);
      const r = await db.execute(sql`select s_epoch::text as se, s_pos::text as sp, r_epoch::text as re, r_pos::text as rp,
        (select count(*) from stream where msg_id = ${m.msgId})::int as n from messages where id = ${m.msgId}`);
      const [row] = (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows) as Array<{ se: string; sp: string; re: string; rp: string; n: number }>;
      expect([row!.se, row!.sp, row!.re, row!.rp, Number(row!.n)]).toEqual(["77", "1", "77", "3", 0]);
      expect(await readStream(db, b, { epoch: E, pos: 0 }, { epoch: E, pos: 10 }, 10)).toEqual([asRead(m, { epoch: E, pos: 3 })]);
      // the same again: nothing new, anywhere
      expect(await insertBatch(db, [m], [entry(a, E, 1, m), entry(b, E, 3, m)])).toBe(0);
      expect(await streamRows(db, a)).toEqual([key(m, { epoch: E, pos: 1 })]);
      // new positions for it (the allocator forgot it): the message is at both, as with stream rows
      expect(await insertBatch(db, [m], [entry(a, E, 2, m), entry(b, E, 4, m)])).toBe(0);
      expect(await streamRows(db, a)).toEqual([key(m, { epoch: E, pos: 1 }), key(m, { epoch: E, pos: 2 })]);
      expect(await streamRows(db, b)).toEqual([key(m, { epoch: E, pos: 3 }), key(m, { epoch: E, pos: 4 })]);
      expect(await countEntries(db, b, E, 0, 10)).toBe(2);
      // a group message's entries, an event's and a note to self's stay in stream
      const g = msg(a, { group: `g_${tag()}` });
      const self = msg(a, { to: a });
      await insertBatch(db, [g, self], [entry(a, E, 5, g), entry(b, E, 5, g), entry(a, E, 6, self)]);
      const c = await db.execute(sql`select count(*)::int as n from stream where msg_id in (${g.msgId}, ${self.msgId})`);
      expect(Number(((Array.isArray(c) ? c : (c as { rows: unknown[] }).rows) as Array<{ n: number }>)[0]!.n)).toBe(3);
      expect((await readStream(db, a, { epoch: E, pos: 0 }, { epoch: E, pos: 10 }, 10)).map((x) => `${x.position.pos}:${x.msgId}`)).toEqual([
        `1:${m.msgId}`,
        `2:${m.msgId}`,
        `5:${g.msgId}`,
        `6:${self.msgId}`,
      ]);
    });

    test("reading a long stream reads no more than it returns, with a plan for its values or a generic one: the three places' index scans are merged, not fetched and sorted", async () => {
      const { db } = await open();
      const [u, v] = [`u-${tag()}`, `v-${tag()}`];
      const g = `g_${tag()}`;
      const E = 5;
      // 3,000 entries: direct messages both ways (kept in their rows) and group messages (stream rows)
      for (let b = 0; b < 3; b++) {
        const ms = Array.from({ length: 1000 }, (_, i) => (i % 3 === 0 ? msg(u, { group: g }) : i % 3 === 1 ? msg(u, { to: v }) : msg(v, { to: u })));
        await insertBatch(db, ms, ms.flatMap((m, i) => [entry(u, E, b * 1000 + i + 1, m), ...(m.group ? [] : [entry(v, E, b * 1000 + i + 1, m)])]));
      }
      await db.execute(sql`analyze messages`);
      await db.execute(sql`analyze stream`);
      /** The most rows any one scan of an EXPLAIN ANALYZE's plan produced. */
      const mostRowsIn = (r: unknown) => {
        const raw = Object.values(rowsOf<Record<string, unknown>>(r)[0]!)[0];
        const plan = (typeof raw === "string" ? JSON.parse(raw) : raw) as Array<{ Plan: PlanNode }>;
        let most = 0;
        const walk = (n: PlanNode) => {
          if (/Scan/.test(n["Node Type"]) && n["Relation Name"] !== undefined) most = Math.max(most, n["Actual Rows"] * (n["Actual Loops"] ?? 1));
          for (const c of n.Plans ?? []) walk(c);
        };
        walk(plan[0]!.Plan);
        return most;
      };
      // planned for its values (as an unnamed statement is, and a prepared one at first)
      const mostRowsScanned = async (q: ReturnType<typeof sql>) => mostRowsIn(await db.execute(sql`explain (analyze, format json) ${q}`));
      // planned once for any values (the generic plan a prepared statement may settle on: executePrepared)
      const mostRowsScannedGeneric = (q: ReturnType<typeof sql>) =>
        db.transaction(async (tx) => {
          const { sql: text, params } = dialect.sqlToQuery(q);
          await tx.execute(sql.raw(`prepare generic_plan_check as ${text}`));
          await tx.execute(sql`set local plan_cache_mode = force_generic_plan`);
          const args = params.map((p) => (typeof p === "number" ? String(p) : `'${String(p).replaceAll("'", "''")}'`)).join(", ");
          const r = await tx.execute(sql.raw(`explain (analyze, format json) execute generic_plan_check(${args})`));
          await tx.execute(sql.raw("deallocate generic_plan_check"));
          return mostRowsIn(r);
        });
      const top = { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
      for (const most of [mostRowsScanned, mostRowsScannedGeneric]) {
        expect(await most(streamQuery(u, { epoch: 0, pos: 0 }, top, 10))).toBeLessThanOrEqual(11);
        expect(await most(streamQuery(u, { epoch: E, pos: 1500 }, top, 10))).toBeLessThanOrEqual(11);
        expect(await most(latestQuery(u))).toBeLessThanOrEqual(2);
      }
      // and the answers are right
      expect((await readStream(db, u, { epoch: 0, pos: 0 }, top, 10)).map((m) => m.position.pos)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(await latestPosition(db, u)).toEqual({ epoch: E, pos: 3000 });
    });

    test("readStream: one user's entries with after < (epoch, pos) <= upTo, in (epoch, pos) order across epochs, paged by limit", async () => {
      const { db } = await open();
      const [u, v] = [`u-${tag()}`, `v-${tag()}`];
      const g = `g_${tag()}`;
      // epochs 9 < 10 < a realistic one (µs since 1970): compared as numbers, not text, and beyond 32 bits
      const [E1, E2, E3] = [9, 10, 1_760_000_000_000_000];
      const e1 = Array.from({ length: 11 }, (_, i) => (i % 3 === 2 ? msg(v, { group: g }) : i % 2 ? msg(v, { to: u }) : msg(u, { to: v })));
      const e2 = [msg(u, { to: v }), msg(v, { to: u })];
      const e3 = [msg(v, { group: g })];
      const placed: Array<[ChatMessage, Position]> = [
        ...e1.map((m, i): [ChatMessage, Position] => [m, { epoch: E1, pos: i + 1 }]),
        ...e2.map((m, i): [ChatMessage, Position] => [m, { epoch: E2, pos: i + 1 }]),
        ...e3.map((m, i): [ChatMessage, Position] => [m, { epoch: E3, pos: i + 1 }]),
      ];
      // written in a scrambled order, and v's stream at other positions alongside
      const scrambled = [...placed].reverse();
      await insertBatch(
        db,
        scrambled.map(([m]) => m),
        scrambled.flatMap(([m, p]) => [entry(u, p.epoch, p.pos, m), entry(v, p.epoch + 1, p.pos + 100, m)]),
      );
      // an entry whose message row is missing is left out
      const ghost = msg(u, { to: v });
      await insertBatch(db, [], [entry(u, E3, 2, ghost)]);
      const all = placed.map(([m, p]) => asRead(m, p));
      const everything = await readStream(db, u, { epoch: 0, pos: 0 }, { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER }, 1000);
      expect(everything).toEqual(all);
      expect(everything[2]!.group).toBe(g);
      expect(everything[2]!.to).toBeUndefined();
      expect(everything[1]!.to).toBe(u);
      expect(everything[1]!.group).toBeUndefined();

      // bounds: after is exclusive, upTo inclusive, both across epochs
      const mid = await readStream(db, u, { epoch: E1, pos: 10 }, { epoch: E2, pos: 1 }, 100);
      expect(at(mid)).toEqual([key(e1[10]!, { epoch: E1, pos: 11 }), key(e2[0]!, { epoch: E2, pos: 1 })]);
      expect(at(await readStream(db, u, { epoch: E1, pos: 11 }, { epoch: E3, pos: 1 }, 100))).toEqual(at(all.slice(11)));
      expect(at(await readStream(db, u, { epoch: E1, pos: 2 }, { epoch: E1, pos: 10 }, 100))).toEqual(at(all.slice(2, 10)));
      expect(await readStream(db, u, { epoch: E2, pos: 2 }, { epoch: E2, pos: 2 }, 100)).toEqual([]);
      expect(await readStream(db, u, { epoch: E3, pos: 1 }, { epoch: E3, pos: 5 }, 100)).toEqual([]); // the ghost at E3.2
      // a position in an epoch without entries bounds like any other
      expect(at(await readStream(db, u, { epoch: E2 + 1, pos: 0 }, { epoch: E3, pos: 0 }, 100))).toEqual([]);
      expect(at(await readStream(db, u, { epoch: E1, pos: 999 }, { epoch: E2 + 1, pos: 0 }, 100))).toEqual(at(all.slice(11, 13)));

      // paging: each page continues after the last position of the previous one
      const pages: string[][] = [];
      let after: Position = { epoch: 0, pos: 0 };
      for (;;) {
        const page = await readStream(db, u, after, { epoch: E3, pos: 1 }, 4);
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(4);
        pages.push(at(page));
        after = page.at(-1)!.position;
      }
      expect(pages.map((p) => p.length)).toEqual([4, 4, 4, 2]);
      expect(pages.flat()).toEqual(at(all));

      // v's stream holds the same messages at its own positions
      const vs = await readStream(db, v, { epoch: 0, pos: 0 }, { epoch: E1 + 1, pos: 200 }, 100);
      expect(at(vs)).toEqual(e1.map((m, i) => key(m, { epoch: E1 + 1, pos: i + 101 })));
    });

    test("readConversation pages one conversation of one user's stream, newest page first, across epochs", async () => {
      const { db } = await open();
      const [a, b, c] = [`a-${tag()}`, `b-${tag()}`, `c-${tag()}`];
      const [E1, E2] = [1_760_000_000_000_000, 1_760_000_000_000_001];
      const conv = [0, 1, 2, 3, 4].map((i) => msg(i % 2 ? b : a, { to: i % 2 ? a : b }, `h${i}`));
      const other = msg(a, { to: c }, "other");
      // a's stream: h0 h1 other h2 in E1, h3 h4 in E2; b's stream has the conversation elsewhere
      const aStream: Array<[ChatMessage, Position]> = [
        [conv[0]!, { epoch: E1, pos: 1 }],
        [conv[1]!, { epoch: E1, pos: 2 }],
        [other, { epoch: E1, pos: 3 }],
        [conv[2]!, { epoch: E1, pos: 4 }],
        [conv[3]!, { epoch: E2, pos: 1 }],
        [conv[4]!, { epoch: E2, pos: 2 }],
      ];
      await insertBatch(db, [...conv, other], [
        ...aStream.map(([m, p]) => entry(a, p.epoch, p.pos, m)),
        ...conv.map((m, i) => entry(b, 7, i + 1, m)),
      ]);
      const key_ = conversationKey({ from: b, to: a });
      expect(key_).toBe(conversationKey(conv[0]!));
      const p1 = await readConversation(db, a, key_, undefined, 2);
      expect(p1.messages).toEqual([asRead(conv[3]!, { epoch: E2, pos: 1 }), asRead(conv[4]!, { epoch: E2, pos: 2 })]);
      expect(p1.more).toBe(true);
      const p2 = await readConversation(db, a, key_, p1.messages[0]!.position, 2);
      expect(p2.messages.map((m) => m.body)).toEqual(["h1", "h2"]);
      expect(p2.messages.map((m) => m.position)).toEqual([
        { epoch: E1, pos: 2 },
        { epoch: E1, pos: 4 },
      ]);
      expect(p2.more).toBe(true);
      const p3 = await readConversation(db, a, key_, p2.messages[0]!.position, 2);
      expect(p3.messages.map((m) => m.body)).toEqual(["h0"]);
      expect(p3.more).toBe(false);
      // exactly `limit` left: no more
      const exact = await readConversation(db, a, key_, { epoch: E1, pos: 4 }, 2);
      expect(exact.messages.map((m) => m.body)).toEqual(["h0", "h1"]);
      expect(exact.more).toBe(false);
      // `before` is exclusive, and a position between epochs bounds like any other
      expect((await readConversation(db, a, key_, { epoch: E2, pos: 0 }, 10)).messages.map((m) => m.body)).toEqual(["h0", "h1", "h2"]);
      // the other user's stream: its own positions
      const bAll = await readConversation(db, b, key_, undefined, 10);
      expect(bAll.messages.map((m) => `${m.position.epoch}.${m.position.pos}:${m.body}`)).toEqual(conv.map((m, i) => `7.${i + 1}:${m.body}`));
      expect(bAll.more).toBe(false);
      // the other conversation and a stranger see only their own
      expect((await readConversation(db, a, conversationKey(other), undefined, 10)).messages).toEqual([asRead(other, { epoch: E1, pos: 3 })]);
      expect(await readConversation(db, c, conversationKey(other), undefined, 10)).toEqual({ messages: [], more: false });
    });

    test("countEntries counts one user's entries in one epoch with from < pos <= to", async () => {
      const { db } = await open();
      const [u, v] = [`u-${tag()}`, `v-${tag()}`];
      const E = 1_760_000_000_000_000;
      const ms = Array.from({ length: 6 }, () => msg(u, { to: v }));
      // u: E.1 E.2 E.3 E.5 (a hole at 4), and E+1.1 E+1.2; v: E.1..E.6
      const uPos: Position[] = [
        { epoch: E, pos: 1 },
        { epoch: E, pos: 2 },
        { epoch: E, pos: 3 },
        { epoch: E, pos: 5 },
        { epoch: E + 1, pos: 1 },
        { epoch: E + 1, pos: 2 },
      ];
      await insertBatch(db, ms, [...ms.map((m, i) => entry(u, uPos[i]!.epoch, uPos[i]!.pos, m)), ...ms.map((m, i) => entry(v, E, i + 1, m))]);
      expect(await countEntries(db, u, E, 0, 5)).toBe(4);
      expect(await countEntries(db, u, E, 0, 3)).toBe(3);
      expect(await countEntries(db, u, E, 1, 5)).toBe(3);
      expect(await countEntries(db, u, E, 3, 5)).toBe(1);
      expect(await countEntries(db, u, E, 3, 4)).toBe(0);
      expect(await countEntries(db, u, E, 5, 5)).toBe(0);
      expect(await countEntries(db, u, E + 1, 0, 100)).toBe(2);
      expect(await countEntries(db, u, E - 1, 0, 100)).toBe(0);
      expect(await countEntries(db, v, E, 0, 100)).toBe(6);
      expect(await countEntries(db, `nobody-${tag()}`, E, 0, 100)).toBe(0);
    });

    test("countEntriesOf answers every range as countEntries does, in one statement: entries in message rows (as sender, as recipient) and in stream rows", async () => {
      const { db } = await open();
      const [u, v] = [`u-${tag()}`, `v-${tag()}`];
      const E = 1_760_000_000_000_000;
      // u→v: u at E.1 E.2 E.3 (its sender side), v at E.1 E.2 E.3 (recipient side)
      const uv = Array.from({ length: 3 }, () => msg(u, { to: v }));
      // v→u: u at E.5 (a hole at 4), v at E.4
      const vu = msg(v, { to: u });
      // a group message: stream rows, u at E.6, v at E.5; and an event in u's stream at E+1.1
      const g = msg(u, { group: `g-${tag()}` });
      const ev = msg(u, { to: v });
      await insertBatch(db, [...uv, vu, g], [...uv.flatMap((m, i) => [entry(u, E, i + 1, m), entry(v, E, i + 1, m)]), entry(u, E, 5, vu), entry(v, E, 4, vu), entry(u, E, 6, g), entry(v, E, 5, g)]);
      await insertBatch(db, [ev], [entry(u, E + 1, 1, ev)]);
      const ranges = [
        { user: u, epoch: E, from: 0, to: 6 },
        { user: u, epoch: E, from: 0, to: 3 },
        { user: u, epoch: E, from: 3, to: 6 },
        { user: u, epoch: E, from: 4, to: 6 },
        { user: v, epoch: E, from: 0, to: 5 },
        { user: v, epoch: E, from: 2, to: 4 },
        { user: u, epoch: E + 1, from: 0, to: 9 },
        { user: u, epoch: E - 1, from: 0, to: 9 },
        { user: `nobody-${tag()}`, epoch: E, from: 0, to: 9 },
        { user: u, epoch: E, from: 0, to: 6 }, // the same range twice
      ];
      const counts = await countEntriesOf(db, ranges);
      expect(counts).toEqual([5, 3, 2, 2, 5, 2, 1, 0, 0, 5]);
      const one = [];
      for (const r of ranges) one.push(await countEntries(db, r.user, r.epoch, r.from, r.to));
      expect(counts).toEqual(one);
      expect(await countEntriesOf(db, [])).toEqual([]);
    });

    test("legacyPosition maps a commit sequence onto the user's epoch 0 entries", async () => {
      const { db } = await open();
      const [u, v, w] = [`u-${tag()}`, `v-${tag()}`, `w-${tag()}`];
      // as the migration left them: messages with their seq, and epoch 0 entries in seq order
      const ms = [msg(u, { to: v }), msg(v, { to: w }), msg(v, { to: u }), msg(u, { to: v }), msg(w, { to: u })];
      const seqs: number[] = [];
      for (const m of ms) {
        const r = await db.execute(sql`insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts)
          values (${m.msgId}, ${m.id}, ${m.from}, ${m.to!}, null, ${conversationKey(m)}, ${m.body}, ${m.ts}) returning seq`);
        const rows = (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows) as Array<{ seq: string | number }>;
        seqs.push(Number(rows[0]!.seq));
      }
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      // u is in ms 0, 2, 3 (epoch 0 pos 1, 2, 3); ms 4 only in a later epoch for u; v in 0..3
      const uLegacy = [0, 2, 3];
      for (const [pos, i] of uLegacy.entries()) {
        await db.execute(sql`insert into stream (user_id, epoch, pos, msg_id, conv) values (${u}, ${LEGACY_EPOCH}, ${pos + 1}, ${ms[i]!.msgId}, ${conversationKey(ms[i]!)})`);
      }
      await db.execute(sql`insert into stream (user_id, epoch, pos, msg_id, conv) values (${u}, ${1_760_000_000_000_000}, ${1}, ${ms[4]!.msgId}, ${conversationKey(ms[4]!)})`);
      for (const i of [0, 1, 2, 3]) {
        await db.execute(sql`insert into stream (user_id, epoch, pos, msg_id, conv) values (${v}, ${LEGACY_EPOCH}, ${i + 1}, ${ms[i]!.msgId}, ${conversationKey(ms[i]!)})`);
      }
      const L = (pos: number) => ({ epoch: LEGACY_EPOCH, pos });
      expect(await legacyPosition(db, u, seqs[0]! - 1)).toEqual(L(0));
      expect(await legacyPosition(db, u, 0)).toEqual(L(0));
      expect(await legacyPosition(db, u, seqs[0]!)).toEqual(L(1));
      expect(await legacyPosition(db, u, seqs[1]!)).toEqual(L(1)); // ms 1 is not u's
      expect(await legacyPosition(db, u, seqs[2]!)).toEqual(L(2));
      expect(await legacyPosition(db, u, seqs[3]!)).toEqual(L(3));
      expect(await legacyPosition(db, u, seqs[4]!)).toEqual(L(3)); // ms 4 is in a later epoch only
      expect(await legacyPosition(db, u, Number.MAX_SAFE_INTEGER)).toEqual(L(3));
      expect(await legacyPosition(db, v, seqs[1]!)).toEqual(L(2));
      expect(await legacyPosition(db, w, seqs[4]!)).toEqual(L(0)); // no epoch 0 entries at all
      // the mapped position reads on exactly after what the old cursor had seen
      const rest = await readStream(db, u, await legacyPosition(db, u, seqs[2]!), { epoch: LEGACY_EPOCH, pos: 100 }, 100);
      expect(rest.map((m) => m.msgId)).toEqual([ms[3]!.msgId]);
    });
  });
}
