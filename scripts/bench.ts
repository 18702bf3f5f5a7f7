import { runLoad, type Summary } from "./bench/driver.ts";
import { HELP, type BenchOptions, parseBenchOptions, UsageError } from "./bench/options.ts";
import { compareTable, summaryTable } from "./bench/report.ts";
import { startSystem } from "./bench/targets.ts";

let opts: BenchOptions;
try {
  opts = parseBenchOptions(Bun.argv.slice(2));
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  console.error(`bench: ${e.message}\n\nbun run bench --help lists the options.`);
  process.exit(2);
}
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}

const log = (line: string) => console.log(line);
const summaries: Summary[] = [];
let warmupFailed = false;
for (const target of opts.targets) {
  const sys = await startSystem(target, { instances: opts.instances, peerEngine: opts.peerEngine, ws: opts.ws, jwtSecret: opts.jwtSecret, databaseUrl: opts.databaseUrl, log });
  try {
    const load = { users: opts.users, inflight: opts.inflight, rate: opts.rate, grace: opts.grace };
    if (opts.warmup > 0) {
      log(`warm-up: ${opts.warmup} s of the same load, not measured ...`);
      const w = await runLoad(sys, { ...load, duration: opts.warmup, log: () => {} });
      warmupFailed ||= w.lost > 0 || (w.rowsMissing ?? 0) > 0;
      log(`warm-up done: ${w.delivered.toLocaleString("en-US")} delivered, ${w.lost} lost, ${w.rowsMissing ?? "no"} rows missing`);
    }
    const s = await runLoad(sys, { ...load, duration: opts.duration, log });
    summaries.push(s);
    console.log(summaryTable(s));
    if (opts.json) console.log(JSON.stringify(s));
  } finally {
    await sys.stop();
  }
}
if (opts.compare) {
  const peer = summaries.find((s) => s.target === "socketio")!;
  const relay = summaries.find((s) => s.target === "relay")!;
  console.log(compareTable(peer, relay));
}
const bad = warmupFailed || summaries.some((s) => s.lost > 0 || (s.rowsMissing ?? 0) > 0);
process.exit(bad ? 1 : 0);
