import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { findRedis, freePort, INFRA_DIR_PREFIX, redisServer, type ManagedServer } from "../../scripts/infra.ts";
import { silentLogger } from "../log.ts";
import { closeRedis, createRedis, type Redis } from "../redis.ts";
import { allocatorContract } from "./allocator.contract.ts";
import { floorsOf } from "./allocator.ts";
import { createRedisAllocator, hashSlot } from "./allocator-redis.ts";

// The allocator contract on a Redis Cluster of three masters (no replicas: WAIT is tested in
// allocator-redis.test.ts): one script call per hash slot in use, each call's keys in one slot.

const dir = mkdtempSync(join(tmpdir(), `${INFRA_DIR_PREFIX}alloc-cluster-`));
const bin = findRedis();
const nodes: ManagedServer[] = [];
let redis: Redis;

/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.on("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
  for (;;) {
    const p = await freePort();
    if (p + 10_000 < 65_536 && (await free(p + 10_000))) return p;
  }
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const port = await clusterPort();
    mkdirSync(join(dir, `n${i}`), { recursive: true });
    nodes.push(redisServer(bin, dir, port, { name: `n${i}`, args: ["--cluster-enabled", "yes", "--cluster-config-file", join(dir, `n${i}`, "nodes.conf")] }));
  }
  await Promise.all(nodes.map((n) => n.start()));
  const cli = join(dirname(bin), "redis-cli");
  const create = Bun.spawnSync([cli, "--cluster", "create", ...nodes.map((n) => new URL(n.url).host), "--cluster-yes"]);
  if (create.exitCode !== 0) throw new Error(`redis-cli --cluster create: ${create.stdout}${create.stderr}`);
  const end = Date.now() + 30_000;
  while (!nodes.every((n) => Bun.spawnSync([cli, "-u", n.url, "cluster", "info"]).stdout.toString().includes("cluster_state:ok"))) {
    if (Date.now() > end) throw new Error("the cluster did not reach cluster_state:ok");
    await Bun.sleep(200);
  }
  redis = createRedis(nodes.map((n) => n.url).join(","), silentLogger);
  if (redis.status !== "ready") await new Promise((resolve) => redis.once("ready", resolve));
}, 60_000);

afterAll(async () => {
  if (redis) await closeRedis(redis);
  await Promise.allSettled(nodes.map((n) => n.stop()));
  rmSync(dir, { recursive: true, force: true });
});

/** Deletes every key under `prefix` on every master (one key at a time: keys span slots). */
async function deletePrefix(prefix: string) {
  const cluster = redis as import("ioredis").Cluster;
  for (const node of cluster.nodes("master")) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      for (const k of keys) await node.del(k);
      cursor = next;
    } while (cursor !== "0");
  }
}

allocatorContract("redis cluster", async ({ window }) => {
  const prefix = `test:${crypto.randomUUID()}:`;
  return {
    allocator: createRedisAllocator(redis, { prefix, window }),
    wipe: () => deletePrefix(prefix),
    cleanup: () => deletePrefix(prefix),
  };
});

test("a call whose users live on all three masters answers them all (one script call per slot)", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const users = Array.from({ length: 30 }, (_, i) => `u${i}`);
  const slots = (redis as import("ioredis").Cluster).slots;
  const owners = new Set(users.map((u) => slots[hashSlot(`u:${u}`)]![0]));
  expect(owners.size).toBe(3);
  const allocator = createRedisAllocator(redis, { prefix });
  const [a, b] = await allocator.allocate([
    { msgId: "m1", users, claim: { sender: "u0", ts: 5 } },
    { msgId: "m2", users },
  ]);
  for (const u of users) {
    expect(a!.positions[u]!.pos).toBe(1);
    expect(b!.positions[u]).toEqual({ epoch: a!.positions[u]!.epoch, pos: 2 });
  }
  expect(a!.claimed).toEqual({ fresh: true, ts: 5 });
  await allocator.writtenUpTo(floorsOf([a!]));
  expect(Object.values(await allocator.floors(users)).map((f) => f.pos)).toEqual(users.map(() => 1));
  const [again] = await allocator.allocate([{ msgId: "m1", users, claim: { sender: "u0", ts: 6 } }]);
  expect(again!.positions).toEqual(a!.positions);
  expect(again!.claimed).toEqual({ fresh: false, ts: 5 });
  await deletePrefix(prefix);
});
