import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EVERYTHING, runNeeds, testArgs } from "./needs.ts";

// (This file names none of the preload's real markers, so it is itself a unit file.)
const RULE = { serverMarkers: ["FAKE_URL", "fakeInfra"], browserImport: "fake-browser" };
const NOTHING = { servers: false, browser: false };
const dir = mkdtempSync(join(tmpdir(), "relay-chat-needs-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const files: Record<string, string> = {
  "pure.test.ts": `import { f } from "./lib/pure.ts";\nconst g = <T,>(x: T) => x;\nf(g(1));`,
  "lib/pure.ts": `import { z } from "zod";\nexport const f = (x: number) => x;`,
  "servers.test.ts": `import { open } from "./lib/helper.ts";\nopen();`,
  "lib/helper.ts": `import { f } from "./pure.ts";\nexport const open = () => process.env.FAKE_URL;`,
  "dynamic.test.ts": `await import("./lib/env.ts");`,
  "lib/env.ts": `export function fakeInfra() {}`,
  "browser.test.ts": `import { chromium } from "fake-browser";`,
  "cycle-a.test.ts": `import "./cycle-b.ts";`,
  "cycle-b.ts": `import "./cycle-a.test.ts";`,
  "broken.test.ts": `import { x } from "./lib/pure.ts"\nconst = ;`,
  "dangling.test.ts": `import { x } from "./lib/gone.ts";`,
  "mention.test.ts": `// FAKE_URLS is another word\nconst FAKE_URL_X = 1;`,
};
for (const [name, text] of Object.entries(files)) {
  mkdirSync(join(dir, name, ".."), { recursive: true });
  writeFileSync(join(dir, name), text);
}
const needs = (...args: string[]) => runNeeds(args, dir, RULE);

describe("runNeeds", () => {
  test("files that reach no marker and no browser import need nothing, whatever flags surround them", () => {
    expect(needs("pure.test.ts")).toEqual(NOTHING);
    expect(needs("./pure.test.ts", join(dir, "cycle-a.test.ts"))).toEqual(NOTHING);
    expect(needs("--timeout", "5000", "pure.test.ts", "-t", "some name", "--bail", "--timeout=9")).toEqual(NOTHING);
    expect(needs("mention.test.ts")).toEqual(NOTHING);
  });

  test("a marker anywhere in what a file imports, statically or dynamically, means servers", () => {
    expect(needs("servers.test.ts")).toEqual({ servers: true, browser: false });
    expect(needs("pure.test.ts", "dynamic.test.ts")).toEqual({ servers: true, browser: false });
  });

  test("importing the browser module means Chromium", () => {
    expect(needs("browser.test.ts")).toEqual({ servers: false, browser: true });
    expect(needs("browser.test.ts", "servers.test.ts")).toEqual({ servers: true, browser: true });
  });

  test("anything that leaves the set of files open needs everything", () => {
    expect(runNeeds(null, dir, RULE)).toEqual(EVERYTHING); // command line unknown
    expect(needs()).toEqual(EVERYTHING); // the whole suite
    expect(needs("--timeout", "5000")).toEqual(EVERYTHING);
    expect(needs("pure")).toEqual(EVERYTHING); // a name filter
    expect(needs("lib")).toEqual(EVERYTHING); // a directory
    expect(needs("pure.test.ts", "nonexistent.test.ts")).toEqual(EVERYTHING);
    expect(needs("--changed", "pure.test.ts")).toEqual(EVERYTHING);
    expect(needs("--test-worker")).toEqual(EVERYTHING);
  });

  test("a file that cannot be parsed, or imports a file that is not there, needs everything", () => {
    expect(needs("broken.test.ts")).toEqual(EVERYTHING);
    expect(needs("dangling.test.ts")).toEqual(EVERYTHING);
  });
});

describe("testArgs", () => {
  test("the arguments after `test`", () => {
    expect(testArgs(["bun", "test", "a.test.ts", "--timeout", "5"])).toEqual(["a.test.ts", "--timeout", "5"]);
    expect(testArgs(["/usr/bin/bun", "test"])).toEqual([]);
  });
  test("no `test` (or no command line at all): unknown", () => {
    expect(testArgs(["bun", "run", "x.ts"])).toBeNull();
    expect(testArgs([])).toBeNull();
  });
});

test("a run of only pure unit files starts no server and needs none installed", async () => {
  // PATH holds bun alone, and TMPDIR is a regular file: starting any server fails at its first
  // step (creating its directory under TMPDIR), so this run passes only if none is started.
  const bin = join(dir, "bin");
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, "bun"));
  const notADir = join(dir, "tmp-is-a-file");
  writeFileSync(notADir, "");
  const root = join(import.meta.dir, "..");
  const proc = Bun.spawn(["bun", "test", "shared/tick.test.ts", "shared/protocol.test.ts"], {
    cwd: root,
    env: { PATH: bin, HOME: process.env.HOME ?? dir, TMPDIR: notADir },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect({ code, output: out + err }).toEqual({ code: 0, output: expect.stringContaining(" 0 fail") });
});
