import { afterAll, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle } from "drizzle-orm/pglite";
import { migrate } from "drizzle-orm/pglite/migrator";
import { MIGRATIONS_DIR } from "./index.ts";
import { schema } from "./schema.ts";

// Migration 0008 (group roles) on existing groups: the creator, while a member, becomes the owner;
// a group whose creator left gets the member with the smallest id (no joining times were kept).

const dir = mkdtempSync(join(tmpdir(), "migration-roles-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("0008 gives every group with members exactly one owner", async () => {
  const before = join(dir, "before");
  mkdirSync(join(before, "meta"), { recursive: true });
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, "meta", "_journal.json"), "utf8"));
  const entries = journal.entries.filter((e: { idx: number }) => e.idx < 8);
  for (const f of readdirSync(MIGRATIONS_DIR)) if (entries.some((e: { tag: string }) => f === `${e.tag}.sql`)) cpSync(join(MIGRATIONS_DIR, f), join(before, f));
  writeFileSync(join(before, "meta", "_journal.json"), JSON.stringify({ ...journal, entries }));

  const client = await PGlite.create(join(dir, "db"));
  const db = drizzle(client, { schema });
  try {
    await migrate(db as never, { migrationsFolder: before });
    await client.exec(`
      insert into groups (id, name, creator) values ('g1', 'creator still in', 'ann'), ('g2', 'creator left', 'zed'), ('g3', 'empty', 'ann');
      insert into group_members (group_id, user_id) values ('g1', 'bob'), ('g1', 'ann'), ('g1', 'cat'), ('g2', 'dan'), ('g2', 'bob');`);
    await migrate(db as never, { migrationsFolder: MIGRATIONS_DIR });
    const rows = (await client.query<{ group_id: string; user_id: string; role: string }>("select group_id, user_id, role from group_members order by group_id, user_id")).rows;
    expect(rows.map((r) => `${r.group_id}:${r.user_id}:${r.role}`)).toEqual(["g1:ann:owner", "g1:bob:member", "g1:cat:member", "g2:bob:owner", "g2:dan:member"]);
  } finally {
    await client.close();
  }
}, 120_000);
