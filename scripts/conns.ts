// bun run bench:conns: idle connections per gateway, memory per connection, and the reconnect
// storm after a gateway dies (HELP in scripts/conns/options.ts).
import { readFileSync } from "node:fs";
import { spawnService, stopService, waitHealthy, type ServiceProcess } from "./cluster.ts";
import type { DriverConfig, DriverStatus } from "./conns/driver.ts";
import { HELP, parseConnsOptions, UsageError, type ConnsOptions } from "./conns/options.ts";
import { spawnDriver, type DriverHandle } from "./conns/spawn.ts";
import { stackProcesses, startStack, type Stack } from "./stack-lib.ts";
import { tcpMigrateReq } from "../services/ws/reuse-port.ts";
import { cpuMicrosPer, cpuSnapshot, formatCpuMicros } from "./bench/cpu.ts";

let opts: ConnsOptions;
try {
  opts = parseConnsOptions(Bun.argv.slice(2));
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  console.error(`bench:conns: ${e.message}\n\nbun run bench:conns --help lists the options.`);
  process.exit(2);
}
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}

const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
async function connectionsOf(internalUrl: string): Promise<number> {
  const text = await (await fetch(`${internalUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("ws_connections{") || l.startsWith("ws_connections "));
  return line ? Number(line.split(" ").pop()) : 0;
}
/** A port free on every address right now (the gateways then bind it together). */
function freePort(): number {
  const s = Bun.listen({ hostname: "0.0.0.0", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

let stack: Stack | null = null;
const gateways: ServiceProcess[] = [];
const drivers: DriverHandle[] = [];
let finished = false;
function gatewayLogs() {
  for (const g of gateways) console.error(`--- ${g.name} (exit ${g.proc.exitCode ?? g.proc.signalCode ?? "running"}), last lines:\n${g.logs.slice(-15).join("\n")}`);
}
async function teardown() {
  for (const d of drivers) {
    try {
      d.proc.send({ cmd: "stop" });
    } catch {}
  }
  await Promise.all(drivers.map((d) => Promise.race([d.proc.exited, Bun.sleep(5000).then(() => d.proc.kill("SIGKILL"))])));
  await Promise.all(gateways.map((g) => stopService(g)));
  await stack?.stop();
}
const deadline = setTimeout(async () => {
  if (finished) return;
  console.error(`bench:conns: not done within --timeout ${opts.timeoutSec} s; stopping`);
  gatewayLogs();
  await teardown().catch(() => {});
  process.exit(1);
}, opts.timeoutSec * 1000);

/** Waits until `done()` holds, checking every 50 ms (the run's deadline bounds it). */
async function until(done: () => boolean, progress?: () => string) {
  let last = Date.now();
  while (!done()) {
    await Bun.sleep(50);
    if (progress && Date.now() - last >= 5000) {
      last = Date.now();
      log(progress());
    }
  }
}
const progress = () =>
  `synced ${sum((s) => s.synced).toLocaleString("en")} of ${opts.connections.toLocaleString("en")}; drops ${sum((s) => s.drops)} (by close code: ${fmtErrors(mergeErrors({}, "closes"))}); errors ${fmtErrors(mergeErrors())}`;
const sum = (f: (s: DriverStatus) => number) => drivers.reduce((n, d) => n + (d.status ? f(d.status) : 0), 0);

try {
  log(`starting redis, rabbitmq, postgres, discover, persist and ${opts.gateways} gateway(s) sharing one port ...`);
  stack = await startStack({ ws: 0 });
  const port = freePort();
  const env = { ...stack.cluster.env, HOST: "0.0.0.0", INTERNAL_PORT: "0", REUSE_PORT: "1" };
  gateways.push(...(await Promise.all(Array.from({ length: opts.gateways }, (_, i) => spawnService(`ws${i + 1}`, "services/ws/index.ts", env, port)))));
  const internal = gateways.map((g) => /ws internal API on (\S+)/.exec(g.logs.join("\n"))![1]!);
  // what the connects cost the servers (the drivers are not metered)
  const metered = stackProcesses(stack, gateways);
  await Promise.all(gateways.map((g, i) => waitHealthy({ ...g, url: internal[i]! }, 60_000)));
  const addresses = Array.from({ length: opts.addresses }, (_, i) => `127.0.0.${i + 1}`);
  log(`gateways on port ${port} (internal ${internal.join(", ")}); ${opts.connections} connections from ${opts.drivers} drivers to ${addresses.join(", ")}`);

  // drivers: mint their tokens first, then start together
  const per = Math.ceil(opts.connections / opts.drivers);
  const prefix = `conn-${crypto.randomUUID().slice(0, 6)}-`;
  for (let d = 0; d < opts.drivers; d++) {
    const first = d * per;
    const count = Math.min(per, opts.connections - first);
    const cfg: DriverConfig = { port, addresses, prefix, first, count, jwtSecret: stack.cluster.jwtSecret, concurrency: opts.concurrency, stormWindowMs: opts.stormWindowMs };
    drivers.push(spawnDriver(cfg));
  }
  await until(() => drivers.every((d) => d.minted || d.proc.exitCode !== null));
  if (drivers.some((d) => d.proc.exitCode !== null)) throw new Error("a driver exited before starting");
  await Bun.sleep(1000); // let the gateways settle after start-up before the baseline
  Bun.gc(true);
  const rssBefore = gateways.map((g) => rssBytes(g.proc.pid));
  const cpu0 = cpuSnapshot(metered);
  const t0 = Date.now();
  for (const d of drivers) d.proc.send({ cmd: "start" });
  await until(() => drivers.every((d) => d.status?.allConnectedAt != null), progress);
  const connectCpu = cpuMicrosPer(cpu0, cpuSnapshot(metered), opts.connections);
  const connectMs = Math.max(...drivers.map((d) => d.status!.allConnectedAt!)) - t0;
  log(`all ${opts.connections} connected and synced in ${(connectMs / 1000).toFixed(2)} s`);
  // idle: the lowest RSS over the settle time (garbage of the connect burst is collected meanwhile)
  const rssAfter = gateways.map((g) => rssBytes(g.proc.pid));
  const idle0 = cpuSnapshot(metered);
  for (let k = 0; k < opts.settleSec; k++) {
    await Bun.sleep(1000);
    gateways.forEach((g, i) => (rssAfter[i] = Math.min(rssAfter[i]!, rssBytes(g.proc.pid))));
  }
  // CPU ms per second = thousandths of a core, while every client idles
  const idleCpu = cpuMicrosPer(idle0, cpuSnapshot(metered), opts.settleSec * 1000);
  const held = await Promise.all(internal.map(connectionsOf));
  const perGateway = gateways.map((g, i) => ({
    gateway: g.name,
    connections: held[i]!,
    rssBeforeMiB: +(rssBefore[i]! / 2 ** 20).toFixed(1),
    rssAfterMiB: +(rssAfter[i]! / 2 ** 20).toFixed(1),
    bytesPerConnection: held[i] ? Math.round((rssAfter[i]! - rssBefore[i]!) / held[i]!) : null,
  }));
  console.log("\n| gateway | connections | RSS before → after (MiB) | bytes per connection |\n| --- | --- | --- | --- |");
  for (const g of perGateway) console.log(`| ${g.gateway} | ${g.connections.toLocaleString("en")} | ${g.rssBeforeMiB} → ${g.rssAfterMiB} | ${g.bytesPerConnection?.toLocaleString("en") ?? "—"} |`);
  console.log(`\nconnections: ${held.reduce((a, b) => a + b, 0).toLocaleString("en")} of ${opts.connections.toLocaleString("en")}; time to connect all (connect + registered + synced): ${(connectMs / 1000).toFixed(2)} s`);
  const errorsBefore = mergeErrors();
  const failuresBefore = mergeErrors({}, "failures");
  const summary: Record<string, unknown> = { connections: opts.connections, gateways: opts.gateways, drivers: opts.drivers, connectMs, perGateway, errorsWhileConnecting: errorsBefore, connectCpuMicros: connectCpu, idleCpuMsPerSecond: idleCpu };
  console.log(`errors while connecting: ${fmtErrors(errorsBefore)}`);
  console.log(`server CPU per connection (connect, register, sync; until the last was synced): ${formatCpuMicros(connectCpu)}`);
  console.log(`server CPU while they idled (the ${opts.settleSec} s after the last was synced), per second: ${formatCpuMicros(idleCpu, "ms of CPU")}`);
  let ok = held.reduce((a, b) => a + b, 0) === opts.connections;

  if (opts.storm) {
    const victim = gateways[0]!;
    const dropped = held[0]!;
    const dropsBefore = sum((s) => s.drops);
    log(`storm: kill -9 ${victim.name} holding ${dropped} connections`);
    const cpu1 = cpuSnapshot(metered);
    const t1 = Date.now();
    victim.proc.kill("SIGKILL");
    await victim.exited;
    await until(() => sum((s) => s.drops) - dropsBefore >= dropped && sum((s) => s.synced) === opts.connections, progress);
    const stormMs = Math.max(...drivers.map((d) => d.status!.lastResyncAt)) - t1;
    const stormCpu = cpuMicrosPer(cpu1, cpuSnapshot(metered), dropped);
    const survivors = await Promise.all(internal.slice(1).map(connectionsOf));
    const errors = mergeErrors(errorsBefore);
    const failures = mergeErrors(failuresBefore, "failures");
    const bad = Object.keys(errors).filter((c) => c !== "rate_limited");
    console.log(`\nstorm: ${dropped.toLocaleString("en")} clients of ${victim.name} reconnected (first attempts spread over ${opts.stormWindowMs} ms) and synced ${(stormMs / 1000).toFixed(2)} s after the kill`);
    console.log(`survivors now hold ${survivors.map((n, i) => `${gateways[i + 1]!.name} ${n.toLocaleString("en")}`).join(", ")} (total ${survivors.reduce((a, b) => a + b, 0).toLocaleString("en")})`);
    console.log(`server CPU per reconnected client (the survivors and the stack, until the last was synced): ${formatCpuMicros(stormCpu)}`);
    console.log(`errors during the storm by code: ${fmtErrors(errors)}${errors.connect_failed ? ` (connect_failed by the client's error: ${fmtErrors(failures)})` : ""}`);
    // Handshakes the kernel queued at the killed process's listener are reset unless it moves them
    // to a survivor (services/ws/reuse-port.ts, docs/operations.md).
    const migrateReq = tcpMigrateReq() ?? "absent";
    console.log(`net.ipv4.tcp_migrate_req on this host: ${migrateReq}${migrateReq === "0" && errors.connect_failed ? " (the connect_failed above are handshakes reset with the killed gateway's listener; 1 moves them to a survivor)" : ""}`);
    Object.assign(summary, { storm: { dropped, stormMs, stormCpuMicros: stormCpu, survivors, errors, connectFailures: failures, tcpMigrateReq: migrateReq } });
    ok &&= bad.length === 0 && survivors.reduce((a, b) => a + b, 0) === opts.connections;
  } else {
    // What stays once every client has gone is memory the connect burst left behind, not the
    // connections' own state: the difference is what the idle connections held.
    for (const d of drivers) d.proc.send({ cmd: "stop" });
    await Promise.all(drivers.map((d) => d.proc.exited));
    while ((await Promise.all(internal.map(connectionsOf))).some((n) => n > 0)) await Bun.sleep(100);
    const rssClosed = gateways.map((g) => rssBytes(g.proc.pid));
    for (let k = 0; k < opts.settleSec; k++) {
      await Bun.sleep(1000);
      gateways.forEach((g, i) => (rssClosed[i] = Math.min(rssClosed[i]!, rssBytes(g.proc.pid))));
    }
    const closed = perGateway.map((g, i) => ({
      gateway: g.gateway,
      rssClosedMiB: +(rssClosed[i]! / 2 ** 20).toFixed(1),
      keptPerFormerConnection: held[i] ? Math.round((rssClosed[i]! - rssBefore[i]!) / held[i]!) : null,
      heldPerConnection: held[i] ? Math.round((rssAfter[i]! - rssClosed[i]!) / held[i]!) : null,
    }));
    console.log("\nafter every client closed:\n| gateway | RSS (MiB) | kept per former connection | held by the connections (connected − closed), per connection |\n| --- | --- | --- | --- |");
    for (const c of closed) console.log(`| ${c.gateway} | ${c.rssClosedMiB} | ${c.keptPerFormerConnection?.toLocaleString("en") ?? "—"} | ${c.heldPerConnection?.toLocaleString("en") ?? "—"} |`);
    Object.assign(summary, { closed });
  }
  if (opts.json) console.log(JSON.stringify(summary));
  finished = true;
  clearTimeout(deadline);
  await teardown();
  process.exit(ok ? 0 : 1);
} catch (err) {
  finished = true;
  clearTimeout(deadline);
  console.error(`bench:conns failed: ${(err as Error).stack ?? err}`);
  gatewayLogs();
  await teardown().catch(() => {});
  process.exit(1);
}

/** Error counts summed over the drivers, less `before`. */
function mergeErrors(before: Record<string, number> = {}, what: "errors" | "closes" | "failures" = "errors"): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of drivers) for (const [k, v] of Object.entries(d.status?.[what] ?? {})) out[k] = (out[k] ?? 0) + v;
  for (const [k, v] of Object.entries(before)) out[k] = (out[k] ?? 0) - v;
  for (const k of Object.keys(out)) if (!out[k]) delete out[k];
  return out;
}
function fmtErrors(e: Record<string, number>) {
  const parts = Object.entries(e).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "none";
}
