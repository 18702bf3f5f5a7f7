import { describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import type { Position } from "../stream/position.ts";
import type { Db } from "./index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "./messages.ts";
import { searchMessages } from "./search.ts";

/** Message search, run against PostgreSQL and PGlite: the same migration and query on both. */
export function searchContract(name: string, open: () => Promise<Db>) {
  describe(`message search: ${name}`, () => {
    const tag = () => crypto.randomUUID().slice(0, 8);
    const E = 1_760_000_000_000_000;
    let n = 0;
    const msg = (from: string, to: { to: string } | { group: string }, body: string): ChatMessage => ({ msgId: `s-${tag()}-${n++}`, id: `c${n}`, from, body, ts: 1_700_000_000_000 + n, ...to });
    /** Stores `m` in the streams of `users` at their next positions (`tops` holds each stream's top). */
    const tops = new Map<string, number>();
    async function store(db: Db, m: ChatMessage, users: string[]): Promise<ChatMessage> {
      const entries: StreamEntry[] = users.map((u) => {
        const pos = (tops.get(u) ?? 0) + 1;
        tops.set(u, pos);
        return { user: u, position: { epoch: E, pos }, msgId: m.msgId, conv: conversationKey(m) };
      });
      await insertBatch(db, [m], entries);
      return m;
    }
    async function group(db: Db, members: string[]): Promise<string> {
      const g = `g_${tag()}`;
      await db.execute(sql`insert into groups (id, name, creator) values (${g}, 'g', ${members[0]!})`);
      for (const u of members) await db.execute(sql`insert into group_members (group_id, user_id) values (${g}, ${u})`);
      return g;
    }
    const ids = async (db: Db, user: string, q: string, before?: Position, limit = 100) => (await searchMessages(db, user, q, before, limit)).messages.map((m) => m.msgId);

    test("finds whole words regardless of case, newest first, with each message's position in the caller's stream", async () => {
      const db = await open();
      const [ann, bob] = [`ann-${tag()}`, `bob-${tag()}`];
      const word = `Zebra${tag()}`;
      const m1 = await store(db, msg(ann, { to: bob }, `a ${word} crossed`), [ann, bob]);
      await store(db, msg(bob, { to: ann }, "nothing to see"), [ann, bob]);
      const m3 = await store(db, msg(bob, { to: ann }, `${word.toUpperCase()}! again`), [ann, bob]);
      const page = await searchMessages(db, bob, word.toLowerCase(), undefined, 10);
      expect(page.messages.map((m) => m.msgId)).toEqual([m3.msgId, m1.msgId]);
      expect(page.more).toBe(false);
      expect(page.messages[0]).toEqual({ ...m3, position: { epoch: E, pos: tops.get(bob)! } });
      expect(page.messages[1]!.position).toEqual({ epoch: E, pos: tops.get(bob)! - 2 });
      // words, not substrings: no stemming, no prefixes
      expect(await ids(db, bob, word.slice(0, -1))).toEqual([]);
      expect(await ids(db, bob, "crosses")).not.toContain(m1.msgId);
    });

    test("web-search syntax: \"phrases\", or, -exclusion; input without words finds nothing; odd characters are no error", async () => {
      const db = await open();
      const [ann, bob] = [`ann-${tag()}`, `bob-${tag()}`];
      const w = `w${tag()}`;
      const a = await store(db, msg(ann, { to: bob }, `red ${w} blue`), [ann, bob]);
      const b = await store(db, msg(ann, { to: bob }, `blue ${w} red`), [ann, bob]);
      const c = await store(db, msg(ann, { to: bob }, `green ${w}`), [ann, bob]);
      expect(await ids(db, ann, `"red ${w}"`)).toEqual([a.msgId]);
      expect(await ids(db, ann, `${w} -green`)).toEqual([b.msgId, a.msgId]);
      expect(await ids(db, ann, `${w} green or ${w} red`)).toEqual([c.msgId, b.msgId, a.msgId]);
      for (const q of ["!!!", "-", '"', "&|!:*()", "' or 1=1 --", "\\", `${w}:*`, `${w} & (`]) {
        await searchMessages(db, ann, q, undefined, 10); // no error
      }
      expect(await ids(db, ann, "!!!")).toEqual([]);
      expect(await ids(db, ann, `${w}:*`)).toEqual([c.msgId, b.msgId, a.msgId]);
    });

    test("permission: only the caller's own conversations, and groups they are in (messages from their membership on)", async () => {
      const db = await open();
      const [ann, bob, cat, dan] = [`ann-${tag()}`, `bob-${tag()}`, `cat-${tag()}`, `dan-${tag()}`];
      const w = `secret${tag()}`;
      const direct = await store(db, msg(ann, { to: bob }, `${w} for bob`), [ann, bob]);
      const g = await group(db, [ann, bob, cat]);
      // before dan joined: not in dan's stream
      const before = await store(db, msg(ann, { group: g }, `${w} before dan`), [ann, bob, cat]);
      await db.execute(sql`insert into group_members (group_id, user_id) values (${g}, ${dan})`);
      const after = await store(db, msg(bob, { group: g }, `${w} after dan`), [ann, bob, cat, dan]);
      expect(await ids(db, ann, w)).toEqual([after.msgId, before.msgId, direct.msgId]);
      expect(await ids(db, bob, w)).toEqual([after.msgId, before.msgId, direct.msgId]);
      expect(await ids(db, cat, w)).toEqual([after.msgId, before.msgId]);
      expect(await ids(db, dan, w)).toEqual([after.msgId]);
      expect(await ids(db, `eve-${tag()}`, w)).toEqual([]);
      // cat leaves: the group's messages are no longer found (history answers 403 there too)
      await db.execute(sql`delete from group_members where group_id = ${g} and user_id = ${cat}`);
      expect(await ids(db, cat, w)).toEqual([]);
    });

    test("deleted messages (body blanked) are not found", async () => {
      const db = await open();
      const [ann, bob] = [`ann-${tag()}`, `bob-${tag()}`];
      const w = `gone${tag()}`;
      const kept = await store(db, msg(ann, { to: bob }, `${w} kept`), [ann, bob]);
      const deleted = await store(db, msg(ann, { to: bob }, `${w} deleted`), [ann, bob]);
      expect(await ids(db, bob, w)).toEqual([deleted.msgId, kept.msgId]);
      await db.execute(sql`update messages set body = '' where id = ${deleted.msgId}`);
      expect(await ids(db, bob, w)).toEqual([kept.msgId]);
    });

    test("paging: each page continues before the last position of the previous one, `more` until the end", async () => {
      const db = await open();
      const [ann, bob] = [`ann-${tag()}`, `bob-${tag()}`];
      const w = `page${tag()}`;
      const found: string[] = [];
      for (let i = 0; i < 7; i++) {
        found.unshift((await store(db, msg(i % 2 ? ann : bob, { to: i % 2 ? bob : ann }, `${w} ${i}`), [ann, bob])).msgId);
        await store(db, msg(ann, { to: bob }, `filler ${i}`), [ann, bob]);
      }
      const pages: string[][] = [];
      let before: Position | undefined;
      for (;;) {
        const page = await searchMessages(db, ann, w, before, 3);
        pages.push(page.messages.map((m) => m.msgId));
        if (!page.more) break;
        before = page.messages.at(-1)!.position;
      }
      expect(pages.map((p) => p.length)).toEqual([3, 3, 1]);
      expect(pages.flat()).toEqual(found);
      // exactly `limit` left: no further page
      expect((await searchMessages(db, ann, w, undefined, 7)).more).toBe(false);
    });
  });
}
