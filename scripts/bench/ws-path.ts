/**
 * The gateway's CPU per message, old code against new, in one process (issue 10).
 *
 *   git archive <base> services shared package.json tsconfig.json | tar -x -C /tmp/wscpu-base
 *   ln -sfn "$PWD/node_modules" /tmp/wscpu-base/node_modules
 *   nice -n 10 bun scripts/bench/ws-path.ts --old /tmp/wscpu-base [--users 400] [--waves 20] [--rounds 3]
 *
 * Two gateways (A and B) of each tree are wired as services/ws/service.ts wires one — connections,
 * delivery, receipts, router (forwards over a link), pipeline, gateway — on in-memory roles: the
 * directory, the allocator and a queue whose publish serializes its batch as the RabbitMQ one does.
 * Links are fake WebSockets handing each frame to the other gateway's link receiver; client
 * sockets are fakes that count what they are sent (no syscalls: uWS's writes are not measured).
 * Users alternate between A and B; in each wave every user sends one direct message, half of them
 * to a user on the other gateway, half to one on the same, and the wave ends when every ack and
 * every delivery arrived. Rounds alternate old and new trees; the figure is process CPU
 * (process.cpuUsage) per message, which counts the work of both gateways: one send, its ack and
 * one delivery. Rounds of a pair run back to back, so `new/old` (the median of the pairs' ratios) is
 * steadier than either median on a shared machine.
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const { values: args } = parseArgs({
  options: {
    old: { type: "string" },
    users: { type: "string", default: "400" },
    waves: { type: "string", default: "20" },
    rounds: { type: "string", default: "3" },
    body: { type: "string", default: "100" },
  },
});
const USERS = Number(args.users);
const WAVES = Number(args.waves);
const ROUNDS = Number(args.rounds);
const BODY = "bench ".padEnd(Number(args.body), "x");
const NEW_ROOT = resolve(import.meta.dir, "../..");

type Tree = { name: string; root: string };
const trees: Tree[] = [...(args.old ? [{ name: "old", root: resolve(args.old) }] : []), { name: "new", root: NEW_ROOT }];

interface FakeSocket {
  data: any;
  frames: number;
  send(s: string): number;
  cork(f: () => void): void;
  getBufferedAmount(): number;
  close(): void;
}

async function cluster(root: string) {
  const imp = (p: string) => import(`${root}/${p}`);
  const [{ createMemoryDirectory }, { createMemoryAllocator }, { silentLogger }, { createMetrics }, conns, delivery, receiptsM, routerM, pipelineM, gatewayM, linksM] = await Promise.all([
    imp("shared/directory/directory-memory.ts"),
    imp("shared/stream/allocator-memory.ts"),
    imp("shared/log.ts"),
    imp("shared/metrics.ts"),
    imp("services/ws/connections.ts"),
    imp("services/ws/delivery.ts"),
    imp("services/ws/receipts.ts"),
    imp("services/ws/router.ts"),
    imp("services/ws/pipeline.ts"),
    imp("services/ws/gateway.ts"),
    imp("services/ws/links.ts"),
  ]);
  const directory = createMemoryDirectory();
  const allocator = createMemoryAllocator();
  let published = 0;
  const queue = {
    // as queue-amqp.ts: one serialized body per batch (kept: the bytes are what a broker would get)
    publish: async (ms: unknown[]) => void (published += Buffer.from(JSON.stringify(ms)).length),
    ready: () => true,
  };
  const noDb = () => {
    throw new Error("no database in this benchmark");
  };
  const receivers = new Map<string, { message: (ws: unknown, data: string) => void }>();

  const gateway = (id: string) => {
    const log = silentLogger;
    const metrics = createMetrics("ws");
    const self = { id, url: `http://${id}` };
    const receipts = receiptsM.createReceipts({ db: noDb, awaitWritten: async () => {}, publish: async () => {}, log, metrics, intervalMs: 1e9 });
    const connections = conns.createConnections({ directory, self, log, heartbeatMs: 60_000, ttlMs: 600_000 });
    const stream = delivery.createDelivery({
      db: noDb,
      allocator,
      log,
      metrics,
      connectionsOf: (u: string) => connections.of(u),
      localUsers: () => connections.localUsers(),
      onHanded: receipts.delivered,
      checkIntervalMs: 1e9,
      initialHoldMs: 0,
    });
    const connectLink = (url: string) => {
      const peer = url.replace(/^ws:\/\//, "").replace(/\/internal\/link$/, "");
      const listeners: Record<string, Array<(e: unknown) => void>> = {};
      const ws = {
        bufferedAmount: 0,
        addEventListener: (t: string, f: (e: unknown) => void) => (listeners[t] ??= []).push(f),
        send: (data: string) => queueMicrotask(() => receivers.get(peer)!.message({ send: () => 0 }, data)),
        close: () => {},
      };
      queueMicrotask(() => listeners.open?.forEach((f) => f({})));
      return ws;
    };
    const router = routerM.createRouter({ connections, stream, directory, self, internalSecret: "s".repeat(32), log, metrics, onHanded: receipts.delivered, connectLink });
    const pipeline = pipelineM.createPipeline({
      queue,
      allocator,
      router,
      groupMembers: async () => new Map(),
      acceptEvent: async () => [],
      log,
      metrics,
    });
    const gw = gatewayM.createGateway({
      connections,
      pipeline,
      stream,
      presence: { watch: async () => {}, unwatch: () => {} },
      typing: async () => {},
      receipts,
      log,
      metrics,
      rate: { perSec: 1e9, burst: 1e9 },
    });
    receivers.set(id, linksM.createLinkReceiver({ deliver: (f: unknown) => router.deliverForward(f, "link"), log }));
    return {
      connections,
      gw,
      stop() {
        router.stop();
        stream.stop();
        void receipts.stop(10);
        void connections.stop();
      },
    };
  };

  const gws = [gateway("a"), gateway("b")];
  await Promise.all(gws.map((g) => g.connections.start()));
  const sockets: FakeSocket[] = [];
  const total = { acks: 0, messages: 0 };
  for (let i = 0; i < USERS; i++) {
    const g = gws[i % 2]!;
    const s: FakeSocket = {
      data: g.gw.connData({ user: `u${i}`, ver: 0, id: `t${i}` }),
      frames: 0,
      send(text: string) {
        this.frames++;
        if (text.startsWith('{"type":"ack"')) total.acks++;
        else if (text.startsWith('{"type":"message"')) total.messages++;
        else throw new Error(`unexpected frame ${text}`);
        return text.length;
      },
      cork(f) {
        f();
      },
      getBufferedAmount: () => 0,
      close() {},
    };
    sockets.push(s);
    g.gw.websocket.open(s);
  }
  await Promise.all(sockets.map((s) => s.data.ready));
  let n = 0;
  /** One wave: every user sends one message (even waves across gateways, odd ones within one). */
  const wave = async (w: number) => {
    const acks = total.acks + USERS;
    const msgs = total.messages + USERS;
    for (let i = 0; i < USERS; i++) {
      const partner = w % 2 === 0 ? i ^ 1 : i ^ 2;
      const frame = `{"type":"send","id":"c${n++}","to":"u${partner}","body":"${BODY}"}`;
      gws[i % 2]!.gw.websocket.message(sockets[i], frame);
    }
    for (let spins = 0; ; spins++) {
      if (total.acks >= acks && total.messages >= msgs) return;
      if (spins > 20_000) throw new Error(`wave ${w} stuck: ${total.acks}/${acks} acks, ${total.messages}/${msgs} messages`);
      await new Promise((r) => setImmediate(r));
    }
  };
  return {
    wave,
    stop: () => gws.forEach((g) => g.stop()),
  };
}

const clusters = new Map<string, Awaited<ReturnType<typeof cluster>>>();
for (const t of trees) clusters.set(t.name, await cluster(t.root));
// warm up both
for (const t of trees) for (let w = 0; w < 4; w++) await clusters.get(t.name)!.wave(w);

/** CPU time of the JavaScript thread alone (ns; Linux): without the GC's and JIT's helper threads. */
const mainThreadNs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").split(" ")[0]);

const results: Record<string, number[]> = {};
const mainResults: Record<string, number[]> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const t of r % 2 === 0 ? trees : [...trees].reverse()) {
    const c = clusters.get(t.name)!;
    Bun.gc(true);
    const before = process.cpuUsage();
    const mainBefore = mainThreadNs();
    for (let w = 0; w < WAVES; w++) await c.wave(w);
    const used = process.cpuUsage(before);
    const us = (used.user + used.system) / (WAVES * USERS);
    const mainUs = (mainThreadNs() - mainBefore) / 1000 / (WAVES * USERS);
    (results[t.name] ??= []).push(us);
    (mainResults[t.name] ??= []).push(mainUs);
    console.log(`round ${r + 1} ${t.name}: ${us.toFixed(2)} µs CPU per message (${mainUs.toFixed(2)} on the JS thread; ${WAVES * USERS} messages)`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [label, rs] of [["process", results], ["JS thread", mainResults]] as const) {
  for (const [name, xs] of Object.entries(rs)) console.log(`${label} ${name}: median ${median(xs).toFixed(2)} µs/message over ${xs.length} rounds (${xs.map((x) => x.toFixed(2)).join(", ")})`);
  // rounds run in pairs on the same machine state: the paired ratio is steadier than either median
  if (rs.old && rs.new) console.log(`${label} new/old: median ratio ${median(rs.new.map((x, i) => x / rs.old![i]!)).toFixed(3)}`);
}
for (const c of clusters.values()) c.stop();
process.exit(0);
