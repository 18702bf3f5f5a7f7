/**
 * What the Redis position allocator (shared/stream/allocator-redis.ts) costs per message, on both
 * sides: the calling process (process.cpuUsage) and Redis (INFO cpu, used_cpu_user + used_cpu_sys:
 * the whole redis-server, fsync included). Starts a redis-server of its own, configured as the
 * stack runs it (scripts/infra.ts: appendfsync always, hash-max-listpack-entries 16), and runs the
 * same fixed work through an older version of the allocator (taken from git at `--base`, default
 * b485f3b) and the working tree's, in alternating rounds, each on its own key prefix:
 *
 * - gateway: 1,000 users, one call of 1,000 new messages (user i to user i+1, claimed by the sender,
 *   so ~2 ids per user), as a gateway's tick under load;
 * - lookup, written: the same messages allocated again without claims (a lookup, idempotent), then
 *   marked written as persist's batch did before the floors (every entry), or, for a version with
 *   floors, one floor per user (persist sets them once per interval, so this overstates them).
 *
 * --tick T: T messages per call instead of 1,000 (a gateway's tick below saturation).
 * With a small --window (e.g. 60: each user gets 2 new ids per call) the users' windows rotate
 * during the run, so most calls meet an older generation (m1), as long-lived users do.
 *
 *   nice -n 10 bun run scripts/bench/allocator.ts [--base <commit>] [--rounds 4] [--calls 15] [--only old|new] [--window 10000] [--tick 1000]
 *
 * Prints µs of CPU per message (a message with two users: two stream positions) per side and phase.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { findRedis, freePort, INFRA_DIR_PREFIX, redisServer } from "../infra.ts";
import { silentLogger } from "../../shared/log.ts";
import { createRedis } from "../../shared/redis.ts";
import { createRedisAllocator } from "../../shared/stream/allocator-redis.ts";
import { ALLOC_WINDOW, floorsOf, type AllocRequest, type AllocResult, type StreamAllocator } from "../../shared/stream/allocator.ts";

const { values } = parseArgs({ options: { base: { type: "string", default: "b485f3b" }, rounds: { type: "string", default: "4" }, calls: { type: "string", default: "15" }, only: { type: "string" }, window: { type: "string", default: String(ALLOC_WINDOW) }, tick: { type: "string", default: "1000" } } });
const rounds = Number(values.rounds);
const calls = Number(values.calls);
const window = Number(values.window);
const TICK = Number(values.tick);
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(calls) || calls < 1 || !Number.isInteger(window) || window < 2 || !Number.isInteger(TICK) || TICK < 1 || TICK > 1000) {
  console.error("usage: bun run scripts/bench/allocator.ts [--base <commit>] [--rounds N>=1] [--calls N>=1] [--only old|new] [--window N>=2] [--tick 1..1000]");
  process.exit(2);
}
const USERS = 1000;

const root = resolve(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), `${INFRA_DIR_PREFIX}alloc-bench-`));
/** The allocator as it was at `base`: its two files from git, importing the working tree's redis.ts. */
async function oldAllocator(): Promise<typeof createRedisAllocator> {
  const to = join(dir, "old");
  mkdirSync(to);
  for (const f of ["allocator-redis.ts", "allocator.ts"]) {
    const src = execFileSync("git", ["show", `${values.base}:shared/stream/${f}`], { cwd: root, encoding: "utf8" });
    writeFileSync(join(to, f), src.replaceAll('"../redis.ts"', JSON.stringify(join(root, "shared/redis.ts"))).replaceAll('"./position.ts"', JSON.stringify(join(root, "shared/stream/position.ts"))));
  }
  return (await import(join(to, "allocator-redis.ts"))).createRedisAllocator;
}

const server = redisServer(findRedis(), dir, await freePort());
try {
  await server.start();
  const redis = createRedis(server.url, silentLogger);
  if (redis.status !== "ready") await new Promise((r) => redis.once("ready", r));
  const redisCpu = async () => {
    const info = await redis.info("cpu");
    const f = (k: string) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)![1]);
    return (f("used_cpu_user") + f("used_cpu_sys")) * 1e6;
  };
  const impls: Array<[string, StreamAllocator]> = [
    ["old", (await oldAllocator())(redis, { prefix: "old:", window })],
    ["new", createRedisAllocator(redis, { prefix: "new:", window })],
  ];
  // --only old|new: one of them (to profile the redis-server, e.g. perf record -p <its pid>)
  if (values.only) impls.splice(0, impls.length, ...impls.filter(([n]) => n === values.only));
  if (impls.length === 0) throw new Error("--only takes old or new");
  console.error(`redis-server pid ${server.pid}`);
  let seq = 0;
  const id = () => Buffer.from(`${process.pid}:${++seq}:${Math.random()}`).toString("base64url").slice(-22);
  let next = 0;
  /** TICK messages, from the next TICK users (round the 1,000), each to the user after it. */
  const tick = (): AllocRequest[] => {
    const ts = Date.now();
    return Array.from({ length: TICK }, () => {
      const i = next++ % USERS;
      return { msgId: id(), users: [`user${i}`, `user${(i + 1) % USERS}`], claim: { sender: `user${i}`, ts } };
    });
  };
  type Totals = Record<string, { client: number; redis: number; n: number }>;
  const totals: Record<string, Totals> = { old: {}, new: {} };
  const measure = async (impl: string, phase: string, work: () => Promise<unknown>) => {
    const c0 = process.cpuUsage();
    const r0 = await redisCpu();
    await work();
    const c = process.cpuUsage(c0);
    const r = (await redisCpu()) - r0;
    const t = (totals[impl]![phase] ??= { client: 0, redis: 0, n: 0 });
    t.client += c.user + c.system;
    t.redis += r;
    t.n += TICK;
  };
  // warm both (JIT, script cache, first epochs)
  for (let i = 0; i < 5; i++) for (const [, a] of impls) await a.allocate(tick());
  for (let round = 0; round < rounds; round++) {
    for (const [name, a] of round % 2 ? [...impls].reverse() : impls) {
      for (let c = 0; c < calls; c++) {
        const reqs = tick();
        await measure(name, "gateway", () => a.allocate(reqs));
        const plain = reqs.map((q) => ({ msgId: q.msgId, users: q.users }));
        let looked: AllocResult[] = [];
        await measure(name, "lookup", async () => (looked = await a.allocate(plain)));
        // before the floors (base versions): every entry marked written; now: one floor per user per call
        const marks = a as StreamAllocator & { written?: (r: typeof plain) => Promise<void> };
        await measure(name, "written", () => (marks.written ? marks.written(plain) : a.writtenUpTo(floorsOf(looked))));
      }
    }
  }
  console.log(`µs CPU per message (${TICK} messages per call, 2 users each, ${rounds} rounds × ${calls} calls, window ${window}; base ${values.base})`);
  console.log("phase     side     old      new");
  for (const phase of ["gateway", "lookup", "written"]) {
    for (const side of ["client", "redis"] as const) {
      const v = (impl: string) => (totals[impl]![phase] ? totals[impl]![phase]![side] / totals[impl]![phase]!.n : NaN).toFixed(2).padStart(8);
      console.log(`${phase.padEnd(9)} ${side.padEnd(6)} ${v("old")} ${v("new")}`);
    }
  }
  redis.disconnect();
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
