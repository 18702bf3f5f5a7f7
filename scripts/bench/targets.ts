import postgres from "postgres";
import { io as ioClient } from "socket.io-client";
import { sign } from "hono/jwt";
import { randomSecret, spawnService, stopService } from "../cluster.ts";
import { startInfra } from "../infra.ts";
import { stackProcesses, startStack } from "../stack-lib.ts";
import type { MeteredProcess } from "./cpu.ts";
import type { PeerEngine, TargetName } from "./options.ts";

/** What the driver hears on one user's connection. `id` is the sender's own id for the send. */
export interface Handlers {
  ack(id: string): void;
  /** A send refused or failed; `id` undefined when the error names no send. */
  error(id: string | undefined, code: string): void;
  /** A message delivered to this user (the driver expects them from its partner only). */
  message(from: string, id: string, msgId: string): void;
}

export interface Conn {
  send(id: string, to: string, body: string): void;
  close(): void;
}

/** One system under test: its instances, how a user connects, what to meter, and its storage. */
export interface System {
  name: TargetName;
  label: string;
  urls: string[];
  /** Every server process this bench started (none when driving a running stack). */
  processes: MeteredProcess[];
  /** Resolves once the user is connected and registered (frames sent after it are handled). */
  connect(user: string, instance: number, h: Handlers): Promise<Conn>;
  /** Rows in PostgreSQL whose sender starts with `prefix`; null when the system stores nothing. */
  countRows: ((prefix: string) => Promise<number>) | null;
  /** Server-side processes that work for the bench itself (its database session), left out of the CPU figures. */
  ownPids?: () => Promise<number[]>;
  stop(): Promise<void>;
}

export interface SystemOptions {
  instances: number;
  peerEngine: PeerEngine;
  /** Instances of a running stack; null: start one here. */
  ws: string[] | null;
  jwtSecret: string | null;
  databaseUrl: string | null;
  log: (line: string) => void;
}

/** Minted like any load test (CONTRACT.md section 2): only `sub`, no expiry, no version. */
const mintToken = (user: string, secret: string) => sign({ sub: user }, secret, "HS256");

export function startSystem(name: TargetName, o: SystemOptions): Promise<System> {
  return name === "relay" ? startRelay(o) : startSocketio(o);
}

async function startRelay(o: SystemOptions): Promise<System> {
  let urls: string[];
  let jwtSecret: string;
  let databaseUrl: string;
  const processes: MeteredProcess[] = [];
  let stopStack = async () => {};
  if (o.ws) {
    urls = o.ws;
    jwtSecret = o.jwtSecret!;
    databaseUrl = o.databaseUrl!;
  } else {
    o.log(`starting relay: redis, rabbitmq, postgres, discover, ${o.instances} ws, persist ...`);
    const saved = { REDIS_URL: process.env.REDIS_URL, AMQP_URL: process.env.AMQP_URL, DATABASE_URL: process.env.DATABASE_URL };
    const stack = await startStack({ ws: o.instances, log: () => {} });
    urls = stack.cluster.wsUrls;
    jwtSecret = stack.cluster.jwtSecret;
    databaseUrl = stack.env.DATABASE_URL;
    processes.push(...stackProcesses(stack, stack.cluster.ws));
    stopStack = async () => {
      await stack.stop();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    };
  }
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  return {
    name: "relay",
    label: "this project (relay)",
    urls,
    processes,
    async connect(user, instance, h) {
      const token = await mintToken(user, jwtSecret);
      const url = urls[instance]!.replace(/^http/, "ws") + `/ws?token=${token}`;
      const ws = new WebSocket(url);
      let ready: (() => void) | null = null;
      ws.addEventListener("message", (e) => {
        const f = JSON.parse(String(e.data));
        if (f.type === "message") h.message(f.from, f.id, f.msgId);
        else if (f.type === "ack") h.ack(f.id);
        else if (f.type === "error") h.error(f.id, f.code);
        else if (f.type === "pong" && ready) {
          ready();
          ready = null;
        }
      });
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error(`${user} could not connect to ${urls[instance]}`)), { once: true });
      });
      // the gateway handles frames in order once it registered the user: a pong says it did
      await new Promise<void>((resolve) => {
        ready = resolve;
        ws.send('{"type":"ping"}');
      });
      return {
        send: (id, to, body) => ws.send(JSON.stringify({ type: "send", id, to, body })),
        close: () => ws.close(),
      };
    },
    async ownPids() {
      const [r] = await sql`select pg_backend_pid() as pid`;
      return [Number(r!.pid)];
    },
    async countRows(prefix) {
      const [r] = await sql`select count(*)::int as n from messages where sender like ${`${prefix}%`} and kind = 'message'`;
      return r!.n as number;
    },
    async stop() {
      await sql.end();
      await stopStack();
    },
  };
}

async function startSocketio(o: SystemOptions): Promise<System> {
  let urls: string[];
  let jwtSecret: string;
  const processes: MeteredProcess[] = [];
  let stopAll = async () => {};
  if (o.ws) {
    urls = o.ws;
    jwtSecret = o.jwtSecret!;
  } else {
    o.log(`starting socketio: redis, ${o.instances} Socket.IO servers (${o.peerEngine} engine) with @socket.io/redis-adapter ...`);
    const infra = await startInfra({ only: ["redis"] });
    jwtSecret = randomSecret();
    const env = { REDIS_URL: infra.redis.url, JWT_SECRET: jwtSecret, SOCKETIO_ENGINE: o.peerEngine };
    const servers = await Promise.allSettled(
      Array.from({ length: o.instances }, (_, i) => spawnService(`sio${i + 1}`, "scripts/peer/socketio-server.ts", env)),
    );
    const up = servers.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    stopAll = async () => {
      await Promise.all(up.map((p) => stopService(p)));
      await infra.stop();
    };
    const failed = servers.find((r) => r.status === "rejected");
    if (failed) {
      await stopAll();
      throw (failed as PromiseRejectedResult).reason;
    }
    urls = up.map((p) => p.url);
    processes.push(...up.map((p) => ({ name: p.name, pid: p.proc.pid })));
    if (infra.redis.pid !== null) processes.push({ name: "redis", pid: infra.redis.pid });
  }
  return {
    name: "socketio",
    label: `Socket.IO + redis adapter (${o.ws ? "running" : `${o.peerEngine} engine`})`,
    urls,
    processes,
    async connect(user, instance, h) {
      const token = await mintToken(user, jwtSecret);
      const socket = ioClient(urls[instance]!, { transports: ["websocket"], query: { token }, reconnection: false, timeout: 60_000 });
      socket.on("message", (m: { from: string; id: string; msgId: string }) => h.message(m.from, m.id, m.msgId));
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", () => resolve());
        socket.once("connect_error", (e) => reject(new Error(`${user} could not connect to ${urls[instance]}: ${e.message}`)));
      });
      return {
        send(id, to, body) {
          socket.emit("send", { id, to, body }, (r: { msgId?: string; error?: string }) => (r.error ? h.error(id, r.error) : h.ack(id)));
        },
        close: () => socket.close(),
      };
    },
    countRows: null,
    stop: () => stopAll(),
  };
}
