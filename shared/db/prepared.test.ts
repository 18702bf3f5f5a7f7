import { afterAll, beforeAll, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { executePrepared, MAX_PREPARED, openPostgres } from "./index.ts";
import { rowsOf } from "./messages.ts";

// One connection, so that pg_prepared_statements (per session) shows everything this handle prepared.
const handle = openPostgres(process.env.DATABASE_URL!, { max: 1 });
afterAll(() => handle.close());

let base = 0; // statements the driver prepares of its own (its type lookup)
beforeAll(async () => {
  base = await prepared();
});
const prepared = async () => Number(rowsOf<{ n: number }>(await handle.db.execute(sql`select count(*)::int as n from pg_prepared_statements`))[0]!.n);

test("executePrepared answers as execute does, with one prepared statement per text", async () => {
  const before = await prepared();
  for (let i = 0; i < 5; i++) {
    const rows = rowsOf<{ n: number; s: string }>(await executePrepared(handle.db, sql`select ${i}::int as n, ${"v" + i}::text as s`));
    expect(rows).toEqual([{ n: i, s: `v${i}` }]);
  }
  expect(await prepared()).toBe(before + 1);
});

test(`statements whose text varies are prepared up to ${MAX_PREPARED} texts, then run unnamed (nothing grows without bound)`, async () => {
  for (let i = 0; i < MAX_PREPARED + 50; i++) {
    const rows = rowsOf<{ n: number }>(await executePrepared(handle.db, sql`select ${i}::int as n${sql.raw(` /* text ${i} */`)}`));
    expect(rows[0]!.n).toBe(i);
  }
  expect(await prepared()).toBeLessThanOrEqual(base + MAX_PREPARED);
});
