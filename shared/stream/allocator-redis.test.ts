import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findRedis, freePort, INFRA_DIR_PREFIX, redisServer } from "../../scripts/infra.ts";
import { silentLogger } from "../log.ts";
import { closeRedis, createRedis, type Redis } from "../redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { AllocatorUnavailable } from "./allocator.ts";
import { allocatorContract } from "./allocator.contract.ts";
import { createRedisAllocator, hashSlot } from "./allocator-redis.ts";

let redis: Redis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(() => closeRedis(redis));

allocatorContract("redis", async ({ window }) => {
  const prefix = `test:${crypto.randomUUID()}:`;
  return {
    allocator: createRedisAllocator(redis, { prefix, window }),
    wipe: () => deletePrefix(redis, prefix),
    cleanup: () => deletePrefix(redis, prefix),
  };
});

test("hashSlot is Redis Cluster's key slot (values from the Redis documentation)", () => {
  expect(hashSlot("123456789")).toBe(12739);
  expect(hashSlot("foo")).toBe(12182);
  expect(hashSlot("bar")).toBe(5061);
  expect(hashSlot("hello")).toBe(866);
});

test("waitReplicas: an allocation waits for the replica (WAIT on the key's node); a slot whose master has none skips WAIT for a while", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  // this Redis has no replica: WAIT 1 answers 0 after waitMs
  const allocator = createRedisAllocator(redis, { prefix, waitReplicas: 1, waitMs: 300 });
  let t = performance.now();
  const [first] = await allocator.allocate([{ msgId: "m1", users: ["w"] }]);
  expect(performance.now() - t).toBeGreaterThanOrEqual(290);
  expect(first!.positions.w!.pos).toBe(1);
  t = performance.now();
  const [second] = await allocator.allocate([{ msgId: "m2", users: ["w"] }, { msgId: "m1", users: ["w"] }]);
  expect(performance.now() - t).toBeLessThan(200);
  expect(second!.positions.w!.pos).toBe(2);
  expect((await allocator.allocate([{ msgId: "m1", users: ["w"] }]))[0]!.positions.w!.pos).toBe(1);
  await deletePrefix(redis, prefix);
});

test("a msgId that is not well-formed Unicode (an unpaired surrogate; never a storable msgId) is refused, and nothing is allocated", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const allocator = createRedisAllocator(redis, { prefix });
  const bad = [{ msgId: "ok", users: ["v"] }, { msgId: "lone\ud800", users: ["v"] }];
  const err = await allocator.allocate(bad).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  expect(err).not.toBeInstanceOf(AllocatorUnavailable);
  expect((err as Error).message).toContain("a msgId must be well-formed Unicode");
  expect((await allocator.tops(["v"])).v!.pos).toBe(0);
  await deletePrefix(redis, prefix);
});

test("the stored layout is the one every script version since the claims moved into the entries reads and writes (rolling upgrade: old and new processes share one Redis), with the floor beside the counters", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const k = (u: string, x: string) => `${prefix}{u:${u}}:${x}`;
  const allocator = createRedisAllocator(redis, { prefix, window: 2 });
  const [a] = await allocator.allocate([{ msgId: "k1", users: ["s", "t"], claim: { sender: "s", ts: 111 } }]);
  await allocator.allocate([{ msgId: "k2", users: ["t"], claim: { sender: "s", ts: 222 } }]);
  await allocator.writtenUpTo([{ user: "s", position: a!.positions.s! }, { user: "t", position: a!.positions.t! }]);
  const epoch = String(a!.positions.s!.epoch);
  expect(await redis.hgetall(k("s", "s"))).toEqual({ e: epoch, n: "1", i: "0", r: "1", f: "1" });
  // s: two ids (k1, and k2's claim-only entry) rotated its window of 2: m0 became m1
  expect(await redis.exists(k("s", "m0"))).toBe(0);
  expect(await redis.hgetall(k("s", "m1"))).toEqual({ k1: "1:111", k2: "0:222w" });
  expect(await redis.hgetall(k("t", "m1"))).toEqual({ k1: "1", k2: "2" });
  // an entry as the previous (one argument per field) version left it is read back as its own
  await redis.hset(k("t", "m0"), "k3", "3:333");
  await redis.hset(k("t", "s"), "n", "3", "i", "1");
  const [c] = await allocator.allocate([{ msgId: "k3", users: ["t"], claim: { sender: "t", ts: 444 } }]);
  expect(c).toEqual({ positions: { t: { epoch: a!.positions.t!.epoch, pos: 3 } }, claimed: { fresh: false, ts: 333 } });
  // t's next id rotates its window: of the old m1 the entry at the floor (k1) goes, the one above it (k2) stays
  await allocator.allocate([{ msgId: "k4", users: ["t"] }]);
  expect(await redis.hgetall(k("t", "m0"))).toEqual({ k2: "2" });
  expect(await redis.hgetall(k("t", "m1"))).toEqual({ k3: "3:333", k4: "4" });
  await deletePrefix(redis, prefix);
});

test("entries the previous version's persist marked written one by one (`w`) leave at a rotation whatever the floor", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const k = (u: string, x: string) => `${prefix}{u:${u}}:${x}`;
  await redis.hset(k("o", "s"), "e", "1000", "n", "3", "i", "1", "r", "1");
  await redis.hset(k("o", "m1"), "a", "1w", "b", "2");
  await redis.hset(k("o", "m0"), "c", "3");
  const allocator = createRedisAllocator(redis, { prefix, window: 2 });
  const [d] = await allocator.allocate([{ msgId: "d", users: ["o"] }]);
  expect(d!.positions.o).toEqual({ epoch: 1000, pos: 4 });
  expect(await redis.hgetall(k("o", "m0"))).toEqual({ b: "2" });
  expect((await allocator.floors(["o"])).o).toEqual({ epoch: 1000, pos: 0 });
  await deletePrefix(redis, prefix);
});

test("state written by the previous script version (claims apart, no generation flag) keeps its positions", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const k = (u: string, x: string) => `${prefix}{u:${u}}:${x}`;
  // the previous layout: s without `r`, an entry already rotated into m1, claims in c0
  await redis.hset(k("o", "s"), "e", "1000", "n", "5", "i", "1", "ci", "2");
  await redis.hset(k("o", "m1"), "old", "4");
  await redis.hset(k("o", "m0"), "newer", "5w");
  await redis.hset(k("o", "c0"), "newer", "123");
  const allocator = createRedisAllocator(redis, { prefix });
  const [a, b, c] = await allocator.allocate([{ msgId: "old", users: ["o"] }, { msgId: "newer", users: ["o"] }, { msgId: "fresh", users: ["o"] }]);
  expect(a!.positions.o).toEqual({ epoch: 1000, pos: 4 });
  expect(b!.positions.o).toEqual({ epoch: 1000, pos: 5 });
  expect(c!.positions.o).toEqual({ epoch: 1000, pos: 6 });
  await deletePrefix(redis, prefix);
});

test("waitReplicas: a replica that is attached but behind fails the allocation (no answer a failover could undo); once it catches up, the retry gets the same position", async () => {
  const dir = mkdtempSync(join(tmpdir(), `${INFRA_DIR_PREFIX}slow-replica-`));
  const bin = findRedis();
  const [mPort, rPort] = [await freePort(), await freePort()];
  const master = redisServer(bin, dir, mPort, { name: "master" });
  const replica = redisServer(bin, dir, rPort, { name: "replica", args: ["--replicaof", "127.0.0.1", String(mPort)] });
  let client: Redis | undefined;
  try {
    await master.start();
    await replica.start();
    client = createRedis(master.url, silentLogger);
    if (client.status !== "ready") await new Promise((resolve) => client!.once("ready", resolve));
    const allocator = createRedisAllocator(client, { prefix: "slow:", waitReplicas: 1, waitMs: 100 });
    const end = Date.now() + 20_000;
    for (;;) {
      const info = await client.info("replication");
      if (/connected_slaves:1/.test(info) && /state=online/.test(info)) break;
      if (Date.now() > end) throw new Error(`the replica did not sync: ${info}`);
      await Bun.sleep(100);
    }
    expect((await allocator.allocate([{ msgId: "a", users: ["u"] }]))[0]!.positions.u!.pos).toBe(1);
    // the replica stops reading (a stalled process): still attached, confirms nothing
    process.kill(replica.pid!, "SIGSTOP");
    try {
      const err = await allocator.allocate([{ msgId: "b", users: ["u"] }]).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(AllocatorUnavailable); // before: answered after 100 ms, unreplicated
      expect(await client.hget("slow:{u:u}:s", "n")).toBe("2"); // allocated on the master, not answered
    } finally {
      process.kill(replica.pid!, "SIGCONT");
    }
    const [again] = await allocator.allocate([{ msgId: "b", users: ["u"] }]);
    expect(again!.positions.u!.pos).toBe(2);
  } finally {
    client?.disconnect();
    await Promise.allSettled([replica.stop(), master.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
