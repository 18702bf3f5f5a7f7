import { migrateDatabase } from "../shared/db/index.ts";
import { generateVapidKeys } from "../services/ws/push-sender.ts";
import { randomSecret, spawnService, startCluster, stopService, waitHealthy, type Cluster, type ServiceProcess } from "./cluster.ts";
import { startClusterInfra, type ClusterInfra } from "./cluster-infra.ts";
import { startInfra, type Infra, type InfraService } from "./infra.ts";
import type { MeteredProcess } from "./bench/cpu.ts";

export interface Stack {
  infra: Infra | null;
  cluster: Cluster;
  env: { REDIS_URL: string; AMQP_URL: string; DATABASE_URL: string };
  stop(): Promise<void>;
}

/**
 * The server processes of a stack for CPU metering (scripts/bench/cpu.ts): the given gateways,
 * discover, persist, and Redis, RabbitMQ and PostgreSQL when the stack started them.
 */
export function stackProcesses(stack: Stack, gateways: Pick<ServiceProcess, "name" | "proc">[]): MeteredProcess[] {
  const out: MeteredProcess[] = [...gateways.map((g) => ({ name: g.name, pid: g.proc.pid })), { name: "discover", pid: stack.cluster.discover.proc.pid }, { name: "persist", pid: stack.cluster.persist.proc.pid }];
  if (stack.infra) {
    for (const [name, s] of [["redis", stack.infra.redis], ["rabbitmq", stack.infra.rabbit], ["postgres", stack.infra.postgres]] as const) {
      if (s.pid !== null) out.push({ name, pid: s.pid });
    }
  }
  return out;
}

/**
 * The distributed topology on this machine: Redis, RabbitMQ and PostgreSQL from the given URLs or
 * started from local binaries, migrations applied, then discover, `ws` gateways and persist.
 */
export async function startStack(opts: { ws?: number; log?: (line: string) => void } = {}): Promise<Stack> {
  const missing = (["redis", "rabbit", "postgres"] as InfraService[]).filter(
    (s) => !process.env[{ redis: "REDIS_URL", rabbit: "AMQP_URL", postgres: "DATABASE_URL" }[s]],
  );
  const infra = missing.length ? await startInfra({ only: missing, log: opts.log }) : null;
  const env = {
    REDIS_URL: process.env.REDIS_URL ?? infra!.redis.url,
    AMQP_URL: process.env.AMQP_URL ?? infra!.rabbit.url,
    DATABASE_URL: process.env.DATABASE_URL ?? infra!.postgres.url,
  };
  Object.assign(process.env, env);
  try {
    await migrateDatabase(env.DATABASE_URL);
    const cluster = await startCluster({ ws: opts.ws ?? 2 });
    return {
      infra,
      cluster,
      env,
      async stop() {
        await cluster.stop();
        await infra?.stop();
      },
    };
  } catch (err) {
    await infra?.stop();
    throw err;
  }
}

/** The three loopback "hosts" of `bun run stack --ha` (CONTRACT.md section 8). */
export const HA_HOSTS = ["127.0.1.1", "127.0.2.1", "127.0.3.1"];

export interface HaHost {
  ip: string;
  /** What runs on this host, name → URL. */
  processes: Array<{ name: string; url: string }>;
}

export interface HaStack {
  infra: ClusterInfra;
  hosts: HaHost[];
  gateways: ServiceProcess[];
  jwtSecret: string;
  internalSecret: string;
  env: { REDIS_URL: string; AMQP_URL: string; DATABASE_URL: string; DISCOVER_URL: string };
  stop(): Promise<void>;
}

/** Rotates a list by k (service on host i is pointed at host i+1's node first, spreading the load). */
const rotate = <T>(xs: T[], k: number) => xs.map((_, i) => xs[(i + k) % xs.length]!);

/**
 * The whole clustered topology on this machine, three hosts on loopback addresses: Redis Cluster
 * (three masters, each with a replica on another host), three clustered RabbitMQ nodes, PostgreSQL
 * primary + synchronous standby on another host, migrations, two discovers (hosts 2 and 3), and a
 * gateway and a persist on every host, each bound to its host's address (HOST).
 */
export async function startHaStack(opts: { hosts?: string[]; log?: (line: string) => void } = {}): Promise<HaStack> {
  const ips = opts.hosts ?? HA_HOSTS;
  const log = opts.log ?? (() => {});
  const infra = await startClusterInfra({ hosts: ips, log });
  const started: ServiceProcess[] = [];
  const stop = async () => {
    await Promise.all(started.map((p) => stopService(p)));
    await infra.stop();
  };
  try {
    await migrateDatabase(infra.databaseUrl);
    log("migrations applied");
    const jwtSecret = randomSecret();
    const internalSecret = randomSecret();
    const vapid = generateVapidKeys();
    const base = {
      REDIS_URL: infra.redisUrl,
      DATABASE_URL: infra.databaseUrl,
      JWT_SECRET: jwtSecret,
      INTERNAL_SECRET: internalSecret,
      VAPID_PUBLIC_KEY: vapid.publicKey,
      VAPID_PRIVATE_KEY: vapid.privateKey,
      LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
    };
    const discoverHosts = [1, 2];
    const discovers = await Promise.all(
      discoverHosts.map((h) => spawnService(`discover@${ips[h]}`, "services/discover/index.ts", { ...base, HOST: ips[h]! })),
    );
    started.push(...discovers);
    const amqpNodes = infra.amqpUrl.split(",");
    const perHost = await Promise.all(
      ips.map(async (ip, i) => {
        const env = {
          ...base,
          HOST: ip,
          AMQP_URL: rotate(amqpNodes, i).join(","),
          DISCOVER_URL: rotate(discovers.map((d) => d.url), i).join(","),
        };
        const [ws, persist] = await Promise.all([
          spawnService(`gateway@${ip}`, "services/ws/index.ts", env),
          spawnService(`persist@${ip}`, "services/persist/index.ts", env),
        ]);
        started.push(ws!, persist!);
        return { ws: ws!, persist: persist! };
      }),
    );
    await Promise.all(started.map((p) => waitHealthy(p, 60_000)));
    const hosts: HaHost[] = ips.map((ip, i) => {
      const processes: HaHost["processes"] = [];
      for (const n of infra.redis.filter((r) => r.host === ip))
        processes.push({ name: n.role === "master" ? `redis master ${n.shard + 1}` : `redis replica of master ${n.shard + 1}`, url: `redis://${n.host}:${n.port}` });
      processes.push({ name: `rabbitmq node ${i + 1}`, url: infra.rabbit[i]!.url });
      // postgres URLs are postgres://postgres@<host>:<port>/chat (scripts/infra.ts)
      if (infra.pgPrimary.url.includes(`@${ip}:`)) processes.push({ name: "postgres primary", url: infra.pgPrimary.url });
      if (infra.pgStandby.url.includes(`@${ip}:`)) processes.push({ name: "postgres sync standby", url: infra.pgStandby.url });
      const d = discoverHosts.indexOf(i);
      if (d >= 0) processes.push({ name: "discover", url: discovers[d]!.url });
      processes.push({ name: "gateway", url: perHost[i]!.ws.url }, { name: "persist", url: perHost[i]!.persist.url });
      return { ip, processes };
    });
    return {
      infra,
      hosts,
      gateways: perHost.map((p) => p.ws),
      jwtSecret,
      internalSecret,
      env: { REDIS_URL: infra.redisUrl, AMQP_URL: infra.amqpUrl, DATABASE_URL: infra.databaseUrl, DISCOVER_URL: discovers.map((d) => d.url).join(",") },
      stop,
    };
  } catch (err) {
    await Promise.all(started.map((p) => stopService(p, "SIGKILL")));
    await infra.stop();
    throw err;
  }
}
