// The JS heap an idle connection holds in a gateway: `bun run scripts/conns-heap.ts [C]` starts
// the stack of bench:conns (Redis, RabbitMQ, PostgreSQL, discover, persist) and one gateway
// (services/ws/index.ts wrapped by scripts/conns-heap/gateway.ts, which prints bun:jsc heapStats()
// after Bun.gc(true) on SIGUSR2), opens C idle clients (default 10,000) with the bench:conns driver
// (connect, sync, wait for `synced`), waits 5 s, and prints the heap growth per connection and the
// object types that grew most. With a third argument W > 1 the same users then connect and close
// again, W waves in all, and each wave's RSS and allocator figures are printed: whether what a burst
// leaves behind is reused by the next (a high-water mark) or grows with every wave (a leak). A fifth
// argument `new` makes each wave users the gateway never saw (what per-user state outlives its
// connections). With HEAP_SNAPSHOT_DIR=<dir> the gateway also writes a JSC heap snapshot there at
// each measurement (before, connected, closed) for offline analysis.
// Measurement only (docs/benchmarks.md); not run by the tests.
import type { DriverConfig } from "./conns/driver.ts";
import { spawnDriver, type DriverHandle } from "./conns/spawn.ts";
import { spawnService, stopService, waitHealthy } from "./cluster.ts";
import { startStack } from "./stack-lib.ts";

const connections = Number(Bun.argv[2] ?? 10_000);
const concurrency = Number(Bun.argv[3] ?? 500);
const waves = Number(Bun.argv[4] ?? 1);
/** "same" (default): every wave is the same users again; "new": each wave is users never seen before. */
const users = Bun.argv[5] ?? "same";
if (!Number.isInteger(connections) || connections < 1 || connections > 19_000 || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000 || !Number.isInteger(waves) || waves < 1 || waves > 20 || (users !== "same" && users !== "new")) {
  console.error("usage: bun run scripts/conns-heap.ts [connections 1..19000 (default 10000)] [connection attempts in flight 1..10000 (default 500)] [waves 1..20 (default 1)] [same|new users in each wave (default same)]");
  process.exit(2);
}
const stack = await startStack({ ws: 0 });
const env = { ...stack.cluster.env, INTERNAL_PORT: "0" };
const gw = await spawnService("ws1", "scripts/conns-heap/gateway.ts", env);
let driver: DriverHandle | null = null;
try {
  const internal = /ws internal API on (\S+)/.exec(gw.logs.join("\n"))![1]!;
  await waitHealthy({ ...gw, url: internal }, 60_000);
  type Heap = { heapSize: number; heapCapacity: number; malloc: number; bins: Record<string, number>; objectCount: number; objectTypeCounts: Record<string, number>; rss: number };
  const heap = async (): Promise<Heap> => {
    const seen = gw.logs.length;
    gw.proc.kill("SIGUSR2");
    for (;;) {
      await Bun.sleep(50);
      const line = gw.logs.slice(seen).find((l) => l.startsWith("HEAP "));
      if (line) return JSON.parse(line.slice(5)) as Heap;
    }
  };
  const cfg: DriverConfig = { port: Number(new URL(gw.url).port), addresses: ["127.0.0.1"], prefix: `heap-${crypto.randomUUID().slice(0, 6)}-`, first: 0, count: connections, jwtSecret: stack.cluster.jwtSecret, concurrency, stormWindowMs: 1000 };
  /** A driver for cfg's users, once it has minted their tokens. */
  const newDriver = async () => {
    const d = (driver = spawnDriver(cfg));
    while (!d.minted) await Bun.sleep(50);
    return d;
  };
  /** Its clients connect and idle; the heap then, and once every client has closed. */
  const wave = async (d: DriverHandle) => {
    d.proc.send({ cmd: "start" });
    while (d.status?.allConnectedAt == null) await Bun.sleep(50);
    await Bun.sleep(5000); // initial holds ended, a periodic check ran
    const connected = await heap();
    // what stays once every client has gone (caches, and memory the allocators keep)
    d.proc.send({ cmd: "stop" });
    await d.proc.exited;
    await Bun.sleep(3000);
    return { connected, closed: await heap() };
  };
  const d = await newDriver();
  await Bun.sleep(1000);
  const before = await heap();
  const { connected: after, closed: gone } = await wave(d);
  const per = (a: number, b: number) => ((b - a) / connections).toFixed(2);
  console.log(`connections ${connections}; JS heap ${(before.heapSize / 2 ** 20).toFixed(1)} → ${(after.heapSize / 2 ** 20).toFixed(1)} MiB: ${per(before.heapSize, after.heapSize)} B per connection; objects ${before.objectCount} → ${after.objectCount}: ${per(before.objectCount, after.objectCount)} per connection; JS heap capacity ${per(before.heapCapacity, after.heapCapacity)} B, malloc (mimalloc, in use) ${per(before.malloc, after.malloc)} B per connection; RSS ${(before.rss / 2 ** 20).toFixed(1)} → ${(after.rss / 2 ** 20).toFixed(1)} MiB (${per(before.rss, after.rss)} B per connection)`);
  const grown = (h: Heap) =>
    [...new Set([...Object.keys(before.objectTypeCounts), ...Object.keys(h.objectTypeCounts)])]
      .map((t) => [t, (h.objectTypeCounts[t] ?? 0) - (before.objectTypeCounts[t] ?? 0)] as const)
      .filter(([, d]) => Math.abs(d) >= connections / 20)
      .sort((a, b) => b[1] - a[1])
      .map(([t, d]) => `  ${t}: ${(d / connections).toFixed(2)}`)
      .join("\n");
  console.log(`object types that grew by at least 0.05 per connection (per connection):\n${grown(after)}`);
  console.log(`once all closed, per former connection:\n${grown(gone)}`);
  console.log(`all closed: JS heap ${per(before.heapSize, gone.heapSize)} B, capacity ${per(before.heapCapacity, gone.heapCapacity)} B, malloc ${per(before.malloc, gone.malloc)} B, RSS ${per(before.rss, gone.rss)} B per (former) connection above the baseline`);
  const binGrowth = (h: Heap) =>
    Object.keys({ ...before.bins, ...h.bins })
      .map((k) => [Number(k), ((h.bins[k] ?? 0) - (before.bins[k] ?? 0)) / connections] as const)
      .filter(([, d]) => Math.abs(d) >= 50)
      .sort((a, b) => b[1] - a[1])
      .map(([size, d]) => `${size} B blocks ${d.toFixed(0)}`)
      .join(", ");
  console.log(`mimalloc bytes in use per connection by block size, connected: ${binGrowth(after)}`);
  console.log(`mimalloc bytes in use per former connection by block size, all closed: ${binGrowth(gone)}`);
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  const line = (label: string, h: Heap) => `${label}: RSS ${mib(h.rss)} MiB, malloc ${mib(h.malloc)} MiB, JS heap ${mib(h.heapSize)} MiB (capacity ${mib(h.heapCapacity)})`;
  console.log(`wave 1 (MiB above nothing): ${line("before", before)}; ${line("connected", after)}; ${line("closed", gone)}`);
  let lastClosed = gone;
  for (let w = 2; w <= waves; w++) {
    // the same users again (the same prefix), as clients reconnecting after a restart or a network
    // change; or, with "new", users this gateway never saw (what per-user state outlives a connection)
    if (users === "new") cfg.prefix = `heap-${crypto.randomUUID().slice(0, 6)}-`;
    const { connected, closed } = await wave(await newDriver());
    console.log(`wave ${w}: ${line("connected", connected)}; ${line("closed", closed)}; RSS per connection above the first baseline ${per(before.rss, connected.rss)} B, above the last wave's closed ${per(lastClosed.rss, connected.rss)} B`);
    lastClosed = closed;
  }
} finally {
  const last = driver as DriverHandle | null; // set inside newDriver(), which the narrowing does not see
  if (last?.proc.exitCode === null) last.proc.send({ cmd: "stop" });
  await last?.proc.exited;
  await stopService(gw);
  await stack.stop();
}
