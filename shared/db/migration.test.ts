import { afterAll, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { migrate } from "drizzle-orm/pglite/migrator";
import { insertBatch, latestPosition, legacyPosition, readConversation, readStream } from "./messages.ts";
import { MIGRATIONS_DIR, type Db } from "./index.ts";
import { schema } from "./schema.ts";

// Migration 0001 from the commit-sequence schema: existing messages enter the streams of the users
// they involve as epoch 0 in seq order, and a cursor of the previous version (a seq) maps exactly.

const dir = mkdtempSync(join(tmpdir(), "migration-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("0001 backfills epoch 0 of every stream from existing messages, and old cursors map exactly; after 0009 new direct messages join those rows as one stream", async () => {
  // The previous version's schema: only migration 0000.
  const old = join(dir, "old");
  mkdirSync(join(old, "meta"), { recursive: true });
  cpSync(join(MIGRATIONS_DIR, "0000_init.sql"), join(old, "0000_init.sql"));
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, "meta", "_journal.json"), "utf8"));
  writeFileSync(join(old, "meta", "_journal.json"), JSON.stringify({ ...journal, entries: journal.entries.slice(0, 1) }));

  const client = await PGlite.create(join(dir, "db"));
  const db = drizzle(client, { schema }) as unknown as Db;
  try {
    await migrate(db as never, { migrationsFolder: old });
    await client.exec(`
      insert into groups (id, name, creator) values ('g1', 'g', 'ann');
      insert into group_members (group_id, user_id) values ('g1', 'ann'), ('g1', 'bob'), ('g1', 'cat');
      insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts) values
        ('m1', 'c1', 'ann', 'bob', null, 'd:ann:bob', 'one', 1),
        ('m2', 'c2', 'bob', 'ann', null, 'd:ann:bob', 'two', 2),
        ('m3', 'c3', 'ann', null, 'g1', 'g:g1', 'three', 3),
        ('m4', 'c4', 'cat', 'cat', null, 'd:cat:cat', 'self', 4),
        ('m5', 'c5', 'bob', 'ann', null, 'd:ann:bob', 'five', 5);`);
    const seqs = Object.fromEntries((await client.query<{ id: string; seq: number }>("select id, seq from messages")).rows.map((r) => [r.id, Number(r.seq)]));

    await migrate(db as never, { migrationsFolder: MIGRATIONS_DIR });

    const all = { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
    const stream = async (u: string) => (await readStream(db, u, { epoch: 0, pos: 0 }, all, 100)).map((m) => `${m.position.epoch}.${m.position.pos}:${m.msgId}`);
    expect(await stream("ann")).toEqual(["0.1:m1", "0.2:m2", "0.3:m3", "0.4:m5"]);
    expect(await stream("bob")).toEqual(["0.1:m1", "0.2:m2", "0.3:m3", "0.4:m5"]);
    expect(await stream("cat")).toEqual(["0.1:m3", "0.2:m4"]);

    // A client of the previous version holding cursor seq(m2) resumes exactly after m2.
    const at = await legacyPosition(db, "ann", seqs.m2!);
    expect(at).toEqual({ epoch: 0, pos: 2 });
    expect((await readStream(db, "ann", at, all, 100)).map((m) => m.msgId)).toEqual(["m3", "m5"]);
    // cat had nothing before m3: a cursor older than every message of theirs maps to the start.
    expect(await legacyPosition(db, "cat", seqs.m2!)).toEqual({ epoch: 0, pos: 0 });

    // 0009: a direct message written now keeps its entries in its row; the older ones stay stream
    // rows, and every reader sees both as one stream.
    const E = 1_760_000_000_000_000;
    const m6 = { msgId: "m6", id: "c6", from: "bob", to: "ann", body: "six", ts: 6 };
    await insertBatch(db, [m6], [
      { user: "bob", position: { epoch: E, pos: 1 }, msgId: "m6", conv: "d:ann:bob" },
      { user: "ann", position: { epoch: E, pos: 1 }, msgId: "m6", conv: "d:ann:bob" },
    ]);
    expect((await client.query<{ n: number }>("select count(*)::int as n from stream where msg_id = 'm6'")).rows[0]!.n).toBe(0);
    expect(await stream("ann")).toEqual(["0.1:m1", "0.2:m2", "0.3:m3", "0.4:m5", `${E}.1:m6`]);
    expect((await readConversation(db, "bob", "d:ann:bob", undefined, 10)).messages.map((m) => m.msgId)).toEqual(["m1", "m2", "m5", "m6"]);
    expect(await latestPosition(db, "ann")).toEqual({ epoch: E, pos: 1 });
    expect((await readStream(db, "ann", at, all, 100)).map((m) => m.msgId)).toEqual(["m3", "m5", "m6"]);
  } finally {
    await client.close();
  }
}, 120_000);
