import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintToken, TestClient } from "../../test/client.ts";
import { spawnService, stopService, type ServiceProcess } from "../../scripts/cluster.ts";

// Search and typing in `bun run dev`: PGlite (migration 0005's tsvector column and GIN index) and
// the embedded directory and queue.
const dataDir = mkdtempSync(join(tmpdir(), "chat-dev-search-test-"));
const secret = "dev-search-test-secret-0123456789abcdef";
const env = { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: secret, INTERNAL_SECRET: "", LOG_LEVEL: "warn" };
let dev: ServiceProcess | undefined;
afterAll(async () => {
  if (dev) await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
});

test("dev: search finds what the caller may read; typing reaches the other party", async () => {
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const url = dev.url;
  const token = (u: string) => mintToken(u, secret);
  const ann = await TestClient.connect(url, "ann", await token("ann"));
  const bob = await TestClient.connect(url, "bob", await token("bob"));
  bob.send({ type: "ping" });
  await bob.waitFor((f) => f.type === "pong");

  const ack = await ann.sendMessage({ to: "bob" }, "Meet at the lighthouse at noon");
  await ann.sendMessage({ to: "cat" }, "the lighthouse is for bob only");
  const search = async (user: string, q: string) => {
    const res = await fetch(`${url}/api/search?q=${encodeURIComponent(q)}`, { headers: { authorization: `Bearer ${await token(user)}` } });
    return { status: res.status, body: (await res.json()) as any };
  };
  const found = await search("bob", "LIGHTHOUSE noon");
  expect(found.status).toBe(200);
  expect(found.body.messages.map((m: { msgId: string }) => m.msgId)).toEqual([ack.msgId]);
  expect((await search("ann", "lighthouse")).body.messages).toHaveLength(2);
  expect((await search("dan", "lighthouse")).body.messages).toEqual([]);
  expect((await search("bob", "")).status).toBe(400);

  bob.send({ type: "typing", to: "ann" });
  expect(await ann.waitFor((f) => f.type === "typing")).toEqual({ type: "typing", from: "bob", to: "ann", ttlMs: 5000 });
  ann.close();
  bob.close();
}, 90_000);
