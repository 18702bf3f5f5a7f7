import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestClient } from "../../test/client.ts";
import { spawnService, stopService, type ServiceProcess } from "../../scripts/cluster.ts";

// Receipts and the conversation list in `bun run dev` (PGlite, in-memory queue and allocator).
const dataDir = mkdtempSync(join(tmpdir(), "chat-dev-receipts-"));
const env = { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: "", INTERNAL_SECRET: "", LOG_LEVEL: "warn" };
let dev: ServiceProcess | undefined;
afterAll(async () => {
  if (dev) await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
});

async function register(url: string, username: string): Promise<string> {
  const r = await fetch(`${url}/api/register`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: "correct horse" }) });
  expect(r.status).toBe(201);
  return ((await r.json()) as { token: string }).token;
}

test("dev mode: delivered and read receipts, unread counts and the conversation list", async () => {
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const url = dev.url;
  const [ta, tb] = [await register(url, "ann"), await register(url, "bob")];
  const a = await TestClient.connect(url, "ann", ta);
  const b = await TestClient.connect(url, "bob", tb);
  b.send({ type: "ping" });
  await b.waitFor((f) => f.type === "pong");
  const ack = await a.sendMessage({ to: "bob" }, "hello");
  const m = await b.waitFor((f) => f.type === "message" && f.msgId === ack.msgId);
  await a.waitFor((f) => f.type === "event" && f.kind === "delivered" && f.ref === ack.msgId, "delivered");
  const list = async (token: string) => (await (await fetch(`${url}/api/conversations`, { headers: { authorization: `Bearer ${token}` } })).json()) as { conversations: any[] };
  expect((await list(tb)).conversations).toMatchObject([{ with: "ann", unread: 1, lastMessage: { msgId: ack.msgId } }]);
  b.send({ type: "read", to: "ann", cursor: m.cursor });
  await a.waitFor((f) => f.type === "event" && f.kind === "read" && f.ref === ack.msgId, "read");
  await b.waitFor((f) => f.type === "event" && f.kind === "read" && f.upTo === m.cursor, "read on bob's device");
  for (let i = 0; (await list(tb)).conversations[0].unread !== 0; i++) {
    expect(i).toBeLessThan(200);
    await Bun.sleep(25);
  }
  expect((await list(ta)).conversations).toMatchObject([{ with: "bob", unread: 0, lastMessageReceipts: { readBy: 1, deliveredTo: 1, of: 1 } }]);
  a.close();
  b.close();
}, 90_000);
