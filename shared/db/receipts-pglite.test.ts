import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openPglite, type DbHandle } from "./index.ts";
import { receiptsContract } from "./receipts.contract.ts";

const dir = mkdtempSync(join(tmpdir(), "chat-pglite-receipts-"));
let handle: DbHandle | undefined;
beforeAll(async () => {
  handle = await openPglite(dir);
}, 120_000);
afterAll(async () => {
  await handle?.close();
  rmSync(dir, { recursive: true, force: true });
});
receiptsContract("PGlite", async () => (handle ??= await openPglite(dir)).db);
