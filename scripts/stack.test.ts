import { describe, expect, test } from "bun:test";
import { join } from "node:path";

// Flag parsing only: every case here exits before any server starts (fast, no binaries needed).
const ROOT = join(import.meta.dir, "..");
function stack(...args: string[]) {
  const p = Bun.spawnSync(["bun", "run", "scripts/stack.ts", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", timeout: 15_000 });
  return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("bun run stack flags", () => {
  test("an unknown flag is a clear error naming it, with the usage, exit 2", () => {
    const r = stack("--bogus");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("stack: Unknown option '--bogus'");
    expect(r.stderr).toContain("bun run stack [--ws N] | bun run stack --ha");
    expect(r.stdout).not.toContain("is up");
  });

  test("--ws with --ha, a bad --ws and a positional argument are refused", () => {
    const both = stack("--ha", "--ws", "3");
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("--ws does not apply with --ha");
    const bad = stack("--ws", "0");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--ws must be a whole number from 1 to 16 (got 0)");
    const pos = stack("ha");
    expect(pos.code).toBe(2);
    expect(pos.stderr).toMatch(/^stack: .*ha/);
  });

  test("--help prints the usage, naming the three host addresses, exit 0", () => {
    const r = stack("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("127.0.1.1, 127.0.2.1, 127.0.3.1");
  });
});
