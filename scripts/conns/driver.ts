// One driver process of `bun run bench:conns` (scripts/conns.ts): holds its share of the idle
// clients and behaves like a real client (docs/api.md): connect, `sync` from the last cursor,
// reconnect with backoff when dropped. Talks to the parent over Bun's IPC channel.
import { sign } from "hono/jwt";
import { backoffDelay } from "../../shared/backoff.ts";

export interface DriverConfig {
  /** The shared client port of the gateways. */
  port: number;
  /** Destination addresses (127.0.0.x); client i uses addresses[i % length]. */
  addresses: string[];
  /** Users `${prefix}${first}` … `${prefix}${first + count - 1}`. */
  prefix: string;
  first: number;
  count: number;
  jwtSecret: string;
  concurrency: number;
  stormWindowMs: number;
}

/** What a driver reports (every 250 ms and when it changes phase). */
export interface DriverStatus {
  type: "status";
  /** Clients whose latest sync was answered and whose socket is open. */
  synced: number;
  /** Every client synced at least once (the connect phase is over), and when that happened. */
  allConnectedAt: number | null;
  /** Clients dropped by the server (closed after they had synced). */
  drops: number;
  /** The latest moment a dropped client was synced again. */
  lastResyncAt: number;
  /** Error frames by code, plus connect_failed. */
  errors: Record<string, number>;
  /** Drops by close code. */
  closes: Record<string, number>;
  /** connect_failed by what the client was told (the error event's message, without the URL). */
  failures: Record<string, number>;
}

interface Client {
  user: string;
  url: string;
  ws: WebSocket | null;
  cursor: string | undefined;
  synced: boolean;
  /** Dropped since its last sync answer: its next `synced` counts as a resync. */
  dropped: boolean;
  attempt: number;
}

const given = JSON.parse(process.env.CONNS_DRIVER ?? "null") as DriverConfig | null;
if (!given || !process.send) {
  console.error("scripts/conns/driver.ts is started by scripts/conns.ts (bun run bench:conns)");
  process.exit(2);
}
const cfg: DriverConfig = given;

const errors: Record<string, number> = {};
const closes: Record<string, number> = {};
const failures: Record<string, number> = {};
const count = (code: string, into = errors) => void (into[code] = (into[code] ?? 0) + 1);
let synced = 0;
let everSynced = 0;
let allConnectedAt: number | null = null;
let drops = 0;
let lastResyncAt = 0;
let stopping = false;

// the connect phase: at most cfg.concurrency attempts in flight
let inFlight = 0;
const waiting: Client[] = [];
const pump = () => {
  while (inFlight < cfg.concurrency && waiting.length) {
    inFlight++;
    open(waiting.shift()!, true);
  }
};

function open(c: Client, initial: boolean) {
  const ws = new WebSocket(c.url);
  c.ws = ws;
  let settled = !initial;
  const settle = () => {
    if (settled) return;
    settled = true;
    inFlight--;
    pump();
  };
  ws.onopen = () => ws.send(JSON.stringify(c.cursor === undefined ? { type: "sync" } : { type: "sync", after: c.cursor }));
  ws.onmessage = (e) => {
    const f = JSON.parse(String(e.data)) as { type: string; code?: string; cursor?: string; id?: string };
    if (f.type === "message" && f.cursor) c.cursor = f.cursor;
    else if (f.type === "synced") {
      c.cursor = f.cursor;
      c.attempt = 0;
      if (!c.synced) synced++;
      c.synced = true;
      if (c.dropped) {
        c.dropped = false;
        lastResyncAt = Date.now();
      }
      if (++everSynced === cfg.count && allConnectedAt === null) {
        allConnectedAt = Date.now();
        report();
      }
      settle();
    } else if (f.type === "error") {
      count(f.code ?? "unknown");
      // a sync refused (rate_limited) or not completed (unavailable): sync again after a backoff
      if (f.id === undefined && !c.synced) {
        setTimeout(() => {
          if (c.ws === ws && ws.readyState === WebSocket.OPEN) ws.onopen!(new Event("open"));
        }, backoffDelay(c.attempt++, { baseMs: 250, capMs: 5000 }));
      }
    }
  };
  let failure = "";
  // Bun's message: "WebSocket connection to '<url>' failed: <why>"; the URL carries the token.
  ws.onerror = (ev) => void (failure = String((ev as ErrorEvent).message ?? "").replace(/^.*' failed: /, "").slice(0, 80));
  ws.onclose = (e) => {
    if (c.ws !== ws || stopping) return;
    c.ws = null;
    if (c.synced) {
      // dropped by the server (its gateway died): reconnect within the storm window
      c.synced = false;
      synced--;
      c.dropped = true;
      drops++;
      count(String(e.code), closes);
      setTimeout(() => open(c, false), Math.random() * cfg.stormWindowMs);
    } else {
      count("connect_failed");
      count(failure || `closed ${e.code}`, failures);
      settle();
      setTimeout(() => open(c, false), backoffDelay(c.attempt++, { baseMs: 250, capMs: 5000 }));
    }
  };
}

const clients: Client[] = [];
for (let k = 0; k < cfg.count; k++) {
  const user = `${cfg.prefix}${cfg.first + k}`;
  const token = await sign({ sub: user }, cfg.jwtSecret, "HS256");
  const addr = cfg.addresses[(cfg.first + k) % cfg.addresses.length]!;
  clients.push({ user, url: `ws://${addr}:${cfg.port}/ws?token=${token}`, ws: null, cursor: undefined, synced: false, dropped: false, attempt: 0 });
}

function report() {
  const s: DriverStatus = { type: "status", synced, allConnectedAt, drops, lastResyncAt, errors, closes, failures };
  process.send!(s);
}
const timer = setInterval(report, 250);

process.on("message", (m: { cmd: string }) => {
  if (m.cmd === "start") {
    waiting.push(...clients);
    pump();
  } else if (m.cmd === "stop") {
    stopping = true;
    clearInterval(timer);
    for (const c of clients) c.ws?.close();
    setTimeout(() => process.exit(0), 200);
  }
});
process.send({ type: "minted" });
