import { describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import amqp from "amqplib";
import Redis from "ioredis";
import postgres from "postgres";
import { testInfra } from "./env.ts";
import { freePort, startInfra } from "../scripts/infra.ts";

const infra = testInfra();
/** Whether the preload started this server (not given by URL), so this file may restart it. */
const started = (s: "redis" | "rabbit" | "postgres") => !!infra && infra[s].port > 0;
const id = () => randomUUID().replaceAll("-", "").slice(0, 12);
const RESTART_TIMEOUT = 120_000;

async function withRedis<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(process.env.REDIS_URL!, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await r.connect();
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

async function withChannel<T>(fn: (ch: amqp.ConfirmChannel) => Promise<T>): Promise<T> {
  const conn = await amqp.connect(process.env.AMQP_URL!);
  try {
    return await fn(await conn.createConfirmChannel());
  } finally {
    await conn.close();
  }
}

async function withSql<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

describe("servers answer", () => {
  test("redis SET/GET", async () => {
    const key = `infra-test:${id()}`;
    await withRedis(async (r) => {
      await r.set(key, "hello", "EX", 60);
      expect(await r.get(key)).toBe("hello");
      await r.del(key);
    });
  });

  test("rabbitmq declare/publish/get", async () => {
    const q = `infra-test-${id()}`;
    await withChannel(async (ch) => {
      await ch.assertQueue(q, { exclusive: true });
      ch.sendToQueue(q, Buffer.from("hello"));
      await ch.waitForConfirms();
      const msg = await ch.get(q, { noAck: true });
      expect(msg && msg.content.toString()).toBe("hello");
    });
  });

  test("postgres select, on database chat with migrations applied", async () => {
    await withSql(async (sql) => {
      const [row] = await sql`select 1 + 1 as two, current_database() as db, to_regclass('messages') is not null as migrated`;
      expect(row).toEqual({ two: 2, db: "chat", migrated: true });
    });
  });
});

describe("a restart keeps data", () => {
  test.skipIf(!started("redis"))("redis key survives stop/start and kill/start", async () => {
    const key = `infra-test:${id()}`;
    await withRedis((r) => r.set(key, "kept"));
    await infra!.redis.stop();
    expect(infra!.redis.running).toBe(false);
    await infra!.redis.start();
    expect(await withRedis((r) => r.get(key))).toBe("kept");
    await withRedis((r) => r.set(key, "kept after kill"));
    await infra!.redis.kill();
    await infra!.redis.start();
    expect(await withRedis((r) => r.get(key))).toBe("kept after kill");
    await withRedis((r) => r.del(key));
  });

  test.skipIf(!started("rabbit"))(
    "rabbitmq durable queue keeps a persistent message across stop/start",
    async () => {
      const q = `infra-test-${id()}`;
      await withChannel(async (ch) => {
        await ch.assertQueue(q, { durable: true });
        ch.sendToQueue(q, Buffer.from("kept"), { persistent: true });
        await ch.waitForConfirms();
      });
      const port = infra!.rabbit.port;
      await infra!.rabbit.stop();
      expect(infra!.rabbit.running).toBe(false);
      await infra!.rabbit.start();
      expect(infra!.rabbit.port).toBe(port);
      await withChannel(async (ch) => {
        const msg = await ch.get(q, { noAck: true });
        expect(msg && msg.content.toString()).toBe("kept");
        await ch.deleteQueue(q);
      });
    },
    RESTART_TIMEOUT,
  );

  test.skipIf(!started("postgres"))("postgres row survives stop/start and kill/start", async () => {
    const schema = `infra_test_${id()}`;
    await withSql(async (sql) => {
      await sql.unsafe(`create schema ${schema}; create table ${schema}.t (v text)`);
      await sql.unsafe(`insert into ${schema}.t values ('kept')`);
    });
    await infra!.postgres.stop();
    expect(infra!.postgres.running).toBe(false);
    await infra!.postgres.start();
    await withSql((sql) => sql.unsafe(`insert into ${schema}.t values ('kept after kill')`));
    await infra!.postgres.kill();
    await infra!.postgres.start();
    await withSql(async (sql) => {
      const rows = await sql.unsafe(`select v from ${schema}.t order by v`);
      expect(rows.map((r) => r.v)).toEqual(["kept", "kept after kill"]);
      await sql.unsafe(`drop schema ${schema} cascade`);
    });
  });
});

test("freePort returns a port that can be bound on loopback", async () => {
  const a = await freePort();
  const b = await freePort();
  expect(a).toBeGreaterThan(0);
  expect(b).not.toBe(a);
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(a, "127.0.0.1", resolve);
  });
  await new Promise((resolve) => srv.close(resolve));
});

test.skipIf(!started("redis"))("startInfra with only: starts that server, and stop() leaves no process or directory", async () => {
  const own = await startInfra({ only: ["redis"] });
  const pid = own.redis.pid!;
  expect(own.redis.running).toBe(true);
  expect(own.postgres.running).toBe(false);
  await expect(own.rabbit.start()).rejects.toThrow("not part of this infra");
  const r = new Redis(own.redis.url, { lazyConnect: true });
  await r.connect();
  expect(await r.ping()).toBe("PONG");
  r.disconnect();
  await own.stop();
  expect(own.redis.running).toBe(false);
  expect(existsSync(own.dir)).toBe(false);
  expect(() => process.kill(pid, 0)).toThrow();
});
