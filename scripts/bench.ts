import { parseArgs } from "node:util";
import postgres from "postgres";
import { sign } from "hono/jwt";
import { startStack, type Stack } from "./stack-lib.ts";

const HELP = `bun run bench [options]

Drives the chat backend with simulated users split across the ws instances; each user's partner
sits on another instance. Each user keeps --inflight messages unacknowledged-or-undelivered at once.
At the end it waits up to --grace seconds for stragglers, then reports what was lost.

Options:
  --users N         simulated users (even number, default 100)
  --inflight N      messages in flight per user (default 5)
  --duration S      seconds of sending (default 15)
  --grace S         seconds to wait for deliveries and rows after sending stops (default 10)
  --ws URL,URL      ws instances of a running stack (default: start one here)
  --jwt-secret S    JWT_SECRET of that stack (default: $JWT_SECRET)
  --database-url U  its PostgreSQL, to count rows (default: $DATABASE_URL)
  --instances N     ws instances when starting a stack (default 2)
  --json            print the summary as JSON too
  --help            this text
`;

function fail(msg: string): never {
  console.error(`bench: ${msg}\n\n${HELP}`);
  process.exit(2);
}

let args: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    args: Bun.argv.slice(2),
    options: {
      users: { type: "string", default: "100" },
      inflight: { type: "string", default: "5" },
      duration: { type: "string", default: "15" },
      grace: { type: "string", default: "10" },
      ws: { type: "string" },
      "jwt-secret": { type: "string" },
      "database-url": { type: "string" },
      instances: { type: "string", default: "2" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
}
try {
  args = parse();
} catch (e) {
  fail((e as Error).message);
}
if (args.values.help) {
  console.log(HELP);
  process.exit(0);
}
const int = (name: string, v: string, min: number, max: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
  return n;
};
const USERS = int("users", args.values.users!, 2, 20_000);
if (USERS % 2) fail("--users must be even (users come in pairs)");
const INFLIGHT = int("inflight", args.values.inflight!, 1, 1000);
const DURATION = int("duration", args.values.duration!, 1, 3600);
const GRACE = int("grace", args.values.grace!, 0, 600);
const INSTANCES = int("instances", args.values.instances!, 1, 16);

let stack: Stack | undefined;
let wsUrls: string[];
let jwtSecret: string;
let databaseUrl: string;
if (args.values.ws) {
  wsUrls = args.values.ws.split(",").filter(Boolean);
  for (const u of wsUrls) if (!/^https?:\/\//.test(u)) fail(`--ws entries must be http(s) URLs (got ${u})`);
  jwtSecret = args.values["jwt-secret"] ?? process.env.JWT_SECRET ?? fail("--jwt-secret or JWT_SECRET is required with --ws");
  databaseUrl = args.values["database-url"] ?? process.env.DATABASE_URL ?? fail("--database-url or DATABASE_URL is required with --ws");
} else {
  console.log(`starting a stack: redis, rabbitmq, postgres, discover, ${INSTANCES} ws, persist ...`);
  stack = await startStack({ ws: INSTANCES, log: () => {} });
  wsUrls = stack.cluster.wsUrls;
  jwtSecret = stack.cluster.jwtSecret;
  databaseUrl = stack.env.DATABASE_URL;
}

const run = crypto.randomUUID().slice(0, 6);
interface Sim {
  user: string;
  partner: number;
  ws: WebSocket;
  sentAt: Map<string, number>;
  outstanding: number;
  next: number;
}
const latencies: number[] = [];
let sent = 0;
let acked = 0;
let delivered = 0;
let errors = 0;
const errorCodes: Record<string, number> = {};
let sending = true;
const ackedIds = new Set<string>();
const deliveredIds = new Set<string>();
const sims: Sim[] = [];

function pump(s: Sim) {
  while (sending && s.outstanding < INFLIGHT) {
    const id = `${s.next++}`;
    s.outstanding++;
    sent++;
    s.sentAt.set(id, performance.now());
    s.ws.send(JSON.stringify({ type: "send", id, to: sims[s.partner]!.user, body: `bench ${run} ${id}` }));
  }
}

console.log(`connecting ${USERS} users across ${wsUrls.length} instance(s) ...`);
const t0 = performance.now();
await Promise.all(
  Array.from({ length: USERS }, async (_, i) => {
    const user = `bench-${run}-${i}`;
    // Partners are paired (0,1), (2,3)...; user i sits on instance i % n, so partners sit on different instances.
    // Minted like any load test (CONTRACT.md section 2): only `sub`, no expiry, no version.
    const token = await sign({ sub: user }, jwtSecret, "HS256");
    const url = wsUrls[i % wsUrls.length]!.replace(/^http/, "ws") + `/ws?token=${token}`;
    const ws = new WebSocket(url);
    const s: Sim = { user, partner: i ^ 1, ws, sentAt: new Map(), outstanding: 0, next: 0 };
    sims[i] = s;
    ws.addEventListener("message", (e) => {
      const f = JSON.parse(String(e.data));
      if (f.type === "ack") {
        acked++;
        ackedIds.add(f.msgId);
      } else if (f.type === "error") {
        errors++;
        errorCodes[f.code] = (errorCodes[f.code] ?? 0) + 1;
        if (f.id !== undefined) {
          s.outstanding--;
          pump(s);
        }
      } else if (f.type === "message") {
        if (deliveredIds.has(f.msgId)) return;
        deliveredIds.add(f.msgId);
        delivered++;
        const sender = sims[s.partner]!;
        const at = sender.sentAt.get(f.id);
        if (at !== undefined) {
          latencies.push(performance.now() - at);
          sender.sentAt.delete(f.id);
        }
        sender.outstanding--;
        pump(sender);
      }
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`user ${i} could not connect to ${url}`)), { once: true });
    });
    // Wait until the gateway registered the user (frames are handled after that).
    await new Promise<void>((resolve) => {
      ws.addEventListener("message", function onPong(e) {
        if (JSON.parse(String(e.data)).type === "pong") {
          ws.removeEventListener("message", onPong);
          resolve();
        }
      });
      ws.send('{"type":"ping"}');
    });
  }),
);
console.log(`connected in ${((performance.now() - t0) / 1000).toFixed(1)} s; sending for ${DURATION} s with ${INFLIGHT} in flight per user`);

const start = performance.now();
for (const s of sims) pump(s);
let lastDelivered = 0;
const progress = setInterval(() => {
  const el = (performance.now() - start) / 1000;
  console.log(`  t=${el.toFixed(0)}s sent=${sent} acked=${acked} delivered=${delivered} (${delivered - lastDelivered}/s) errors=${errors}`);
  lastDelivered = delivered;
}, 1000);
await Bun.sleep(DURATION * 1000);
sending = false;
const sendSeconds = (performance.now() - start) / 1000;
const deliveredInWindow = delivered;
clearInterval(progress);

// Grace: wait for every acked message to be delivered, and for its row.
const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
const graceUntil = performance.now() + GRACE * 1000;
while (performance.now() < graceUntil && [...ackedIds].some((id) => !deliveredIds.has(id))) await Bun.sleep(100);
let rows = 0;
for (;;) {
  const [r] = await sql`select count(*)::int as n from messages where sender like ${`bench-${run}-%`}`;
  rows = r!.n;
  if (rows >= ackedIds.size || performance.now() >= graceUntil) break;
  await Bun.sleep(200);
}
await sql.end();
const lost = [...ackedIds].filter((id) => !deliveredIds.has(id)).length;
// Resident memory of each gateway, from its /metrics, while the connections are still open.
const gatewayRssMiB = await Promise.all(
  wsUrls.map(async (u) => {
    const text = await fetch(`${u}/metrics`).then((r) => r.text(), () => "");
    const m = /^process_resident_memory_bytes(?:\{[^}]*\})? (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(text);
    return m ? Math.round(Number(m[1]) / 2 ** 20) : null;
  }),
);
for (const s of sims) s.ws.close();

latencies.sort((a, b) => a - b);
const pct = (p: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!.toFixed(1) : "n/a");
const summary = {
  users: USERS,
  instances: wsUrls.length,
  inflightPerUser: INFLIGHT,
  seconds: Number(sendSeconds.toFixed(1)),
  connections: sims.length,
  sent,
  acked: ackedIds.size,
  delivered,
  lost,
  errors,
  deliveredPerSec: Math.round(deliveredInWindow / sendSeconds),
  latencyMs: { p50: pct(50), p95: pct(95), p99: pct(99) },
  rows,
  rowsMissing: Math.max(0, ackedIds.size - rows),
  gatewayRssMiB,
};
console.log(`
| metric | value |
| --- | --- |
| connections | ${summary.connections} |
| messages sent | ${summary.sent} |
| acked | ${summary.acked} |
| delivered | ${summary.delivered} |
| lost (acked, never delivered) | ${summary.lost} |
| errors | ${summary.errors}${errors ? ` (${Object.entries(errorCodes).map(([k, v]) => `${k}: ${v}`).join(", ")})` : ""} |
| delivered msg/s | ${summary.deliveredPerSec} |
| latency p50 / p95 / p99 (ms) | ${summary.latencyMs.p50} / ${summary.latencyMs.p95} / ${summary.latencyMs.p99} |
| rows in messages | ${summary.rows} (missing ${summary.rowsMissing}) |
| gateway RSS (MiB) | ${gatewayRssMiB.map((v) => v ?? "n/a").join(" / ")} |`);
if (args.values.json) console.log(JSON.stringify(summary));
await stack?.stop();
process.exit(lost === 0 && summary.rowsMissing === 0 ? 0 : 1);
