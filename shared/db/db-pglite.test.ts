import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dbContract } from "./db.contract.ts";
import { receiptsContract } from "./receipts.contract.ts";
import { openPglite, type DbHandle } from "./index.ts";

const dir = mkdtempSync(join(tmpdir(), "chat-pglite-test-"));
let handle: DbHandle | undefined;
// Opening PGlite and applying the migrations takes seconds on a busy machine: not in a test's time.
beforeAll(async () => {
  handle = await openPglite(dir);
}, 120_000);
afterAll(async () => {
  await handle?.close();
  rmSync(dir, { recursive: true, force: true });
});
dbContract("PGlite", async () => {
  handle ??= await openPglite(dir);
  return { db: handle.db, concurrent: true };
});
receiptsContract("PGlite", async () => (handle ??= await openPglite(dir)).db);
