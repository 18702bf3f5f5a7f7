// Real Redis, RabbitMQ and PostgreSQL from locally installed binaries, on free loopback ports,
// with their data and logs in one directory. Used by the test preload, `bun run stack` and
// fault-injection tests (every server can be stopped, killed and started again on the same port
// and data directory, keeping what it had made durable).
//
// Guarantees:
// - Nothing outlives the process that started it: on Linux every server runs under
//   `setpriv --pdeathsig KILL`, so even a SIGKILLed test runner takes its servers with it.
// - Each server runs in its own process group (kill() reaches its helpers and backends too) and
//   shares no state with system services: RabbitMQ gets its own node name, Erlang cookie, epmd
//   and data directories; PostgreSQL its own cluster.
// - A missing binary fails fast with a MissingBinaryError whose message is one line naming it.

import { type Subprocess, spawn, spawnSync, which } from "bun";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect as tcpConnect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export interface ServerHandle {
  readonly url: string;
  readonly port: number;
  /** Starts the server (no-op when running) and resolves once it serves requests. */
  start(): Promise<void>;
  /** Graceful shutdown; resolves once every process of the server has exited. */
  stop(): Promise<void>;
  /** Hard kill (SIGKILL of the whole process group by default); start() may follow. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  readonly running: boolean;
}

export interface ManagedServer extends ServerHandle {
  readonly name: string;
  /** The main process while running (redis-server, beam.smp, the postmaster), else null. */
  readonly pid: number | null;
  /** stdout and stderr of every run of the server, appended. */
  readonly logFile: string;
}

export interface Infra {
  redis: ManagedServer;
  rabbit: ManagedServer;
  postgres: ManagedServer;
  /** Holds every server's data and logs. A temporary one is removed by stop(). */
  dir: string;
  /** Stops every server (gracefully, then hard) and their helpers; idempotent. */
  stop(): Promise<void>;
}

export type InfraService = "redis" | "rabbit" | "postgres";

export interface InfraOptions {
  /** Reuse or create this directory (kept by stop()); default: a new temporary directory. */
  dir?: string;
  log?: (line: string) => void;
  /** Start only these; the others are inert handles whose start() rejects. */
  only?: InfraService[];
}

/** A server binary (or the postgres user) that is not installed, and the Debian package that provides it. */
export class MissingBinaryError extends Error {
  override name = "MissingBinaryError";
  constructor(
    readonly binary: string,
    readonly pkg: string,
  ) {
    super(`missing ${binary}: apt-get install -y ${pkg}`);
  }
}

/**
 * Redis settings every Redis of the project runs with (compose.yaml and deploy/k8s/redis.yaml too;
 * docs/operations.md): hashes of more than 16 fields are real hash tables. Redis keeps a hash of up
 * to hash-max-listpack-entries fields (default 128, 512 in some builds) as one list that every HGET
 * scans; the allocator's per-user window hashes hold hundreds to thousands of ids, and the scans
 * were a third of Redis's CPU (perf) and 22 % of it per message at N=1000 (docs/benchmarks.md).
 */
export const REDIS_TUNING = ["--hash-max-listpack-entries", "16"];

export const INFRA_DIR_PREFIX = "relay-chat-infra-";
const OWNER_FILE = "owner.pid";
const STATE_FILE = "infra.json";

const handedOut = new Set<number>();

/** A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.on("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const addr = srv.address();
        const p = typeof addr === "object" && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
    if (port > 0 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

// ---------------------------------------------------------------------------------------------
// binaries

const SEARCH_PATH = [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
  .filter(Boolean)
  .join(":");

function onPath(name: string): string | null {
  return which(name, { PATH: SEARCH_PATH });
}

function missing(binary: string, pkg: string): MissingBinaryError {
  return new MissingBinaryError(binary, pkg);
}

const FINDERS: Record<InfraService, () => unknown> = { redis: findRedis, rabbit: findRabbit, postgres: findPostgres };

/** What startInfra({ only: services }) would find missing, each server's first gap (nothing when all are installed). */
export function missingBinaries(services: InfraService[]): MissingBinaryError[] {
  const out: MissingBinaryError[] = [];
  for (const s of services) {
    try {
      FINDERS[s]();
    } catch (err) {
      if (!(err instanceof MissingBinaryError)) throw err;
      out.push(err);
    }
  }
  return out;
}

export function findRedis(): string {
  const bin = onPath("redis-server");
  if (!bin) throw missing("redis-server", "redis-server");
  return bin;
}

/** The real rabbitmq-server script (not Debian's /usr/sbin wrapper, which re-executes as user rabbitmq). */
export function findRabbit(): { server: string; epmd: string } {
  const candidates = ["/usr/lib/rabbitmq/bin/rabbitmq-server", onPath("rabbitmq-server")];
  let server: string | null = null;
  for (const c of candidates) {
    if (!c || !existsSync(c)) continue;
    const real = realpathSync(c);
    if (existsSync(join(dirname(real), "rabbitmq-env"))) {
      server = real;
      break;
    }
  }
  if (!server) throw missing("rabbitmq-server", "rabbitmq-server");
  let epmd = onPath("epmd");
  if (!epmd && existsSync("/usr/lib/erlang")) {
    for (const d of readdirSync("/usr/lib/erlang").filter((d) => d.startsWith("erts-"))) {
      const p = `/usr/lib/erlang/${d}/bin/epmd`;
      if (existsSync(p)) epmd = p;
    }
  }
  if (!epmd) throw missing("epmd", "erlang-base");
  return { server, epmd };
}

export function findPostgres(): { bin: string; user: { uid: number; gid: number } | null } {
  let bin: string | null = null;
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, "bin", "initdb")))
      .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
    if (versions[0]) bin = join(root, versions[0], "bin");
  }
  if (!bin) {
    const initdb = onPath("initdb");
    if (initdb) bin = dirname(realpathSync(initdb));
  }
  if (!bin) throw missing("initdb", "postgresql");
  for (const b of ["postgres", "pg_ctl"]) if (!existsSync(join(bin, b))) throw missing(b, "postgresql");
  let user: { uid: number; gid: number } | null = null;
  if (process.getuid?.() === 0) {
    const uid = spawnSync(["id", "-u", "postgres"]);
    const gid = spawnSync(["id", "-g", "postgres"]);
    if (uid.exitCode !== 0 || gid.exitCode !== 0) throw missing("user postgres (PostgreSQL refuses to run as root)", "postgresql");
    user = { uid: Number(uid.stdout.toString().trim()), gid: Number(gid.stdout.toString().trim()) };
  }
  return { bin, user };
}

// ---------------------------------------------------------------------------------------------
// processes

export type User = { uid: number; gid: number } | null;

let setprivCache: string | null | undefined;
/** setpriv with --pdeathsig support (util-linux >= 2.33), or null. */
function setpriv(): string | null {
  if (setprivCache === undefined) {
    const bin = process.platform === "linux" ? onPath("setpriv") : null;
    setprivCache = bin && spawnSync([bin, "--pdeathsig", "KILL", "--", "true"]).exitCode === 0 ? bin : null;
  }
  return setprivCache;
}

/** argv that runs cmd as user (when given) and dies with this process where the platform allows. */
function wrapped(cmd: string[], user: User, pdeathsig: boolean): { cmd: string[]; uid?: number; gid?: number } {
  const sp = setpriv();
  if (!sp) return user ? { cmd, uid: user.uid, gid: user.gid } : { cmd };
  const as = user ? ["--reuid", String(user.uid), "--regid", String(user.gid), "--clear-groups"] : [];
  if (!as.length && !pdeathsig) return { cmd };
  return { cmd: [sp, ...as, ...(pdeathsig ? ["--pdeathsig", "KILL"] : []), "--", ...cmd] };
}

export function cleanEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith("RABBITMQ_") || k.startsWith("ERL_") || k.startsWith("PG") || k === "NOTIFY_SOCKET") continue;
    env[k] = v;
  }
  env.PATH = SEARCH_PATH;
  return { ...env, ...extra };
}

/** Runs a short command to completion; rejects with its output on failure. */
export async function run(cmd: string[], opts: { user?: User; cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<string> {
  const w = wrapped(cmd, opts.user ?? null, true);
  const proc = spawn({
    cmd: w.cmd,
    uid: w.uid,
    gid: w.gid,
    cwd: opts.cwd,
    env: opts.env ?? cleanEnv({}),
    stdio: ["ignore", "pipe", "pipe"],
    timeout: opts.timeoutMs ?? 60_000,
    killSignal: "SIGKILL",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const text = (out + err).trim();
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${code ?? proc.signalCode}):\n${text.split("\n").slice(-20).join("\n")}`);
  return text;
}

/** The last lines of a log, preceded by its first error when that is further up. */
function tail(file: string, lines = 20): string {
  let all: string[];
  try {
    all = readFileSync(file, "utf8").trimEnd().split("\n");
  } catch {
    return "(no log)";
  }
  const last = all.slice(-lines);
  const firstError = all.findIndex((l) => /\b(error|fatal|panic)\b/i.test(l));
  if (firstError < 0 || firstError >= all.length - lines) return last.join("\n");
  return [...all.slice(firstError, Math.min(firstError + 5, all.length - lines)), "...", ...last].join("\n");
}

function processAlive(proc: Subprocess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

async function exitedWithin(proc: Subprocess, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  const done = await Promise.race([proc.exited.then(() => true as const), timeout]);
  clearTimeout(timer);
  return done;
}

/** pid -> parent pid of every live (non-zombie) process; null where /proc is not available. */
function processTable(): Map<number, number> | null {
  if (!existsSync("/proc/self/stat")) return null;
  const table = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (f[0] !== "Z" && f[0] !== "X") table.set(Number(entry), Number(f[1]));
  }
  return table;
}

/** root and its live descendants (servers put helpers and backends in sessions of their own). */
export function processTree(root: number): number[] {
  const table = processTable();
  if (!table) return [root];
  const tree = [root];
  for (let i = 0; i < tree.length; i++) for (const [pid, ppid] of table) if (ppid === tree[i]) tree.push(pid);
  return tree;
}

export function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {}
  }
}

/** Waits until none of pids is alive; SIGKILLs the rest after ms. */
export async function waitGone(pids: number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const table = processTable();
    const alive = table
      ? pids.filter((p) => table.has(p))
      : pids.filter((p) => {
          try {
            process.kill(p, 0);
            return true;
          } catch {
            return false;
          }
        });
    if (alive.length === 0) return;
    if (Date.now() > deadline) {
      signalAll(alive, "SIGKILL");
      if (Date.now() > deadline + 2_000) return;
    }
    await Bun.sleep(20);
  }
}

export async function probeTcp(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port });
    const done = (v: boolean) => (s.destroy(), resolve(v));
    s.setTimeout(1000, () => done(false));
    s.on("connect", () => done(true));
    s.on("error", () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// one server

export interface ServerSpec {
  name: string;
  /** The address it listens on (default 127.0.0.1). */
  host?: string;
  port: number;
  url: string;
  logFile: string;
  /** Once before the first start (mkdir, initdb). */
  prepare?(): Promise<void>;
  /** Before every start (e.g. a helper that must be up first). */
  beforeStart?(): Promise<void>;
  cmd: string[];
  env: Record<string, string>;
  cwd: string;
  user: User;
  /** One readiness probe: true when the server serves requests. */
  probe(): Promise<boolean>;
  readyTimeoutMs: number;
  afterReady?(): Promise<void>;
  /** Asks the server to shut down gracefully. */
  requestStop(proc: Subprocess): Promise<void>;
  stopTimeoutMs: number;
}

export class Server implements ManagedServer {
  #proc: Subprocess | null = null;
  #ready = false;
  #prepared = false;
  #op: Promise<void> = Promise.resolve();

  constructor(readonly spec: ServerSpec) {}

  get name() {
    return this.spec.name;
  }
  get url() {
    return this.spec.url;
  }
  get port() {
    return this.spec.port;
  }
  get logFile() {
    return this.spec.logFile;
  }
  get pid() {
    return this.#proc && processAlive(this.#proc) ? this.#proc.pid : null;
  }
  get running() {
    return this.#ready && this.#proc !== null && processAlive(this.#proc);
  }

  /** Serialises start/stop/kill so a fault test can call them in any order. */
  #serial(fn: () => Promise<void>): Promise<void> {
    const next = this.#op.catch(() => {}).then(fn);
    this.#op = next;
    return next;
  }

  start(): Promise<void> {
    return this.#serial(() => this.#start());
  }
  stop(): Promise<void> {
    return this.#serial(() => this.#stop());
  }
  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    return this.#serial(() => this.#kill(signal));
  }

  async #start(): Promise<void> {
    if (this.running) return;
    if (this.#proc) await this.#kill("SIGKILL");
    const s = this.spec;
    if (!this.#prepared) {
      await s.prepare?.();
      this.#prepared = true;
    }
    await s.beforeStart?.();
    const fd = openSync(s.logFile, "a");
    let proc: Subprocess;
    try {
      const w = wrapped(s.cmd, s.user, true);
      proc = spawn({ cmd: w.cmd, uid: w.uid, gid: w.gid, cwd: s.cwd, env: s.env, stdio: ["ignore", fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    this.#proc = proc;
    const started = Date.now();
    for (;;) {
      if (!processAlive(proc)) {
        await this.#kill("SIGKILL");
        throw new Error(`${s.name} exited (${proc.exitCode ?? proc.signalCode}) before it was ready on ${s.host ?? "127.0.0.1"}:${s.port}; ${s.logFile}:\n${tail(s.logFile)}`);
      }
      if (await s.probe().catch(() => false)) break;
      if (Date.now() - started > s.readyTimeoutMs) {
        await this.#kill("SIGKILL");
        throw new Error(`${s.name} not ready on ${s.host ?? "127.0.0.1"}:${s.port} within ${s.readyTimeoutMs / 1000}s; ${s.logFile}:\n${tail(s.logFile)}`);
      }
      await Bun.sleep(100);
    }
    await s.afterReady?.();
    this.#ready = true;
  }

  async #stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#ready = false;
    const tree = processTree(proc.pid);
    if (processAlive(proc)) {
      await this.spec.requestStop(proc).catch(() => proc.kill("SIGTERM"));
      if (!(await exitedWithin(proc, this.spec.stopTimeoutMs))) signalAll(processTree(proc.pid), "SIGKILL");
      await proc.exited;
    }
    await waitGone(tree, 5_000);
    this.#proc = null;
  }

  async #kill(signal: NodeJS.Signals): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#ready = false;
    const tree = processTree(proc.pid);
    if (signal === "SIGKILL") signalAll(tree, "SIGKILL");
    else {
      try {
        proc.kill(signal);
      } catch {}
      if (!(await exitedWithin(proc, this.spec.stopTimeoutMs))) signalAll(processTree(proc.pid), "SIGKILL");
    }
    await proc.exited;
    await waitGone(tree, 5_000);
    this.#proc = null;
  }
}

class Inert implements ManagedServer {
  readonly url = "";
  readonly port = 0;
  readonly running = false;
  readonly pid = null;
  readonly logFile = "";
  constructor(readonly name: string) {}
  async start() {
    throw new Error(`${this.name} is not part of this infra (see startInfra's only option)`);
  }
  async stop() {}
  async kill() {}
}

// ---------------------------------------------------------------------------------------------
// the three servers

interface State {
  nodeName: string;
  cookie: string;
  ports: Record<string, number>;
}

/** A redis-server with its data in `dir`/`name`; `args` are added to (and override) the defaults. */
export function redisServer(bin: string, dir: string, port: number, opts: { host?: string; name?: string; args?: string[] } = {}): Server {
  const host = opts.host ?? "127.0.0.1";
  const name = opts.name ?? "redis";
  const data = join(dir, name);
  return new Server({
    name: opts.name ? `redis-server ${opts.name}` : "redis-server",
    host,
    port,
    url: `redis://${host}:${port}`,
    logFile: join(dir, `${name}.log`),
    cmd: [bin, "--port", String(port), "--bind", host, "--save", "", "--appendonly", "yes", "--appendfsync", "always", ...REDIS_TUNING, "--dir", data, "--daemonize", "no", "--logfile", "", ...(opts.args ?? [])],
    env: cleanEnv({}),
    cwd: dir,
    user: null,
    async prepare() {
      mkdirSync(data, { recursive: true });
    },
    probe: () => redisPing(port, host),
    readyTimeoutMs: 20_000,
    async requestStop(proc) {
      proc.kill("SIGTERM");
    },
    stopTimeoutMs: 15_000,
  });
}

export function redisPing(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port });
    let buf = "";
    const done = (v: boolean) => (s.destroy(), resolve(v));
    s.setTimeout(1000, () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => {
      buf += d.toString();
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
    s.on("error", () => done(false));
  });
}

function rabbitServer(bins: { server: string; epmd: string }, dir: string, state: State): { server: Server; dispose(): Promise<void> } {
  return rabbitNode(bins, dir, { nodeName: state.nodeName, cookie: state.cookie, port: state.ports.rabbit!, distPort: state.ports.rabbitDist!, epmdPort: state.ports.epmd! });
}

export interface RabbitNodeOptions {
  nodeName: string;
  cookie: string;
  /** AMQP listener address (default 127.0.0.1). */
  host?: string;
  port: number;
  distPort: number;
  epmdPort: number;
  /** Data directory name under dir (default "rabbitmq"). */
  name?: string;
  /** Several nodes share one epmd: only the node that owns it starts and stops it (default true). */
  ownsEpmd?: boolean;
}

/** One RabbitMQ node; with ownsEpmd (the default) it starts its own epmd on 127.0.0.1:epmdPort first. */
export function rabbitNode(bins: { server: string; epmd: string }, dir: string, o: RabbitNodeOptions): { server: Server; epmd(): Promise<void>; dispose(): Promise<void> } {
  const name = o.name ?? "rabbitmq";
  const base = join(dir, name);
  const host = o.host ?? "127.0.0.1";
  const { port, distPort, epmdPort } = o;
  const state = { nodeName: o.nodeName, cookie: o.cookie };
  const url = `amqp://guest:guest@${host}:${port}`;
  let epmd: Subprocess | null = null;

  const startEpmd = async () => {
    if (o.ownsEpmd === false) return;
    if (epmd && processAlive(epmd)) return;
    const fd = openSync(join(dir, "epmd.log"), "a");
    try {
      const w = wrapped([bins.epmd, "-port", String(epmdPort), "-address", "127.0.0.1"], null, true);
      epmd = spawn({ cmd: w.cmd, cwd: dir, env: cleanEnv({ HOME: base }), stdio: ["ignore", fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    const started = Date.now();
    while (!(await probeTcp(epmdPort))) {
      if (!processAlive(epmd) || Date.now() - started > 10_000)
        throw new Error(`epmd did not listen on 127.0.0.1:${epmdPort}; ${join(dir, "epmd.log")}:\n${tail(join(dir, "epmd.log"))}`);
      await Bun.sleep(20);
    }
  };

  const server = new Server({
    name: o.name ? `rabbitmq-server ${o.name}` : "rabbitmq-server",
    host,
    port,
    url,
    logFile: join(dir, `${name}.log`),
    cmd: [bins.server],
    env: cleanEnv({
      HOME: base,
      ERL_EPMD_PORT: String(epmdPort),
      ERL_EPMD_ADDRESS: "127.0.0.1",
      RABBITMQ_NODENAME: state.nodeName,
      RABBITMQ_USE_LONGNAME: "false",
      RABBITMQ_NODE_IP_ADDRESS: host,
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_MNESIA_BASE: join(base, "mnesia"),
      RABBITMQ_LOG_BASE: join(base, "log"),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(base, "enabled_plugins"),
      RABBITMQ_CONFIG_FILE: join(base, "rabbitmq.conf"),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(base, "advanced.config"),
      RABBITMQ_CONF_ENV_FILE: join(base, "rabbitmq-env.conf"),
      // exec the VM directly (so pdeathsig and the process group reach it) without an Erlang shell
      RABBITMQ_ALLOW_INPUT: "true",
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-noinput +B i",
    }),
    cwd: base,
    user: null,
    async prepare() {
      for (const d of ["mnesia", "log"]) mkdirSync(join(base, d), { recursive: true });
      writeFileSync(join(base, "enabled_plugins"), "[].\n");
      writeFileSync(join(base, "rabbitmq-env.conf"), "");
      writeFileSync(
        join(base, "rabbitmq.conf"),
        [
          `listeners.tcp.default = ${host}:${port}`,
          "loopback_users = none",
          "log.console = true",
          "log.console.level = info",
          "log.console.use_colors = off",
          "log.file = false",
          "",
        ].join("\n"),
      );
      const cookie = join(base, ".erlang.cookie");
      if (!existsSync(cookie)) writeFileSync(cookie, state.cookie, { mode: 0o400 });
    },
    beforeStart: startEpmd,
    probe: () => amqpProbe(url),
    readyTimeoutMs: 90_000,
    async requestStop(proc) {
      proc.kill("SIGTERM");
    },
    stopTimeoutMs: 30_000,
  });

  return {
    server,
    epmd: startEpmd,
    async dispose() {
      await server.stop();
      const e = epmd as Subprocess | null;
      if (e && processAlive(e)) {
        e.kill("SIGKILL");
        await e.exited;
      }
      epmd = null;
    },
  };
}

export async function amqpProbe(url: string): Promise<boolean> {
  const amqp = await import("amqplib");
  const conn = await amqp.connect(url, { timeout: 2000 });
  conn.on("error", () => {});
  await conn.close().catch(() => {});
  return true;
}

export interface PostgresOptions {
  host?: string;
  /** Directory under dir and log name (default "postgres"). */
  name?: string;
  /** More server settings (`-c` pairs and the like). */
  args?: string[];
  /** Makes the data directory instead of initdb (a standby's pg_basebackup); runs as the postgres user's argv. */
  makeData?(data: string, run: (cmd: string[]) => Promise<string>): Promise<void>;
  /** Skip creating the chat database (a standby cannot). */
  standby?: boolean;
}

export function postgresServer(pg: { bin: string; user: User }, dir: string, port: number, o: PostgresOptions = {}): Server {
  const host = o.host ?? "127.0.0.1";
  const name = o.name ?? "postgres";
  const root = join(dir, name);
  const data = join(root, "data");
  const socketDir = root.length < 90 ? root : "";
  const user = pg.user;
  const env = cleanEnv({ LC_ALL: "C", LANG: "C" });
  const logFile = join(dir, `${name}.log`);
  const adminUrl = `postgres://postgres@${host}:${port}/postgres`;
  return new Server({
    name: o.name ? `postgres ${o.name}` : "postgres",
    host,
    port,
    url: `postgres://postgres@${host}:${port}/chat`,
    logFile,
    cmd: [join(pg.bin, "postgres"), "-D", data, "-c", `listen_addresses=${host}`, "-p", String(port), "-k", socketDir, "-c", "fsync=on", "-c", "max_connections=300", ...(o.args ?? [])],
    env,
    cwd: root,
    user,
    async prepare() {
      mkdirSync(root, { recursive: true });
      if (user) {
        chownSync(root, user.uid, user.gid);
        const w = wrapped(["test", "-w", root], user, false);
        if (spawnSync({ cmd: w.cmd, uid: w.uid, gid: w.gid }).exitCode !== 0)
          throw new Error(`user postgres cannot write ${root}: make its parent directories traversable (chmod o+x) or use a directory under ${tmpdir()}`);
      }
      if (existsSync(join(data, "PG_VERSION"))) return;
      if (o.makeData) {
        await o.makeData(data, (cmd) => run(cmd, { user, cwd: root, env }));
        chmodSync(data, 0o700);
        return;
      }
      const out = await run([join(pg.bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"], { user, cwd: root, env });
      writeFileSync(logFile, `${out}\n`, { flag: "a" });
    },
    probe: () => pgProbe(adminUrl),
    readyTimeoutMs: 60_000,
    async afterReady() {
      if (o.standby) return;
      const postgres = (await import("postgres")).default;
      const sql = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
      try {
        const rows = await sql`select 1 from pg_database where datname = 'chat'`;
        if (rows.length === 0) await sql.unsafe("create database chat");
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
    async requestStop() {
      await run([join(pg.bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "30", "stop"], { user, cwd: root, env });
    },
    stopTimeoutMs: 30_000,
  });
}

export async function pgProbe(url: string): Promise<boolean> {
  const postgres = (await import("postgres")).default;
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 2, idle_timeout: 1 });
  try {
    await sql`select 1`;
    return true;
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// the whole set

function loadState(dir: string): State {
  const file = join(dir, STATE_FILE);
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, "utf8")) as State;
    } catch {}
  }
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  return {
    nodeName: `rabbit-${randomBytes(6).toString("hex")}@localhost`,
    cookie: Array.from(randomBytes(32), (b) => alphabet[b % 26]).join(""),
    ports: {},
  };
}

/** Removes temporary infra directories whose owning process is gone (left by a SIGKILLed run). */
export function removeStaleInfraDirs(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((e) => e.startsWith(INFRA_DIR_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const d = join(tmpdir(), e);
    try {
      const pid = Number(readFileSync(join(d, OWNER_FILE), "utf8"));
      if (pid > 0 && pid !== process.pid) {
        try {
          process.kill(pid, 0);
          continue;
        } catch {}
      } else continue;
    } catch {
      // no owner file: only remove once it is clearly abandoned
      try {
        if (Date.now() - statSync(d).mtimeMs < 3_600_000) continue;
      } catch {
        continue;
      }
    }
    rmSync(d, { recursive: true, force: true });
  }
}

export async function startInfra(opts: InfraOptions = {}): Promise<Infra> {
  const log = opts.log ?? (() => {});
  const want = new Set<InfraService>(opts.only ?? ["redis", "rabbit", "postgres"]);
  // resolve every binary before starting anything, so a missing one fails fast and alone
  const bins = {
    redis: want.has("redis") ? findRedis() : null,
    rabbit: want.has("rabbit") ? findRabbit() : null,
    postgres: want.has("postgres") ? findPostgres() : null,
  };

  const temporary = !opts.dir;
  let dir: string;
  if (opts.dir) {
    mkdirSync(opts.dir, { recursive: true });
    dir = realpathSync(opts.dir);
  } else {
    dir = mkdtempSync(join(tmpdir(), INFRA_DIR_PREFIX));
  }
  if (bins.postgres?.user) chmodSync(dir, statSync(dir).mode | 0o111);
  writeFileSync(join(dir, OWNER_FILE), String(process.pid));

  const state = loadState(dir);
  const names = ["redis", "rabbit", "rabbitDist", "epmd", "postgres"] as const;
  for (const n of names) {
    const prev = state.ports[n];
    if (prev && !handedOut.has(prev) && (await portIsFree(prev))) handedOut.add(prev);
    else state.ports[n] = await freePort();
  }
  writeFileSync(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);

  const redis = bins.redis ? redisServer(bins.redis, dir, state.ports.redis!) : new Inert("redis-server");
  const rabbit = bins.rabbit ? rabbitServer(bins.rabbit, dir, state) : null;
  const pg = bins.postgres ? postgresServer(bins.postgres, dir, state.ports.postgres!) : new Inert("postgres");
  const servers = [redis, rabbit?.server, pg].filter((s): s is Server => s instanceof Server);

  let stopped: Promise<void> | null = null;
  const infra: Infra = {
    redis,
    rabbit: rabbit?.server ?? new Inert("rabbitmq-server"),
    postgres: pg,
    dir,
    stop() {
      stopped ??= (async () => {
        await Promise.allSettled([redis.stop(), rabbit ? rabbit.dispose() : Promise.resolve(), pg.stop()]);
        if (temporary) rmSync(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };

  const t0 = performance.now();
  const results = await Promise.allSettled(
    servers.map(async (s) => {
      await s.start();
      log(`${s.name} ready at ${s.url} (${((performance.now() - t0) / 1000).toFixed(1)}s)`);
    }),
  );
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed.length) {
    await Promise.allSettled([redis.stop(), rabbit ? rabbit.dispose() : Promise.resolve(), pg.stop()]);
    const err = failed[0]!.reason as Error;
    err.message += `\n(infra directory kept for inspection: ${dir})`;
    throw err;
  }
  return infra;
}
