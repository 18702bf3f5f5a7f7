/**
 * persist's own CPU per message, an older version of the code against this one in one process
 * (issue 10). Three measurements, each in alternating rounds (old, new, old, new, ...), CPU from
 * process.cpuUsage() (user + system, every thread of the process):
 *
 * - parse: a broker message's body (gateways publish `--per-publish` messages per broker message)
 *   to validated messages: JSON.parse + the zod schema (what every version before the fast path did)
 *   against parseBrokerBody. No servers.
 * - batcher: services/persist/batcher.ts alone, deliveries to the INSERT's parameters, with an
 *   allocator and a database that answer at once. No servers.
 * - persist (not with --no-servers): the whole consumer, as services/persist/index.ts composes it:
 *   RabbitMQ deliveries → parse → batcher → positions (Redis allocator) → one INSERT per batch
 *   (PostgreSQL) → acks, until every message is acked. Only this process's CPU counts (not the
 *   servers'); BENCH_SPLIT=1 prints each round's user and system CPU and minor page faults.
 *
 * The old side of batcher and persist imports every module from the `--old` directory, a copy of
 * an older tree:
 *
 *     mkdir -p /tmp/persist-old && git archive <commit> shared services | tar -x -C /tmp/persist-old \
 *       && ln -s "$PWD/node_modules" /tmp/persist-old/node_modules
 *     nice -n 10 bun run scripts/bench/persist-cpu.ts --old /tmp/persist-old [--messages 20000] [--per-publish 10] [--rounds 3] [--no-servers]
 *
 * Without --old only this version is measured. Starts its own Redis, RabbitMQ and PostgreSQL (scripts/infra.ts).
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { startInfra } from "../infra.ts";
import { parseBrokerBody, validateWithSchema } from "../../shared/queue/broker-batch.ts";
import type { ChatMessage } from "../../shared/protocol.ts";

const { values: args } = parseArgs({
  options: { "no-servers": { type: "boolean" }, old: { type: "string" }, messages: { type: "string", default: "20000" }, "per-publish": { type: "string", default: "10" }, rounds: { type: "string", default: "3" } },
});
const count = (name: string, v: string, max: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    console.error(`--${name} must be an integer from 1 to ${max}`);
    process.exit(2);
  }
  return n;
};
const MESSAGES = count("messages", args.messages!, 200_000);
const PER_PUBLISH = count("per-publish", args["per-publish"]!, 500);
const ROUNDS = count("rounds", args.rounds!, 10);
const NEW_ROOT = resolve(import.meta.dir, "../..");
const OLD_ROOT = args.old ? resolve(args.old) : undefined;

const BODY = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";
/** `MESSAGES` direct messages among 1,000 users, as gateways queue them (with `rcpt`), in broker messages of PER_PUBLISH. */
function brokerBodies(tag: string): string[] {
  const bodies: string[] = [];
  for (let i = 0; i < MESSAGES; i += PER_PUBLISH) {
    const batch: ChatMessage[] = [];
    for (let j = i; j < Math.min(MESSAGES, i + PER_PUBLISH); j++) {
      const from = `user-${j % 1000}`;
      const to = `user-${(j * 7 + 500) % 1000}`;
      const msgId = new Bun.CryptoHasher("sha256").update(`${tag}/${j}`).digest("base64url").slice(0, 22);
      batch.push({ msgId, id: `c-${j}`, from, to, body: `${BODY} ${j}`, ts: Date.now(), rcpt: from === to ? [from] : [from, to] });
    }
    bodies.push(JSON.stringify(batch));
  }
  return bodies;
}

const cpuMicros = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};
const perMessage = (micros: number) => micros / MESSAGES;
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(" / ");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// ---- parse ----
{
  const bodies = brokerBodies("parse");
  const variants: Array<[string, (text: string) => unknown]> = [
    ["old: JSON.parse + schema", (text) => validateWithSchema(JSON.parse(text))],
    ["new: parseBrokerBody", parseBrokerBody],
  ];
  for (const [, parse] of variants) for (const b of bodies.slice(0, 200)) parse(b); // warm up
  const results = new Map<string, number[]>(variants.map(([n]) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, parse] of variants) {
      const c0 = cpuMicros();
      for (const b of bodies) if (!(parse(b) as { ok: boolean }).ok) throw new Error("a generated body was refused");
      results.get(name)!.push(perMessage(cpuMicros() - c0));
    }
  }
  console.log(`\nparse: µs of CPU per message (${MESSAGES} messages, ${PER_PUBLISH} per broker message), rounds`);
  for (const [name, xs] of results) console.log(`  ${name}: ${fmt(xs)} (median ${median(xs).toFixed(2)})`);
}

// ---- batcher ----
// The batcher alone, from deliveries to the INSERT's parameters, with an allocator and a database
// that answer at once (their cost is the same on both sides).
{
  const bodies = brokerBodies("batcher").map((b) => JSON.parse(b) as ChatMessage[]);
  const allocator = {
    allocate: async (requests: Array<{ users: string[] }>) => requests.map((r, i) => ({ positions: Object.fromEntries(r.users.map((u) => [u, { epoch: 1, pos: i + 1 }])) })),
    writtenUpTo: async () => {},
    floors: async () => ({}),
    tops: async () => ({}),
    ready: () => true,
  };
  // "every message was new" (a count no batch reaches), also through the prepared path (shared/db/index.ts executePrepared)
  const answer = async () => [{ messages: Number.MAX_SAFE_INTEGER, entries: 0, ids: null }];
  const fakeDb = {
    execute: answer,
    _: { session: { prepareQuery: () => ({ execute: answer }) } },
    transaction: async (f: (tx: unknown) => Promise<unknown>) => f(fakeDb),
  };
  const database = { db: fakeDb as never, ping: async () => true, reset: async () => {}, close: async () => {} };
  const log = { debug() {}, info() {}, warn() {}, error() {}, child: () => log } as never;
  const variants: Array<[string, string]> = OLD_ROOT ? [["old", OLD_ROOT], ["new", NEW_ROOT]] : [["new", NEW_ROOT]];
  const runs = new Map<string, () => Promise<number>>();
  for (const [name, root] of variants) {
    const { createBatcher } = (await import(`${root}/services/persist/batcher.ts`)) as typeof import("../../services/persist/batcher.ts");
    runs.set(name, async () => {
      const batcher = createBatcher({ database, allocator, maxRows: 1000, maxWaitMs: 20, concurrency: 2, log });
      let acked = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const c0 = cpuMicros();
      for (const messages of bodies) {
        // a copy per run: the batcher may keep what it is given
        batcher.onDelivery({ messages: messages.map((m) => ({ ...m })), ack: () => (acked += messages.length) >= MESSAGES && done() });
      }
      await all;
      return perMessage(cpuMicros() - c0);
    });
  }
  for (const run of runs.values()) await run(); // warm up
  const results = new Map<string, number[]>(variants.map(([n]) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) for (const [name, run] of runs) results.get(name)!.push(await run());
  console.log(`\nbatcher (deliveries → positions → INSERT parameters): µs of CPU per message, rounds`);
  for (const [name, xs] of results) console.log(`  ${name}: ${fmt(xs)} (median ${median(xs).toFixed(2)})`);
}
if (args["no-servers"]) process.exit(0);

// ---- persist ----
type Modules = {
  amqp: typeof import("../../shared/amqp.ts");
  queue: typeof import("../../shared/queue/queue-amqp.ts");
  db: typeof import("../../shared/db/index.ts");
  redis: typeof import("../../shared/redis.ts");
  allocator: typeof import("../../shared/stream/allocator-redis.ts");
  batcher: typeof import("../../services/persist/batcher.ts");
  log: typeof import("../../shared/log.ts");
};
const load = async (root: string): Promise<Modules> => ({
  amqp: await import(`${root}/shared/amqp.ts`),
  queue: await import(`${root}/shared/queue/queue-amqp.ts`),
  db: await import(`${root}/shared/db/index.ts`),
  redis: await import(`${root}/shared/redis.ts`),
  allocator: await import(`${root}/shared/stream/allocator-redis.ts`),
  batcher: await import(`${root}/services/persist/batcher.ts`),
  log: await import(`${root}/shared/log.ts`),
});

const infra = await startInfra({ only: ["redis", "rabbit", "postgres"] });
try {
  await Promise.all([infra.redis.start(), infra.rabbit.start(), infra.postgres.start()]);
  const mine = await load(NEW_ROOT);
  await mine.db.migrateDatabase(infra.postgres.url);
  const variants: Array<[string, Modules]> = OLD_ROOT ? [["old", await load(OLD_ROOT)], ["new", mine]] : [["new", mine]];
  const quiet = mine.log.createLogger({ service: "bench" }, "error");
  const pubConn = mine.amqp.createAmqpConnection(infra.rabbit.url, quiet, { name: "bench publisher" });

  /** One round of one variant: fills a fresh queue, then consumes it all; this process's CPU per message. */
  const round = async (tag: string, m: Modules): Promise<number> => {
    const name = `bench.persist.${tag}`;
    const publisher = mine.queue.createAmqpQueue(pubConn, { log: quiet, queue: name });
    await publisher.whenReady();
    const bodies = brokerBodies(tag).map((b) => JSON.parse(b) as ChatMessage[]);
    for (let i = 0; i < bodies.length; i += 200) await Promise.all(bodies.slice(i, i + 200).map((b) => publisher.publish(b)));
    await publisher.close();

    const log = m.log.createLogger({ service: "bench" }, "error");
    const conn = m.amqp.createAmqpConnection(infra.rabbit.url, log, { name: `bench ${tag}` });
    const queue = m.queue.createAmqpQueue(conn, { log, queue: name, publisher: false });
    const redis = m.redis.createRedis(infra.redis.url, log);
    const database = m.db.openPostgres(infra.postgres.url, { max: 3 });
    const allocator = m.allocator.createRedisAllocator(redis);
    const batcher = m.batcher.createBatcher({ database, allocator, maxRows: 1000, maxWaitMs: 20, concurrency: 2, log });
    while (!allocator.ready()) await Bun.sleep(10);
    await database.ping();
    let acked = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const u0 = process.cpuUsage();
    const f0 = process.resourceUsage().minorPageFault;
    const c0 = cpuMicros();
    const sub = await queue.consume(
      {
        onDelivery: (d) =>
          batcher.onDelivery({
            messages: d.messages,
            ack: () => {
              d.ack();
              acked += d.messages.length;
              if (acked >= MESSAGES) done();
            },
          }),
      },
      { prefetch: 50 },
    );
    await all;
    const micros = cpuMicros() - c0;
    const split = process.cpuUsage(u0);
    if (process.env.BENCH_SPLIT) console.log(`  ${tag}: user ${perMessage(split.user).toFixed(2)} µs, system ${perMessage(split.system).toFixed(2)} µs per message, minor page faults ${perMessage(process.resourceUsage().minorPageFault - f0).toFixed(2)} per message`);
    await batcher.drain(5000);
    await sub.stop();
    await queue.close();
    await conn.close();
    await database.close();
    await m.redis.closeRedis(redis);
    return perMessage(micros);
  };

  await round("warmup-new", mine);
  if (OLD_ROOT) await round("warmup-old", variants[0]![1]);
  const results = new Map<string, number[]>(variants.map(([n]) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) for (const [name, m] of variants) results.get(name)!.push(await round(`${name}-${r}-${Date.now()}`, m));
  console.log(`\npersist (consume → parse → batch → allocate → insert → ack): µs of this process's CPU per message (${MESSAGES} messages, ${PER_PUBLISH} per broker message), rounds`);
  for (const [name, xs] of results) console.log(`  ${name}: ${fmt(xs)} (median ${median(xs).toFixed(2)})`);
  await pubConn.close();
} finally {
  await infra.stop();
}
process.exit(0);
