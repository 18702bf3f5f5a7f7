import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openPglite, type DbHandle } from "../shared/db/index.ts";

/**
 * A migrated PGlite database in a temporary directory for one test file: opened in beforeAll (it
 * takes seconds on a busy machine: not in a test's time), closed and removed after the file.
 */
export function useTempPglite(prefix: string): { dir: string; handle: () => DbHandle } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let handle: DbHandle | undefined;
  beforeAll(async () => {
    handle = await openPglite(dir);
  }, 120_000);
  afterAll(async () => {
    await handle?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    handle: () => {
      if (!handle) throw new Error("PGlite is not open yet (use inside tests)");
      return handle;
    },
  };
}
