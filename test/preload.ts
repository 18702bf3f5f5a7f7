// bun test preload: once per run (bun test runs every file in this one process), starts whichever
// of Redis, RabbitMQ and PostgreSQL has no URL in the environment, exports their URLs, applies the
// migrations, and stops the servers when the run ends, fails or is interrupted. It also raises the
// default per-test timeout to 30 s (bunfig.toml has no such setting) unless --timeout is given.

import { readFileSync } from "node:fs";
import { plugin } from "bun";
import { afterAll } from "bun:test";
import { setTestInfra } from "./env.ts";
import { type Infra, type InfraService, MissingBinaryError, removeStaleInfraDirs, startInfra } from "./infra.ts";

const DEFAULT_TIMEOUT_MS = 30_000;

// setDefaultTimeout() only reaches the file that calls it, so every test file calls it first thing
// (on its first line, keeping line numbers). An explicit `bun test --timeout N` wins.
const cmdline = (() => {
  try {
    return readFileSync("/proc/self/cmdline", "utf8").split("\0");
  } catch {
    return [];
  }
})();
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

const URL_VARS = { redis: "REDIS_URL", rabbit: "AMQP_URL", postgres: "DATABASE_URL" } as const;
const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

const needed = (Object.keys(URL_VARS) as InfraService[]).filter((s) => !process.env[URL_VARS[s]]);
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

try {
  await (await import("../shared/db/migrate.ts")).migrateDatabase(process.env.DATABASE_URL!);
  // TEMP until merged: drizzle/pending/*.sql, folded into the migration chain when merged.
  {
    const { default: postgres } = await import("postgres");
    const { readdirSync } = await import("node:fs");
    const dir = new URL("../drizzle/pending/", import.meta.url).pathname;
    const client = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
    try {
      for (const f of readdirSync(dir).filter((n) => n.endsWith(".sql")).sort()) await client.unsafe(readFileSync(dir + f, "utf8"));
    } finally {
      await client.end({ timeout: 5 });
    }
  }
  // end TEMP
} catch (err) {
  await shutdown();
  throw err;
}
