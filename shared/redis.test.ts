import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DirectoryUnavailable } from "./directory/directory.ts";
import { createRedisDirectory } from "./directory/directory-redis.ts";
import { silentLogger } from "./log.ts";
import { closeRedis, createRedis, isRedisReady, type Redis } from "./redis.ts";

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function startRedisServer(port: number, dir: string) {
  const proc = Bun.spawn(["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = proc.stdout.getReader();
  let out = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`redis-server exited: ${out}`);
    out += new TextDecoder().decode(value);
    if (out.includes("Ready to accept connections")) break;
  }
  reader.releaseLock();
  void proc.stdout.pipeTo(new WritableStream());
  return proc;
}

const once = (redis: Redis, event: string) => new Promise<void>((resolve) => redis.once(event, () => resolve()));

test("createRedis fails fast while the server is gone and reconnects by itself when it is back", async () => {
  const port = freePort();
  const dir = mkdtempSync(join(tmpdir(), "redis-reconnect-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  let server = await startRedisServer(port, dir);
  cleanups.push(() => server.kill("SIGKILL"));

  const redis = createRedis(`redis://127.0.0.1:${port}`, silentLogger);
  cleanups.push(() => closeRedis(redis));
  if (!isRedisReady(redis)) await once(redis, "ready");
  const directory = createRedisDirectory(redis, { prefix: "t:" });
  expect(await directory.heartbeat({ id: "a", url: "http://127.0.0.1:1" }, 60_000)).toBe(false);

  const closed = once(redis, "close");
  server.kill("SIGKILL");
  await server.exited;
  await closed;
  expect(isRedisReady(redis)).toBe(false);
  const started = Date.now();
  expect(await directory.lookup(["x"]).catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
  expect(Date.now() - started).toBeLessThan(2000);

  const ready = once(redis, "ready");
  server = await startRedisServer(port, dir);
  await ready;
  expect(isRedisReady(redis)).toBe(true);
  expect(await directory.heartbeat({ id: "a", url: "http://127.0.0.1:1" }, 60_000)).toBe(false);
});
