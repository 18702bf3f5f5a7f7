import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { Cluster } from "ioredis";
import amqp from "amqplib";
import postgres from "postgres";
import { startClusterInfra } from "../scripts/cluster-infra.ts";

test("three hosts: a Redis Cluster with every replica on another host than its master, three clustered RabbitMQ nodes, a synchronous standby; stop() leaves nothing", async () => {
  const c = await startClusterInfra();
  // a process is identified by pid and start time (pids are reused); a zombie counts as gone
  const stat = (pid: number) => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
      return { state: rest[0], start: rest[19] };
    } catch {
      return null;
    }
  };
  const pids = c.hosts.flatMap((h) => c.pidsOn(h)).map((pid) => ({ pid, start: stat(pid)?.start }));
  try {
    expect(new Set(c.hosts).size).toBe(3);
    for (const h of c.hosts) expect(h).toMatch(/^127\.\d+\.\d+\.1$/);
    // Redis: each host holds one master; each master's replica sits on another host
    const seed = c.redis[0]!;
    const redis = new Cluster([{ host: seed.host, port: seed.port }], { enableOfflineQueue: true });
    try {
      const nodes = (await redis.cluster("NODES")) as string;
      const rows = nodes.trim().split("\n").map((l) => l.split(" "));
      const masters = rows.filter((r) => r[2]!.includes("master"));
      const replicas = rows.filter((r) => r[2]!.includes("slave"));
      expect(masters).toHaveLength(3);
      expect(replicas).toHaveLength(3);
      expect(new Set(masters.map((m) => m[1]!.split(":")[0])).size).toBe(3);
      for (const r of replicas) {
        const master = masters.find((m) => m[0] === r[3])!;
        expect(r[1]!.split(":")[0]).not.toBe(master[1]!.split(":")[0]);
      }
      await redis.set("{t}k", "v");
      expect(await redis.get("{t}k")).toBe("v");
    } finally {
      redis.disconnect();
    }
    // RabbitMQ: a quorum queue declared through node 2 has a member on every node
    const conn = await amqp.connect(c.amqpUrl.split(",")[2]!);
    try {
      const ch = await conn.createChannel();
      const q = await ch.assertQueue(`cluster-infra-${crypto.randomUUID()}`, { durable: true, arguments: { "x-queue-type": "quorum" } });
      expect(q.queue).toBeTruthy();
      await ch.deleteQueue(q.queue);
    } finally {
      await conn.close();
    }
    for (const r of c.rabbit) expect(r.running).toBe(true);
    // PostgreSQL: the multi-host URL reaches the primary, and its commit waited for the standby
    const sql = postgres(c.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql`select pg_is_in_recovery() as standby, current_setting('synchronous_standby_names') as sync`;
      expect(row).toEqual({ standby: false, sync: "standby1" });
      const [rep] = await sql`select sync_state from pg_stat_replication`;
      expect(rep?.sync_state).toBe("sync");
    } finally {
      await sql.end({ timeout: 1 });
    }
  } finally {
    await c.stop();
  }
  expect(existsSync(c.dir)).toBe(false);
  const alive = pids.filter(({ pid, start }) => {
    const now = stat(pid);
    return now !== null && now.start === start && now.state !== "Z";
  });
  expect(alive).toEqual([]);
}, 180_000);
