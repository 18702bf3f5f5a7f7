import { parseArgs } from "node:util";

export const TARGETS = ["relay", "socketio"] as const;
export const PEER_ENGINES = ["node", "bun"] as const;
export type PeerEngine = (typeof PEER_ENGINES)[number];
export type TargetName = (typeof TARGETS)[number];

export const HELP = `bun run bench [options]

One load driver for this project (relay) and for its peer, two Socket.IO 4 servers joined by
@socket.io/redis-adapter over one Redis (scripts/peer/socketio-server.ts). Simulated users are
split across the instances; each user's partner sits on another instance and every message is a
100-byte body to the partner. Latency is end to end: from the send to the partner receiving it.

Closed loop (default): each user keeps at most --inflight sends that are unacknowledged or not yet
delivered to the partner; a slot frees once the send is both acked and delivered. With a fixed
window, latency mostly measures queueing (Little's law: latency ≈ in flight / throughput).

Open loop (--rate R): sends are scheduled at a fixed R msg/s in total, round-robin over the users,
whatever the answers; latency is measured from each send's scheduled time, so a driver or server
that falls behind shows up as latency instead of being hidden (coordinated omission).

After --duration seconds of sending it waits up to --grace seconds for acks, deliveries and
(relay) rows in PostgreSQL, and reports: connections, sent, acked, delivered, lost (acked but
never delivered), messages delivered twice or from anyone but the partner (counted apart, not as
deliveries), errors, delivered msg/s over the sending window, latency p50/p95/p99 and send → ack
latency, rows in
\`messages\` and the storage lag (how long after the last send the row count reached the acked
count), and the CPU seconds of every server process the bench started (read from /proc, each
process with its descendants) with server CPU µs per delivered message, and how long their threads
waited for a CPU (run queue, from schedstat): a busy machine shows there. Exit 1 when an acked
message was lost or a row is missing, 2 on a bad option.

Options:
  --target T        relay (default) or socketio
  --compare         run socketio, then relay, in this one invocation (each on a fresh stack) and
                    print both tables and the relay/socketio ratios; not with --target or --ws
  --users N         simulated users, even, 2..20000 (default 100)
  --inflight W      closed loop: sends in flight per user, 1..1000 (default 5); not with --rate
  --rate R          open loop: offered load in msg/s over all users, 1..1000000
  --duration S      seconds of sending, 1..3600 (default 15)
  --grace S         seconds to wait for acks, deliveries and rows after sending, 0..600 (default 10)
  --warmup S        first run the same load for S seconds on the same servers, unmeasured (its
                    own users; a loss or missing row in it still fails the bench), so that the
                    figures are of servers past their JIT's warm-up, 0..600 (default 0: none)
  --instances N     server instances when starting a stack, 2..16 (default 2)
  --peer-engine E   socketio: node (default; engine.io on node:http, Socket.IO's default set-up)
                    or bun (@socket.io/bun-engine on Bun.serve)
  --ws URL,URL      instances of a running stack instead of starting one (http URLs; for
                    socketio, instances of scripts/peer/socketio-server.ts); no CPU figures then
  --jwt-secret S    JWT_SECRET of that stack (default: $JWT_SECRET)
  --database-url U  relay: its PostgreSQL, to count rows (default: $DATABASE_URL)
  --json            print each summary as one JSON line too
  --help            this text
`;

export interface BenchOptions {
  targets: TargetName[];
  compare: boolean;
  users: number;
  /** Closed loop window per user; null in open loop. */
  inflight: number | null;
  /** Open loop offered load (msg/s, all users); null in closed loop. */
  rate: number | null;
  duration: number;
  grace: number;
  /** Seconds of unmeasured load before the measured run (0: none). */
  warmup: number;
  instances: number;
  peerEngine: PeerEngine;
  ws: string[] | null;
  jwtSecret: string | null;
  databaseUrl: string | null;
  json: boolean;
  help: boolean;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export function num(name: string, v: string | undefined, dflt: number, min: number, max: number, integer = true): number {
  if (v === undefined) return dflt;
  const n = v.trim() === "" ? Number.NaN : Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    throw new UsageError(`--${name} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max} (got ${JSON.stringify(v)})`);
  }
  return n;
}

/** The flags of `argv` by name, as strings or booleans as declared; an unknown flag or a positional argument is a UsageError. */
export function flagValues(argv: string[], strings: string[], booleans: string[]): Record<string, string | boolean | undefined> {
  const options = Object.fromEntries([...strings.map((n) => [n, { type: "string" as const }]), ...booleans.map((n) => [n, { type: "boolean" as const }])]);
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Parses the bench's command line; throws UsageError with a message naming the bad option. */
export function parseBenchOptions(argv: string[], env: Record<string, string | undefined> = process.env): BenchOptions {
  const values = flagValues(
    argv,
    ["target", "users", "inflight", "rate", "duration", "grace", "warmup", "instances", "peer-engine", "ws", "jwt-secret", "database-url"],
    ["compare", "json", "help"],
  );
  const s = (k: string) => values[k] as string | undefined;
  const help = values.help === true;
  const compare = values.compare === true;
  const target = s("target");
  if (target !== undefined && !(TARGETS as readonly string[]).includes(target)) {
    throw new UsageError(`--target must be one of ${TARGETS.join(", ")} (got ${JSON.stringify(target)})`);
  }
  if (compare && target !== undefined) throw new UsageError("--compare runs both targets: leave out --target");
  const users = num("users", s("users"), 100, 2, 20_000);
  if (users % 2) throw new UsageError(`--users must be even: users come in pairs (got ${users})`);
  if (s("rate") !== undefined && s("inflight") !== undefined) {
    throw new UsageError("--rate (open loop) and --inflight (closed loop) exclude each other: give one");
  }
  const rate = s("rate") === undefined ? null : num("rate", s("rate"), 0, 1, 1_000_000, false);
  const inflight = rate === null ? num("inflight", s("inflight"), 5, 1, 1000) : null;
  const duration = num("duration", s("duration"), 15, 1, 3600);
  const grace = num("grace", s("grace"), 10, 0, 600);
  const warmup = num("warmup", s("warmup"), 0, 0, 600);
  const instances = num("instances", s("instances"), 2, 2, 16);
  const peerEngine = s("peer-engine") ?? "node";
  if (!(PEER_ENGINES as readonly string[]).includes(peerEngine)) {
    throw new UsageError(`--peer-engine must be one of ${PEER_ENGINES.join(", ")} (got ${JSON.stringify(peerEngine)})`);
  }
  let ws: string[] | null = null;
  if (s("ws") !== undefined) {
    if (compare) throw new UsageError("--compare starts its own stacks: leave out --ws");
    ws = s("ws")!.split(",").filter(Boolean);
    if (ws.length < 2) throw new UsageError("--ws needs at least two instances (partners sit on different instances)");
    for (const u of ws) if (!/^https?:\/\/[^/\s]+/.test(u)) throw new UsageError(`--ws entries must be http(s) URLs (got ${JSON.stringify(u)})`);
  }
  const targets: TargetName[] = compare ? ["socketio", "relay"] : [(target as TargetName | undefined) ?? "relay"];
  const jwtSecret = s("jwt-secret") ?? env.JWT_SECRET ?? null;
  const databaseUrl = s("database-url") ?? env.DATABASE_URL ?? null;
  if (ws && !help) {
    if (!jwtSecret) throw new UsageError("--jwt-secret or JWT_SECRET is required with --ws");
    if (targets[0] === "relay" && !databaseUrl) throw new UsageError("--database-url or DATABASE_URL is required with --ws for relay");
  }
  return { targets, compare, users, inflight, rate, duration, grace, warmup, instances, peerEngine: peerEngine as PeerEngine, ws, jwtSecret, databaseUrl, json: values.json === true, help };
}
