// Clustered Redis, RabbitMQ and PostgreSQL from local binaries, spread over three loopback "hosts"
// 127.0.N.1 (CONTRACT.md section 8): a host is the set of processes bound to its address.
//
//   host 0: redis master 0, redis replica of master 2, rabbit node 0, postgres primary
//   host 1: redis master 1, redis replica of master 0, rabbit node 1, postgres synchronous standby
//   host 2: redis master 2, redis replica of master 1, rabbit node 2
//
// Redis Cluster: cluster-node-timeout 2 s, full coverage not required (the other masters keep
// serving while one shard fails over), every replica may take over. RabbitMQ: three nodes joined
// with `rabbitmqctl join_cluster` one at a time (a failed join is retried from a reset node), one
// Erlang cookie; a quorum queue declared after the join has a member on each. PostgreSQL: the standby is a pg_basebackup -R of the primary and is its
// synchronous standby (synchronous_standby_names); `promoteStandby()` is the operator's tool.
// The one Erlang port mapper (epmd) listens on 127.0.0.1, outside every host: it is the machine's
// name service for the three nodes, and a host loss kills the node, not the mapper.
//
// Bounded: every start has a deadline (the Server class), every command a timeout; every server
// dies with this process (setpriv --pdeathsig) and stop() removes the data directory.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, chmodSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  cleanEnv,
  findPostgres,
  findRabbit,
  findRedis,
  INFRA_DIR_PREFIX,
  postgresServer,
  processTree,
  rabbitNode,
  redisServer,
  REDIS_TUNING,
  run,
  type Server,
} from "./infra.ts";

export interface RedisNode {
  host: string;
  port: number;
  role: "master" | "replica";
  /** For a replica: the index of the master it replicates. */
  shard: number;
  server: Server;
}

export interface ClusterInfra {
  /** The three host addresses. */
  hosts: string[];
  redis: RedisNode[];
  rabbit: Server[];
  pgPrimary: Server;
  pgStandby: Server;
  /** Comma-separated, every node of the Redis Cluster. */
  redisUrl: string;
  /** Comma-separated, every RabbitMQ node. */
  amqpUrl: string;
  /** Multi-host, primary first, target_session_attrs=read-write. */
  databaseUrl: string;
  dir: string;
  /** Every server process (with its helpers) bound to `host`, by pid: what a host loss kills. */
  pidsOn(host: string): number[];
  /** Marks the servers of `host` as killed after their processes were SIGKILLed (no restart). */
  forget(host: string): Promise<void>;
  /** The operator's tool: promotes the standby (pg_ctl promote) and waits until it accepts writes. */
  promoteStandby(): Promise<void>;
  stop(): Promise<void>;
}

const handedOut = new Set<string>();

/** A port free on `host` (and, with `plusBus`, port + 10000 too: Redis Cluster's bus). */
async function freePortOn(host: string, plusBus = false): Promise<number> {
  const tryPort = (port: number) =>
    new Promise<number>((resolve) => {
      const srv = createServer();
      srv.unref();
      srv.on("error", () => resolve(0));
      srv.listen(port, host, () => {
        const addr = srv.address();
        const p = typeof addr === "object" && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
  for (let i = 0; i < 200; i++) {
    const port = plusBus ? 20_000 + Math.floor(Math.random() * 35_000) : await tryPort(0);
    if (!port || handedOut.has(`${host}:${port}`)) continue;
    if (plusBus && (!(await tryPort(port)) || !(await tryPort(port + 10_000)))) continue;
    handedOut.add(`${host}:${port}`);
    return port;
  }
  throw new Error(`no free port on ${host}`);
}

/** Three host addresses 127.0.N.1 with N picked at random (10..249), so parallel runs rarely meet. */
export function pickHosts(): string[] {
  const n = 10 + Math.floor(Math.random() * 238);
  return [n, n + 1, n + 2].map((k) => `127.0.${k}.1`);
}

async function within<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms / 1000}s`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`${what}: not true within ${ms / 1000}s${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await Bun.sleep(200);
  }
}

export async function startClusterInfra(opts: { hosts?: string[]; log?: (line: string) => void } = {}): Promise<ClusterInfra> {
  const log = opts.log ?? (() => {});
  const hosts = opts.hosts ?? pickHosts();
  for (const h of hosts) if (!/^127\.\d+\.\d+\.\d+$/.test(h)) throw new Error(`cluster hosts must be loopback addresses, got ${h}`);
  const bins = { redis: findRedis(), rabbit: findRabbit(), pg: findPostgres() };
  const redisCli = join(dirname(bins.redis), "redis-cli");
  const rabbitmqctl = join(dirname(bins.rabbit.server), "rabbitmqctl");
  const dir = mkdtempSync(join(tmpdir(), `${INFRA_DIR_PREFIX}cluster-`));
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  if (bins.pg.user) chmodSync(dir, statSync(dir).mode | 0o111);
  const all: Array<{ host: string; server: Server }> = [];
  const disposers: Array<() => Promise<void>> = [];
  const t0 = performance.now();
  const took = () => `${((performance.now() - t0) / 1000).toFixed(1)}s`;

  const stop = async () => {
    await Promise.allSettled([...all.map((s) => s.server.stop()), ...disposers.map((d) => d())]);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // ---- Redis Cluster: masters i on host i, the replica of master i on host i+1
    const redisArgs = [
      "--cluster-enabled", "yes",
      "--cluster-node-timeout", "2000",
      "--cluster-require-full-coverage", "no",
      "--cluster-replica-validity-factor", "0",
      "--appendfsync", "everysec",
      ...REDIS_TUNING,
      // protected mode accepts only 127.0.0.1 as loopback; every address here is loopback anyway
      "--protected-mode", "no",
    ];
    const redis: RedisNode[] = [];
    for (let i = 0; i < 3; i++) {
      for (const role of ["master", "replica"] as const) {
        const host = role === "master" ? hosts[i]! : hosts[(i + 1) % 3]!;
        const port = await freePortOn(host, true);
        const name = `redis-${role}-${i}`;
        // a node announces, and connects from, its host's address (else peers see 127.0.0.1)
        const server = redisServer(bins.redis, dir, port, {
          host,
          name,
          args: [...redisArgs, "--cluster-announce-ip", host, "--bind-source-addr", host, "--cluster-config-file", join(dir, name, "nodes.conf")],
        });
        redis.push({ host, port, role, shard: i, server });
        all.push({ host, server });
      }
    }

    // ---- RabbitMQ: three nodes, one cookie, one epmd
    const cookie = Array.from(randomBytes(32), (b) => "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[b % 26]).join("");
    const epmdPort = await freePortOn("127.0.0.1");
    const tag = randomBytes(4).toString("hex");
    const rabbitNodes: Array<ReturnType<typeof rabbitNode>> = [];
    for (let i = 0; i < 3; i++) {
      const node = rabbitNode(bins.rabbit, dir, {
        nodeName: `rabbit-${tag}-${i}@localhost`,
        cookie,
        host: hosts[i]!,
        port: await freePortOn(hosts[i]!),
        distPort: await freePortOn("127.0.0.1"),
        epmdPort,
        name: `rabbitmq-${i}`,
        ownsEpmd: i === 0,
      });
      rabbitNodes.push(node);
      all.push({ host: hosts[i]!, server: node.server });
    }
    disposers.push(() => rabbitNodes[0]!.dispose());
    const ctl = (node: number, ...args: string[]) =>
      run([rabbitmqctl, "-n", `rabbit-${tag}-${node}@localhost`, "--erlang-cookie", cookie, ...args], {
        env: cleanEnv({ HOME: join(dir, `rabbitmq-${node}`), ERL_EPMD_PORT: String(epmdPort) }),
        timeoutMs: 60_000,
      });

    // ---- PostgreSQL: primary on host 0, synchronous standby on host 1
    const hba = join(dir, "pg_hba.conf");
    writeFileSync(hba, ["local all all trust", "host all all 127.0.0.0/8 trust", "host replication all 127.0.0.0/8 trust", ""].join("\n"), { mode: 0o644 });
    const pgPort = [await freePortOn(hosts[0]!), await freePortOn(hosts[1]!)];
    const pgPrimary = postgresServer(bins.pg, dir, pgPort[0]!, {
      host: hosts[0]!,
      name: "pg-primary",
      args: ["-c", `hba_file=${hba}`, "-c", "wal_level=replica", "-c", "max_wal_senders=5", "-c", "cluster_name=primary"],
    });
    const pgBin = bins.pg.bin;
    const pgStandby = postgresServer(bins.pg, dir, pgPort[1]!, {
      host: hosts[1]!,
      name: "pg-standby",
      standby: true,
      args: ["-c", `hba_file=${hba}`, "-c", "synchronous_standby_names=", "-c", "cluster_name=standby1", "-c", "hot_standby=on"],
      makeData: async (data, sh) => {
        await sh([join(pgBin, "pg_basebackup"), "-h", hosts[0]!, "-p", String(pgPort[0]), "-U", "postgres", "-D", data, "-R", "-X", "stream", "-c", "fast", "--no-sync"]);
      },
    });
    all.push({ host: hosts[0]!, server: pgPrimary }, { host: hosts[1]!, server: pgStandby });

    // Three pipelines at once, each waiting only for its own servers: Redis forms its cluster while
    // RabbitMQ still boots (~14 s here), PostgreSQL's standby copies the primary once it is up.
    const start = async (s: Server) => {
      await s.start();
      log(`${s.name} ready at ${s.url} (${took()})`);
    };
    const addr = (n: RedisNode) => `${n.host}:${n.port}`;
    await rabbitNodes[0]!.epmd();
    const postgres = (await import("postgres")).default;
    // every pipeline ends before a failure is thrown: the cleanup must not race a server still starting
    const failed = (await Promise.allSettled([formRedisCluster(), formRabbitCluster(), startPostgres()])).find((r) => r.status === "rejected");
    if (failed) throw failed.reason;

    // Redis Cluster: the three masters share the slots; each replica joins its master
    async function formRedisCluster() {
      await Promise.all(redis.map((n) => start(n.server)));
      const masters = redis.filter((n) => n.role === "master");
      await run([redisCli, "--cluster", "create", ...masters.map(addr), "--cluster-yes"], { timeoutMs: 60_000 });
      for (const r of redis.filter((n) => n.role === "replica")) {
        const m = masters[r.shard]!;
        const id = (await run([redisCli, "-h", m.host, "-p", String(m.port), "cluster", "myid"])).trim();
        await run([redisCli, "--cluster", "add-node", addr(r), addr(m), "--cluster-slave", "--cluster-master-id", id], { timeoutMs: 60_000 });
      }
      await until("every redis master has its replica in sync and the cluster state is ok", 60_000, async () => {
        for (const n of redis) {
          const info = await run([redisCli, "-h", n.host, "-p", String(n.port), "cluster", "info"]);
          if (!info.includes("cluster_state:ok")) throw new Error(`${n.server.name}: ${info.split("\n")[0]}`);
          if (n.role === "master") {
            const repl = await run([redisCli, "-h", n.host, "-p", String(n.port), "info", "replication"]);
            if (!/connected_slaves:1/.test(repl) || !/state=online/.test(repl)) throw new Error(`${n.server.name}: ${repl.replace(/\s+/g, " ")}`);
          }
        }
        return true;
      });
      log(`redis cluster formed (${took()})`);
    }

    // RabbitMQ cluster: nodes 1 and 2 join node 0, one at a time (two joins at once race in
    // mnesia's schema merge), each retried from a reset node, and each checked from node 0
    async function formRabbitCluster() {
      await Promise.all(rabbitNodes.map((n) => start(n.server)));
      const seedNode = `rabbit-${tag}-0@localhost`;
      const runningOnSeed = async (): Promise<string[]> => {
        const status = JSON.parse(await ctl(0, "cluster_status", "--formatter", "json")) as { running_nodes?: string[] };
        return status.running_nodes ?? [];
      };
      for (const i of [1, 2]) {
        const node = `rabbit-${tag}-${i}@localhost`;
        for (let attempt = 1; ; attempt++) {
          try {
            await ctl(i, "stop_app");
            // a failed join can leave half a cluster schema behind: start again from an empty node
            if (attempt > 1) await ctl(i, "force_reset");
            await ctl(i, "join_cluster", seedNode);
            await ctl(i, "start_app");
            await ctl(i, "await_startup", "--timeout", "60");
            await until(`${node} running in the cluster`, 30_000, async () => (await runningOnSeed()).includes(node));
            break;
          } catch (err) {
            if (attempt >= 3) throw err;
            log(`rabbitmq node ${i} join attempt ${attempt} failed, resetting it: ${(err as Error).message.split("\n").slice(-3).join(" | ")}`);
            await Bun.sleep(1000 * attempt);
          }
        }
      }
      await ctl(0, "await_online_nodes", "3", "--timeout", "60");
      // start_app restarted each joined node's AMQP listener: wait until every node answers again
      await Promise.all(rabbitNodes.map((n) => until(`${n.server.name} accepting AMQP connections`, 60_000, () => n.server.spec.probe())));
      log(`rabbitmq cluster formed (${took()})`);
    }

    // PostgreSQL: the primary, then the standby (a copy of it), which then streams synchronously
    async function startPostgres() {
      await start(pgPrimary);
      await start(pgStandby);
      const admin = postgres(`postgres://postgres@${hosts[0]}:${pgPort[0]}/postgres`, { max: 1, onnotice: () => {} });
      try {
        // set only now: while no standby is connected a synchronous primary's commits wait (for ever)
        await admin.unsafe("alter system set synchronous_standby_names = 'standby1'");
        await admin`select pg_reload_conf()`;
        await until("the standby is the primary's synchronous standby", 60_000, async () => {
          const rows = await admin`select sync_state from pg_stat_replication where application_name = 'standby1'`;
          return rows[0]?.sync_state === "sync";
        });
      } finally {
        await admin.end({ timeout: 1 });
      }
      log(`postgres synchronous standby streaming (${took()})`);
    }

    const byPid = (host: string) => all.filter((s) => s.host === host);
    return {
      hosts,
      redis,
      rabbit: rabbitNodes.map((n) => n.server),
      pgPrimary,
      pgStandby,
      redisUrl: redis.map((n) => `redis://${addr(n)}`).join(","),
      amqpUrl: rabbitNodes.map((n) => n.server.url).join(","),
      databaseUrl: `postgres://postgres@${hosts[0]}:${pgPort[0]},${hosts[1]}:${pgPort[1]}/chat?target_session_attrs=read-write`,
      dir,
      pidsOn: (host) => byPid(host).flatMap((s) => (s.server.pid ? processTree(s.server.pid) : [])),
      forget: async (host) => {
        await Promise.all(byPid(host).map((s) => s.server.kill("SIGKILL")));
      },
      async promoteStandby() {
        await run([join(pgBin, "pg_ctl"), "-D", join(dir, "pg-standby", "data"), "promote", "-w", "-t", "30"], { user: bins.pg.user, timeoutMs: 40_000 });
        const sql = postgres(`postgres://postgres@${hosts[1]}:${pgPort[1]}/chat`, { max: 1, onnotice: () => {} });
        try {
          await within("the promoted standby accepts writes", 30_000, until("promoted", 30_000, async () => (await sql`select pg_is_in_recovery() as r`)[0]!.r === false));
        } finally {
          await sql.end({ timeout: 1 });
        }
      },
      stop,
    };
  } catch (err) {
    await Promise.allSettled([...all.map((s) => s.server.kill()), ...disposers.map((d) => d())]);
    (err as Error).message += `\n(cluster infra directory kept for inspection: ${dir})`;
    throw err;
  }
}
