import { describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import type { Db } from "./index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "./messages.ts";
import { advanceDelivered, advanceRead, conversationsPage, deliveredAdvances, entryAt, groupCounts, readMarker, receiptsOf, sendersBetween } from "./receipts.ts";

/** The receipts queries (shared/db/receipts.ts), run against PostgreSQL and PGlite. */
export function receiptsContract(name: string, open: () => Promise<Db>) {
  describe(`receipts queries: ${name}`, () => {
    const tag = () => crypto.randomUUID().slice(0, 8);
    const E = 1_700_000_000_000_000;
    let n = 0;
    const msg = (from: string, to: { to: string } | { group: string }): ChatMessage => ({ msgId: `m-${tag()}-${n++}`, id: `c${n}`, from, body: `b${n}`, ts: 1_700_000_000_000 + n, ...to });

    /** Writes `ms` into the streams of `users` in order (positions 1, 2, … of each user's stream, in epoch E). */
    async function write(db: Db, ms: Array<{ m: ChatMessage; users: string[] }>) {
      const next = new Map<string, number>();
      const entries: StreamEntry[] = [];
      for (const { m, users } of ms) {
        for (const u of users) {
          const pos = (next.get(u) ?? 0) + 1;
          next.set(u, pos);
          entries.push({ user: u, position: { epoch: E, pos }, msgId: m.msgId, conv: conversationKey(m) });
        }
      }
      await insertBatch(db, ms.map((x) => x.m), entries);
    }

    test("conversation list: newest activity first, paged, last message, unread counts that skip my own messages and events", async () => {
      const db = await open();
      const [a, b, c] = [`a-${tag()}`, `b-${tag()}`, `c-${tag()}`];
      const g = `g_${tag()}`;
      await db.execute(sql`insert into groups (id, name, creator) values (${g}, 'Club', ${a})`);
      await db.execute(sql`insert into group_members (group_id, user_id) values (${g}, ${a}), (${g}, ${b})`);
      const ab1 = msg(b, { to: a });
      const ab2 = msg(b, { to: a });
      const g1 = msg(b, { group: g });
      const ac1 = msg(c, { to: a });
      const ab3 = msg(a, { to: b }); // mine: newest in a's stream
      await write(db, [
        { m: ab1, users: [a, b] },
        { m: ab2, users: [a, b] },
        { m: g1, users: [a, b] },
        { m: ac1, users: [a, c] },
        { m: ab3, users: [a, b] },
      ]);
      // An event at position 6 of a's stream in the chat with c is neither the last message nor unread.
      await db.execute(sql`insert into stream (user_id, epoch, pos, kind, msg_id, conv) values (${a}, ${E}, 6, 'edit', ${ac1.msgId}, ${conversationKey(ac1)})`);

      const all = await conversationsPage(db, a, undefined, 10);
      expect(all.more).toBe(false);
      expect(all.rows.map((r) => [r.conv, r.last.msgId, r.unread, r.position.pos])).toEqual([
        [conversationKey(ab3), ab3.msgId, 2, 5],
        [conversationKey(ac1), ac1.msgId, 1, 4],
        [`g:${g}`, g1.msgId, 1, 3],
      ]);
      expect(all.rows[2]!.groupName).toBe("Club");
      expect(all.rows[0]!.last).toEqual(ab3);

      const p1 = await conversationsPage(db, a, undefined, 2);
      expect(p1.more).toBe(true);
      const p2 = await conversationsPage(db, a, p1.rows[1]!.position, 2);
      expect(p2.more).toBe(false);
      expect([...p1.rows, ...p2.rows].map((r) => r.conv)).toEqual(all.rows.map((r) => r.conv));

      // Reading up to ab1 leaves ab2 unread; the marker never moves back.
      const first = await advanceRead(db, a, conversationKey(ab1), { epoch: E, pos: 1 }, { msgId: ab1.msgId, ts: ab1.ts });
      expect(first).toEqual({ advanced: true, previous: null });
      const second = await advanceRead(db, a, conversationKey(ab1), { epoch: E, pos: 2 }, { msgId: ab2.msgId, ts: ab2.ts });
      expect(second).toEqual({ advanced: true, previous: { epoch: E, pos: 1 } });
      expect((await advanceRead(db, a, conversationKey(ab1), { epoch: E, pos: 1 }, { msgId: ab1.msgId, ts: ab1.ts })).advanced).toBe(false);
      const after = await conversationsPage(db, a, undefined, 10);
      expect(after.rows[0]).toMatchObject({ unread: 0, read: { position: { epoch: E, pos: 2 }, msgId: ab2.msgId } });

      // Out of the group: it leaves the list.
      await db.execute(sql`delete from group_members where group_id = ${g} and user_id = ${a}`);
      expect((await conversationsPage(db, a, undefined, 10)).rows.map((r) => r.conv)).toEqual([conversationKey(ab3), conversationKey(ac1)]);
      expect((await conversationsPage(db, `nobody-${tag()}`, undefined, 10)).rows).toEqual([]);
    });

    test("entries, senders of newly read messages, delivered markers, receipts and group counts", async () => {
      const db = await open();
      const [a, b, c] = [`a-${tag()}`, `b-${tag()}`, `c-${tag()}`];
      const g = `g_${tag()}`;
      await db.execute(sql`insert into groups (id, name, creator) values (${g}, 'G', ${a})`);
      await db.execute(sql`insert into group_members (group_id, user_id) values (${g}, ${a}), (${g}, ${b}), (${g}, ${c})`);
      const ms = [msg(a, { group: g }), msg(b, { group: g }), msg(c, { group: g }), msg(b, { group: g })];
      await write(db, ms.map((m) => ({ m, users: [a, b, c] })));
      const conv = `g:${g}`;

      expect(await entryAt(db, c, { epoch: E, pos: 2 })).toEqual({ kind: "message", conv, msgId: ms[1]!.msgId, ts: ms[1]!.ts, from: b });
      expect(await entryAt(db, c, { epoch: E, pos: 9 })).toBeNull();
      expect((await sendersBetween(db, c, conv, null, { epoch: E, pos: 4 })).sort()).toEqual([a, b].sort());
      expect(await sendersBetween(db, c, conv, { epoch: E, pos: 2 }, { epoch: E, pos: 3 })).toEqual([]);

      // Which delivered markers would move (nothing stored yet: all), then stored.
      const rows = [
        { user: b, conv, msgId: ms[2]!.msgId, ts: ms[2]!.ts },
        { user: c, conv, msgId: ms[0]!.msgId, ts: ms[0]!.ts },
      ];
      expect(await deliveredAdvances(db, rows)).toEqual(rows);
      expect(await deliveredAdvances(db, [])).toEqual([]);
      // Delivered moves forward only; one row per (user, conv) in a batch.
      const d1 = await advanceDelivered(db, [
        { user: b, conv, msgId: ms[2]!.msgId, ts: ms[2]!.ts },
        { user: c, conv, msgId: ms[0]!.msgId, ts: ms[0]!.ts },
      ]);
      expect(d1.map((r) => r.user).sort()).toEqual([b, c].sort());
      expect(await advanceDelivered(db, [{ user: b, conv, msgId: ms[0]!.msgId, ts: ms[0]!.ts }])).toEqual([]);
      expect(await advanceDelivered(db, [])).toEqual([]);
      expect(await deliveredAdvances(db, [{ user: b, conv, msgId: ms[0]!.msgId, ts: ms[0]!.ts }, { user: b, conv, msgId: ms[3]!.msgId, ts: ms[3]!.ts }])).toEqual([{ user: b, conv, msgId: ms[3]!.msgId, ts: ms[3]!.ts }]);
      expect(await readMarker(db, c, conv)).toBeNull();
      await advanceRead(db, c, conv, { epoch: E, pos: 1 }, { msgId: ms[0]!.msgId, ts: ms[0]!.ts });
      expect(await readMarker(db, c, conv)).toEqual({ epoch: E, pos: 1 });

      const r = await receiptsOf(db, conv, [b, c, `x-${tag()}`]);
      expect(r[b]).toEqual({ read: null, delivered: { msgId: ms[2]!.msgId, ts: ms[2]!.ts } });
      expect(r[c]).toEqual({ read: { msgId: ms[0]!.msgId, ts: ms[0]!.ts }, delivered: { msgId: ms[0]!.msgId, ts: ms[0]!.ts } });
      expect(await receiptsOf(db, conv, [])).toEqual({});

      // a's first message: delivered to b and c, read by c; of the two other members.
      expect(await groupCounts(db, g, a, { msgId: ms[0]!.msgId, ts: ms[0]!.ts })).toEqual({ readBy: 1, deliveredTo: 2, of: 2 });
      // b's last one: nobody else has it.
      expect(await groupCounts(db, g, b, { msgId: ms[3]!.msgId, ts: ms[3]!.ts })).toEqual({ readBy: 0, deliveredTo: 0, of: 2 });
    });
  });
}
