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
for (const target of opts.targets) {
  const sys = await startSystem(target, { instances: opts.instances, peerEngine: opts.peerEngine, ws: opts.ws, jwtSecret: opts.jwtSecret, databaseUrl: opts.databaseUrl, log });
  try {
    const s = await runLoad(sys, { users: opts.users, inflight: opts.inflight, rate: opts.rate, duration: opts.duration, grace: opts.grace, log });
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
const bad = summaries.some((s) => s.lost > 0 || (s.rowsMissing ?? 0) > 0);
process.exit(bad ? 1 : 0);
