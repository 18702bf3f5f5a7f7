import type { Subprocess } from "bun";
import { generateVapidKeys } from "../services/ws/push-sender.ts";

/**
 * Runs the distributed topology as real processes (discover, N ws, persist) against the Redis,
 * RabbitMQ and PostgreSQL named by REDIS_URL / AMQP_URL / DATABASE_URL (the test preload starts
 * them). Each cluster gets its own queue name and Redis key prefix, so clusters never interfere.
 */

const ROOT = new URL("..", import.meta.url).pathname;

export interface ServiceProcess {
  name: string;
  url: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** The arguments and environment it was started with (to restart it the same way). */
  args: string[];
  env: Record<string, string>;
  logs: string[];
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

export interface Cluster {
  discoverUrl: string;
  wsUrls: string[];
  persistUrl: string;
  jwtSecret: string;
  internalSecret: string;
  /** The Web Push key pair every gateway was given. */
  vapid: { publicKey: string; privateKey: string };
  queueName: string;
  env: Record<string, string>;
  discover: ServiceProcess;
  ws: ServiceProcess[];
  persist: ServiceProcess;
  /** Starts a process like `p` again (same flags and environment, port 0 unless `port` given). */
  restart(p: ServiceProcess, port?: number): Promise<ServiceProcess>;
  stop(): Promise<void>;
}

export function randomSecret(): string {
  return crypto.randomUUID().replaceAll("-", "") + crypto.randomUUID().replaceAll("-", "");
}

/**
 * The runtime settings a service is launched with, as compose.yaml and deploy/k8s set them
 * (deploy/k8s.test.ts checks that they agree). persist and discover hold no client connections,
 * so Bun's allocator keeps the memory they free instead of handing it back to the system 100 ms
 * later: on this machine that handing back cost a third of their CPU (docs/operations.md "Memory
 * allocator"). Gateways keep the default, which holds ~2 KB less per idle connection. A value in
 * the caller's environment or in `env` wins.
 */
export const RUNTIME_ENV: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  "services/persist/index.ts": { MIMALLOC_PURGE_DELAY: "-1" },
  "services/discover/index.ts": { MIMALLOC_PURGE_DELAY: "-1" },
};

/** Starts `bun run <entry> --port <port>` and resolves once it printed `listening on <url>`. */
export async function spawnService(name: string, entry: string, env: Record<string, string>, port = 0, timeoutMs = 20_000): Promise<ServiceProcess> {
  // RELAY_CPU_PROF=<dir>: each service writes a markdown CPU profile there when it exits (benchmarks).
  const prof = process.env.RELAY_CPU_PROF ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.RELAY_CPU_PROF}`, `--cpu-prof-name=${name}.md`] : [];
  const args = ["bun", ...prof, "run", entry, "--port", String(port)];
  const proc = Bun.spawn(args, { cwd: ROOT, env: { ...RUNTIME_ENV[entry], ...process.env, ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const logs: string[] = [];
  const exited = proc.exited;
  const pump = async (stream: ReadableStream<Uint8Array>, onLine?: (l: string) => void) => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (logs.length > 2000) logs.shift();
        logs.push(line);
        if (process.env.TEST_SERVICE_LOGS) console.error(`[${name}] ${line}`);
        onLine?.(line);
      }
    }
  };
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within ${timeoutMs} ms:\n${logs.slice(-20).join("\n")}`)), timeoutMs);
    void pump(proc.stdout, (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void pump(proc.stderr);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before listening:\n${logs.slice(-20).join("\n")}`));
    });
  });
  return { name, url, proc, args, env, logs, exited };
}

/** Resolves once `GET /health` answers 200; rejects with the service's last log lines after `timeoutMs`. */
export async function waitHealthy(p: ServiceProcess, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(`${p.url}/health`).then((r) => r.ok, () => false);
    if (ok) return;
    if (Date.now() > until) throw new Error(`${p.name} was not healthy within ${timeoutMs} ms:\n${p.logs.slice(-20).join("\n")}`);
    await Bun.sleep(25);
  }
}

export async function stopService(p: ServiceProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<number> {
  if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill(signal);
  return p.exited;
}

export async function startCluster(opts: { ws?: number; env?: Record<string, string> } = {}): Promise<Cluster> {
  const need = ["REDIS_URL", "AMQP_URL", "DATABASE_URL"].filter((k) => !process.env[k]);
  if (need.length) throw new Error(`startCluster needs ${need.join(", ")} (the test preload and scripts/stack-lib.ts set them)`);
  const tag = crypto.randomUUID().slice(0, 8);
  const jwtSecret = randomSecret();
  const internalSecret = randomSecret();
  const vapid = generateVapidKeys();
  const queueName = `test.${tag}.messages`;
  const env: Record<string, string> = {
    REDIS_URL: process.env.REDIS_URL!,
    AMQP_URL: process.env.AMQP_URL!,
    DATABASE_URL: process.env.DATABASE_URL!,
    JWT_SECRET: jwtSecret,
    INTERNAL_SECRET: internalSecret,
    VAPID_PUBLIC_KEY: vapid.publicKey,
    VAPID_PRIVATE_KEY: vapid.privateKey,
    QUEUE_NAME: queueName,
    REDIS_PREFIX: `test:${tag}:`,
    LOG_LEVEL: "warn",
    ...opts.env,
  };
  const started: ServiceProcess[] = [];
  try {
    const discover = await spawnService("discover", "services/discover/index.ts", env);
    started.push(discover);
    const wsEnv = { ...env, DISCOVER_URL: discover.url };
    const [persist, ...ws] = await Promise.all([
      spawnService("persist", "services/persist/index.ts", env),
      ...Array.from({ length: opts.ws ?? 2 }, (_, i) => spawnService(`ws${i + 1}`, "services/ws/index.ts", wsEnv)),
    ]);
    started.push(persist!, ...ws);
    // Listening is not ready: wait until every service reports its dependencies connected.
    await Promise.all(started.map((p) => waitHealthy(p)));
    const cluster: Cluster = {
      discoverUrl: discover.url,
      wsUrls: ws.map((w) => w.url),
      persistUrl: persist!.url,
      jwtSecret,
      internalSecret,
      vapid: { publicKey: env.VAPID_PUBLIC_KEY!, privateKey: env.VAPID_PRIVATE_KEY! },
      queueName,
      env: wsEnv,
      discover,
      ws,
      persist: persist!,
      async restart(p, port = 0) {
        const entry = p.args[2]!;
        const next = await spawnService(p.name, entry, p.env, port);
        started.push(next);
        return next;
      },
      async stop() {
        await Promise.all(started.map((p) => stopService(p)));
      },
    };
    return cluster;
  } catch (err) {
    await Promise.all(started.map((p) => stopService(p, "SIGKILL")));
    throw err;
  }
}
