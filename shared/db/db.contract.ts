import { describe, expect, test } from "bun:test";
import type { ChatMessage } from "../protocol.ts";
import type { Db } from "./index.ts";
import { committedWatermark, conversationKey, insertMessages, readHistory, readInvolving } from "./messages.ts";
import { groupMembers, groups } from "./schema.ts";

/**
 * The database role's contract, run against PostgreSQL and PGlite: the same queries must mean the
 * same on both, including the commit-order guarantee sync relies on.
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

    test("insert is idempotent on the message id and seq follows insertion order", async () => {
      const { db } = await open();
      const a = `a-${tag()}`;
      const b = `b-${tag()}`;
      const batch = [msg(a, { to: b }), msg(b, { to: a }), msg(a, { to: b })];
      expect(await insertMessages(db, batch)).toBe(3);
      expect(await insertMessages(db, [batch[1]!, msg(a, { to: b })])).toBe(1);
      const all = await readInvolving(db, a, 0, await committedWatermark(db), 100);
      expect(all.map((m) => m.msgId)).toEqual([batch[0]!.msgId, batch[1]!.msgId, batch[2]!.msgId, all[3]!.msgId]);
      const seqs = all.map((m) => m.seq);
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      expect(all[1]).toEqual({ ...batch[1]!, seq: seqs[1]! });
    });

    test("readInvolving: sent, received and group messages of the user's groups, bounded by (after, upTo]", async () => {
      const { db } = await open();
      const [u, v, w] = [`u-${tag()}`, `v-${tag()}`, `w-${tag()}`];
      const g = `g_${tag()}`;
      const other = `g_${tag()}`;
      await db.insert(groups).values([
        { id: g, name: "mine", creator: v },
        { id: other, name: "not mine", creator: v },
      ]);
      await db.insert(groupMembers).values([
        { groupId: g, userId: u },
        { groupId: g, userId: v },
        { groupId: other, userId: v },
      ]);
      const before = await committedWatermark(db);
      const ms = [msg(u, { to: v }), msg(v, { to: u }), msg(v, { to: w }), msg(v, { group: g }), msg(v, { group: other }), msg(u, { group: g })];
      await insertMessages(db, ms);
      const upTo = await committedWatermark(db);
      const got = await readInvolving(db, u, before, upTo, 100);
      expect(got.map((m) => m.msgId)).toEqual([ms[0]!, ms[1]!, ms[3]!, ms[5]!].map((m) => m.msgId));
      expect(got[2]!.group).toBe(g);
      expect(got[2]!.to).toBeUndefined();
      const page = await readInvolving(db, u, before, upTo, 2);
      expect(page.map((m) => m.msgId)).toEqual([ms[0]!.msgId, ms[1]!.msgId]);
      const rest = await readInvolving(db, u, page[1]!.seq, upTo, 100);
      expect(rest.map((m) => m.msgId)).toEqual([ms[3]!.msgId, ms[5]!.msgId]);
      expect(await readInvolving(db, u, before, got[0]!.seq, 100)).toHaveLength(1);
    });

    test("readHistory pages one conversation newest first", async () => {
      const { db } = await open();
      const [a, b] = [`a-${tag()}`, `b-${tag()}`];
      const ms = Array.from({ length: 5 }, (_, i) => msg(i % 2 ? b : a, { to: i % 2 ? a : b }, `h${i}`));
      await insertMessages(db, [...ms, msg(a, { to: `x-${tag()}` })]);
      const conv = conversationKey({ from: b, to: a });
      const p1 = await readHistory(db, conv, undefined, 2);
      expect(p1.messages.map((m) => m.body)).toEqual(["h3", "h4"]);
      expect(p1.more).toBe(true);
      const p2 = await readHistory(db, conv, p1.messages[0]!.seq, 2);
      expect(p2.messages.map((m) => m.body)).toEqual(["h1", "h2"]);
      const p3 = await readHistory(db, conv, p2.messages[0]!.seq, 2);
      expect(p3.messages.map((m) => m.body)).toEqual(["h0"]);
      expect(p3.more).toBe(false);
    });

    test("committed rows always form a prefix of seq (no row at or below a watermark appears later)", async () => {
      const { db, concurrent } = await open();
      const a = `p-${tag()}`;
      let writing = true;
      const writers = Array.from({ length: concurrent ? 6 : 1 }, async () => {
        for (let i = 0; i < 15; i++) await insertMessages(db, Array.from({ length: 20 }, () => msg(a, { to: `q-${i}` })));
      });
      const checks: Array<{ w: number; seen: number }> = [];
      const reader = (async () => {
        while (writing) {
          const w = await committedWatermark(db);
          checks.push({ w, seen: await countUpTo(db, a, w) });
          await Bun.sleep(1);
        }
      })();
      await Promise.all(writers);
      writing = false;
      await reader;
      expect(checks.length).toBeGreaterThan(0);
      for (const c of checks) expect(await countUpTo(db, a, c.w)).toBe(c.seen);
    });
  });
}

/** How many messages `sender` sent with seq <= w, as one reader sees now. */
async function countUpTo(db: Db, sender: string, w: number): Promise<number> {
  return (await readInvolving(db, sender, 0, w, 1_000_000)).length;
}
