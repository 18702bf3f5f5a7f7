import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./infra.ts";
import { ensureDeps, STAMP } from "./ensure-deps.ts";

const ROOT = join(import.meta.dir, "..");
const temp = mkdtempSync(join(tmpdir(), "relay-chat-deps-"));
const cleanups: Array<() => unknown> = [() => rmSync(temp, { recursive: true, force: true })];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe("ensureDeps", () => {
  const project = join(temp, "project");
  const runs = join(temp, "install-runs");
  mkdirSync(join(project, "patches"), { recursive: true });
  writeFileSync(join(project, "package.json"), "{}");
  writeFileSync(join(project, "bun.lock"), "lock 1");
  writeFileSync(join(project, "patches", "a.patch"), "patch 1");
  const fakeInstall = (script = "mkdir -p node_modules") => ["sh", "-c", `echo run >> ${runs}; ${script}`];
  const installs = () => (existsSync(runs) ? readFileSync(runs, "utf8").split("\n").length - 1 : 0);
  const lines: string[] = [];
  const ensure = (install = fakeInstall()) => ensureDeps({ root: project, install, log: (l) => lines.push(l) });

  test("installs when node_modules is missing, then not again until bun.lock, package.json or a patch changes", () => {
    expect(ensure()).toBe(true);
    expect(lines).toEqual(["installing the locked dependencies (there is no node_modules): bun install --frozen-lockfile"]);
    expect(ensure()).toBe(false);
    for (const [file, text] of [["bun.lock", "lock 2"], ["package.json", '{"x":1}'], ["patches/a.patch", "patch 2"], ["patches/b.patch", "new"]] as const) {
      writeFileSync(join(project, file), text);
      expect(ensure()).toBe(true);
      expect(ensure()).toBe(false);
    }
    expect(installs()).toBe(5);
    expect(lines.at(-1)).toContain("changed since the last install");
  });

  test("a node_modules without the stamp (installed by hand) is installed over once", () => {
    rmSync(join(project, "node_modules", STAMP));
    expect(ensure()).toBe(true);
    expect(lines.at(-1)).toContain("node_modules has no record of its install");
    expect(ensure()).toBe(false);
  });

  test("a failing install is an error naming its exit code, stamps nothing, and is retried next time", () => {
    rmSync(join(project, "node_modules"), { recursive: true });
    expect(() => ensure(fakeInstall("exit 3"))).toThrow("bun install --frozen-lockfile failed (exit 3); node_modules does not match bun.lock");
    expect(() => ensure(fakeInstall("true"))).toThrow("bun install --frozen-lockfile succeeded but left no node_modules");
    expect(ensure()).toBe(true);
  });

  test("a project without bun.lock is an error naming it", () => {
    rmSync(join(project, "bun.lock"));
    expect(() => ensure()).toThrow(/bun\.lock/);
  });
});

/** The working tree's files as git would clone them (tracked, plus new ones not ignored), without node_modules. */
function freshClone(name: string): string {
  const clone = join(temp, name);
  const listed = Bun.spawnSync(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT });
  if (listed.exitCode !== 0) throw new Error(`git ls-files failed: ${listed.stderr.toString()}`);
  for (const f of listed.stdout.toString().split("\0")) {
    if (f && existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(clone, f));
  }
  expect(existsSync(join(clone, "node_modules"))).toBe(false);
  return clone;
}
const env = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? temp, LOG_LEVEL: "warn" };

test("a fresh clone without node_modules: `bun run test <unit files>` installs first and passes", async () => {
  const clone = freshClone("clone-test");
  const run = Bun.spawn(["bun", "run", "test", "shared/tick.test.ts", "shared/protocol.test.ts"], { cwd: clone, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(run.stdout).text(), new Response(run.stderr).text(), run.exited]);
  expect({ code, output: out + err }).toEqual({ code: 0, output: expect.stringContaining("installing the locked dependencies (there is no node_modules)") });
  expect(err).toContain(" 0 fail");
  expect(existsSync(join(clone, "node_modules", STAMP))).toBe(true);
}, 120_000);

test("a fresh clone without node_modules: `bun run dev --port P` installs the locked, patched versions and answers /health", async () => {
  const clone = freshClone("clone-dev");
  const port = await freePort();
  const dev = Bun.spawn(["bun", "run", "dev", "--port", String(port)], { cwd: clone, env: { ...env, DATA_DIR: join(temp, "data") }, stdin: "ignore", stdout: "pipe", stderr: "pipe", detached: true });
  // its own process group: nothing it started outlives the test, however it ends
  cleanups.push(() => {
    try {
      process.kill(-dev.pid, "SIGKILL");
    } catch {}
  });
  const stderr = new Response(dev.stderr).text();
  let out = "";
  const listening = new Promise<void>((resolve) => {
    void (async () => {
      for await (const chunk of dev.stdout) {
        out += new TextDecoder().decode(chunk);
        if (/listening on http:\/\/\S+/.test(out)) resolve();
      }
      resolve(); // exited without listening: the expectations below say so
    })();
  });
  await listening;
  expect(out).toContain(`listening on http://127.0.0.1:${port}`);
  expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);

  // what bun.lock says, with the patch applied
  const pkg = JSON.parse(readFileSync(join(clone, "node_modules/postgres/package.json"), "utf8")) as { version: string };
  expect(readFileSync(join(clone, "bun.lock"), "utf8")).toContain(`"postgres@${pkg.version}"`);
  expect(readFileSync(join(clone, "node_modules/postgres/src/connection.js"), "utf8")).toContain("Patched (relay-chat)");
  expect(existsSync(join(clone, "node_modules", STAMP))).toBe(true);

  dev.kill("SIGTERM");
  expect(await dev.exited).toBe(0);
  expect(await stderr).toContain("installing the locked dependencies (there is no node_modules)");
}, 120_000);
