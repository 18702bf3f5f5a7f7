/**
 * Pieces of the gateway's per-message work, old code against new, in one process (issue 10).
 *
 *   git archive <base> services shared package.json tsconfig.json | tar -x -C /tmp/wscpu-base
 *   ln -sfn "$PWD/node_modules" /tmp/wscpu-base/node_modules
 *   nice -n 10 bun scripts/bench/ws-micro.ts --old /tmp/wscpu-base [--n 20000] [--rounds 5] [case…]
 *
 * Each case runs the same fixed work (n messages) through a module of each tree; rounds alternate
 * the trees and the figure is process CPU (process.cpuUsage) per message, with the median of the
 * paired ratios (a shared machine's noise moves both rounds of a pair alike). ws-path.ts measures
 * the whole path; these isolate one step each, where a change is too small to see there.
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { old: { type: "string" }, n: { type: "string", default: "20000" }, rounds: { type: "string", default: "5" } },
});
const N = Number(args.n);
const ROUNDS = Number(args.rounds);
if (!args.old) throw new Error("--old <dir of the old tree> is required");
const roots = { old: resolve(args.old), new: resolve(import.meta.dir, "../..") };
const BODY = "bench 1 ".padEnd(100, "x");

type Case = (root: string) => Promise<(i: number) => unknown>;

/** A router with one local connection per user (offers are dropped) and a peer "p" holding users "r…". */
async function routerFor(root: string) {
  const { createRouter } = await import(`${root}/services/ws/router.ts`);
  const { createMemoryDirectory } = await import(`${root}/shared/directory/directory-memory.ts`);
  const { silentLogger } = await import(`${root}/shared/log.ts`);
  const { createMetrics } = await import(`${root}/shared/metrics.ts`);
  const directory = createMemoryDirectory();
  await directory.heartbeat({ id: "p", url: "http://p" }, 600_000);
  await directory.setPresence("p", Array.from({ length: 1000 }, (_, i) => `r${i}`), []);
  const conns = new Map<string, unknown[]>();
  const connOf = (u: string) => {
    let c = conns.get(u);
    if (!c) conns.set(u, (c = [{ data: { user: u, open: true } }]));
    return c;
  };
  let handed = 0;
  const router = createRouter({
    connections: { of: (u: string) => (u.startsWith("r") ? undefined : connOf(u)) },
    stream: { offer: () => {} },
    directory,
    self: { id: "self", url: "http://self" },
    internalSecret: "s".repeat(32),
    log: silentLogger,
    metrics: createMetrics("ws"),
    onHanded: () => handed++,
    connectLink: () => {
      const open: Array<() => void> = [];
      queueMicrotask(() => open.forEach((f) => f()));
      return { bufferedAmount: 0, addEventListener: (t: string, f: () => void) => t === "open" && open.push(f), send: () => {}, close: () => {} };
    },
  });
  return { router, connOf };
}

const msg = (i: number, to: string) => ({ msgId: `m${i}`.padEnd(22, "x"), id: `c${i}`, from: `u${i % 1000}`, body: BODY, ts: 1764740000000 + i, to });

const cases: Record<string, Case> = {
  /** A forward's delivery arriving at the recipient's gateway (frame head, position, receipts note). */
  async deliverForwarded(root) {
    const { router } = await routerFor(root);
    return (i) => router.deliverForwarded({ message: msg(i, `u${(i + 1) % 1000}`), positions: { [`u${(i + 1) % 1000}`]: `1764740000000000.${i + 1}` } });
  },
  /** Routing at the sender's gateway: the sender's connection is here, the recipient on the peer. */
  async routeRemote(root) {
    const { router, connOf } = await routerFor(root);
    await router.route(msg(0, "r0"), { u0: { epoch: 1, pos: 1 }, r0: { epoch: 1, pos: 1 } }, connOf("u0")[0]);
    const ms = Array.from({ length: N }, (_, i) => ({ ...msg(i, `r${i % 1000}`), rcpt: [`u${i % 1000}`, `r${i % 1000}`] }));
    return (i) => router.route(ms[i]!, { [`u${i % 1000}`]: { epoch: 1764740000000000, pos: i + 2 }, [`r${i % 1000}`]: { epoch: 1764740000000000, pos: i + 2 } }, connOf(`u${i % 1000}`)[0]);
  },
  /** A client's send frame, parsed and validated. */
  async parseSend(root) {
    const { parseClientFrame } = await import(`${root}/shared/protocol.ts`);
    return (i) => parseClientFrame(`{"type":"send","id":"c${i}","to":"u${i % 1000}","body":"${BODY}"}`);
  },
  /** Noting a delivery for receipts (the recipient's gateway, at every message frame handed out). */
  async delivered(root) {
    const { createReceipts } = await import(`${root}/services/ws/receipts.ts`);
    const { silentLogger } = await import(`${root}/shared/log.ts`);
    const { createMetrics } = await import(`${root}/shared/metrics.ts`);
    const r = createReceipts({ db: () => null, awaitWritten: async () => {}, publish: async () => {}, log: silentLogger, metrics: createMetrics("ws"), intervalMs: 1e9 });
    // each of 1,000 users hears from 10 others; the messages are built beforehand
    const ms = Array.from({ length: N }, (_, i) => ({ ...msg(i, `u${i % 1000}`), from: `u${(i + 1 + (i % 10)) % 1000}` }));
    return (i) => r.delivered(`u${i % 1000}`, ms[i]!);
  },
  /** A send frame through the gateway (parse, chain, record, ack) with a pipeline that accepts at once. */
  async gatewaySend(root) {
    const { createGateway } = await import(`${root}/services/ws/gateway.ts`);
    const { silentLogger } = await import(`${root}/shared/log.ts`);
    const { createMetrics } = await import(`${root}/shared/metrics.ts`);
    const gateway = createGateway({
      connections: { add: async () => {}, remove: () => {}, all: () => [] },
      pipeline: { send: async () => ({ ts: 1764740000000, cursor: "1764740000000000.5" }) },
      stream: { init: async () => {}, frame: () => {}, drop: () => {} },
      receipts: {},
      presence: { unwatch: () => {} },
      typing: async () => {},
      log: silentLogger,
      metrics: createMetrics("ws"),
      rate: { perSec: 1e9, burst: 1e9 },
    });
    // one connection per user, 1,000 users; a send from each in turn
    const sockets = Array.from({ length: 1000 }, (_, i) => ({ data: gateway.connData({ user: `u${i}`, ver: 0, id: "t" }), send: () => 0, close: () => {} }));
    for (const ws of sockets) gateway.websocket.open(ws);
    await Promise.all(sockets.map((ws) => ws.data.ready));
    const frames = Array.from({ length: N }, (_, i) => `{"type":"send","id":"c${i}","to":"u${(i + 1) % 1000}","body":"${BODY}"}`);
    return (i) => {
      const ws = sockets[i % 1000]!;
      gateway.websocket.message(ws, frames[i]!);
      return ws.data.chain;
    };
  },
  /** The message id of a send. */
  async deriveMsgId(root) {
    const { deriveMsgId } = await import(`${root}/services/ws/pipeline.ts`);
    return (i) => deriveMsgId(`u${i % 1000}`, `c${i}`, { to: `u${(i + 1) % 1000}` });
  },
};

const chosen = positionals.length ? positionals : Object.keys(cases);
for (const name of chosen) {
  const c = cases[name];
  if (!c) throw new Error(`no case ${name}; cases: ${Object.keys(cases).join(", ")}`);
  const fns = { old: await c(roots.old), new: await c(roots.new) };
  const run = async (f: (i: number) => unknown) => {
    const t = process.cpuUsage();
    const pending: unknown[] = [];
    for (let i = 0; i < N; i++) pending.push(f(i));
    await Promise.all(pending);
    const u = process.cpuUsage(t);
    return (u.user + u.system) / N;
  };
  await run(fns.old);
  await run(fns.new);
  const xs: Record<"old" | "new", number[]> = { old: [], new: [] };
  for (let r = 0; r < ROUNDS; r++) for (const t of r % 2 ? (["new", "old"] as const) : (["old", "new"] as const)) xs[t].push(await run(fns[t]));
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(
    `${name}: old ${median(xs.old).toFixed(3)} µs, new ${median(xs.new).toFixed(3)} µs per message; new/old ${median(xs.new.map((x, i) => x / xs.old[i]!)).toFixed(3)} (rounds old ${xs.old.map((x) => x.toFixed(2)).join(" ")}; new ${xs.new.map((x) => x.toFixed(2)).join(" ")})`,
  );
}
process.exit(0);
