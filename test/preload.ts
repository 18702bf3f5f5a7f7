// bun test preload: once per run (bun test runs every file in this one process), first makes
// node_modules match bun.lock and patches/ (scripts/ensure-deps.ts: a fresh clone needs no
// `bun install`; when it installed, the run starts again in a new process), then starts whichever
// of Redis, RabbitMQ and PostgreSQL has no URL in the environment, exports their URLs, applies the
// migrations, and stops the servers when the run ends, fails or is interrupted. It also raises the
// default per-test timeout to 30 s (bunfig.toml has no such setting) unless --timeout is given.
//
// Servers start only when the run needs them (test/needs.ts has the rule): a run naming only test
// files that never reach REDIS_URL, AMQP_URL, DATABASE_URL or testInfra, directly or through
// what they import (`bun test shared/tick.test.ts shared/protocol.test.ts`), starts none; a run
// with no path (the whole suite), a name filter or a directory starts them as always.
// Before starting anything, whatever the run needs and lacks (server binaries, Chromium for the
// browser test) is installed with apt-get when root or sudo allows, else the run stops with the
// one `apt-get install` line that fixes it (test/provision.ts).

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { plugin, spawnSync } from "bun";
import { afterAll } from "bun:test";
import { ensureDeps } from "../scripts/ensure-deps.ts";
import { DEFAULT_CHROMIUM, setTestInfra } from "./env.ts";
import { type Infra, type InfraService, MissingBinaryError, missingBinaries, removeStaleInfraDirs, startInfra } from "../scripts/infra.ts";
import { runNeeds, testArgs } from "./needs.ts";
import { type Missing, ProvisionError, provision } from "./provision.ts";

const DEFAULT_TIMEOUT_MS = 30_000;

const cmdline = (() => {
  try {
    return readFileSync("/proc/self/cmdline", "utf8").split("\0").slice(0, -1);
  } catch {
    return [];
  }
})();

// A run that had to install the dependencies runs again in a new process: this one may already
// have looked for packages where there were none.
try {
  if (ensureDeps({ root: join(import.meta.dir, "..") })) {
    if (!cmdline.length) throw new Error("installed the locked dependencies: run the tests again");
    process.exit(spawnSync([process.execPath, ...cmdline.slice(1)], { stdio: ["inherit", "inherit", "inherit"] }).exitCode ?? 1);
  }
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}

// setDefaultTimeout() only reaches the file that calls it, so every test file calls it first thing
// (on its first line, keeping line numbers). An explicit `bun test --timeout N` wins.
if (!cmdline.some((a) => a === "--timeout" || a.startsWith("--timeout="))) {
  plugin({
    name: "default-test-timeout",
    setup(build) {
      build.onLoad({ filter: /\.(test|spec)\.(m?[jt]s|[jt]sx)$/ }, async ({ path }) => ({
        contents: `import { setDefaultTimeout as __setDefaultTimeout } from "bun:test"; __setDefaultTimeout(${DEFAULT_TIMEOUT_MS});${await Bun.file(path).text()}`,
        loader: path.endsWith("tsx") ? "tsx" : path.endsWith("jsx") ? "jsx" : path.endsWith("ts") ? "ts" : "js",
      }));
    },
  });
}

// Password hashes at a test cost unless the run sets one: the suite registers and logs in hundreds
// of users, and at the default cost (64 MiB, 2 passes: 100-200 ms of CPU each here) that was a
// third of the accounts tests' time. Every process the tests start inherits it; the tests of the
// cost itself (services/ws/accounts.test.ts, "password hashes") set theirs explicitly.
process.env.PASSWORD_MEMORY_KIB ??= "64";
process.env.PASSWORD_TIME_COST ??= "1";

const URL_VARS = { redis: "REDIS_URL", rabbit: "AMQP_URL", postgres: "DATABASE_URL" } as const;
const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

const needs = runNeeds(testArgs(cmdline), process.cwd(), { serverMarkers: [...Object.values(URL_VARS), "testInfra"], browserImport: "playwright-core" });
const needed = needs.servers ? (Object.keys(URL_VARS) as InfraService[]).filter((s) => !process.env[URL_VARS[s]]) : [];
const needsChromium = needs.browser && !process.env.CHROMIUM_PATH;
const missingNow = (): Missing[] => [
  ...missingBinaries(needed),
  ...(needsChromium && !existsSync(DEFAULT_CHROMIUM) ? [{ binary: DEFAULT_CHROMIUM, pkg: "chromium" }] : []),
];
try {
  provision({ missing: missingNow });
} catch (err) {
  if (!(err instanceof ProvisionError)) throw err;
  console.error(err.message);
  process.exit(1);
}

let infra: Infra | null = null;
let stopping: Promise<void> | null = null;
const shutdown = () => (stopping ??= infra?.stop() ?? Promise.resolve());

if (needed.length) {
  // a second signal, or one during start-up, exits at once; the servers die with this process
  for (const [signal, n] of Object.entries(SIGNALS)) {
    process.on(signal, () => {
      if (!infra || stopping) process.exit(128 + n);
      shutdown().finally(() => process.exit(128 + n));
    });
  }
  removeStaleInfraDirs();
  try {
    infra = await startInfra({ only: needed });
  } catch (err) {
    if (err instanceof MissingBinaryError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  for (const s of needed) process.env[URL_VARS[s]] = infra[s].url;
  setTestInfra(infra);
  afterAll(shutdown, { timeout: 120_000 });
}

if (needs.servers) {
  try {
    await (await import("../shared/db/migrate.ts")).migrateDatabase(process.env.DATABASE_URL!);
  } catch (err) {
    await shutdown();
    throw err;
  }
}
