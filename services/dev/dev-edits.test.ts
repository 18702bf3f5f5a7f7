import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestClient } from "../../test/client.ts";
import { spawnService, stopService, type ServiceProcess } from "../../scripts/cluster.ts";

// Edits and deletions in `bun run dev` (PGlite, in-process queue and allocator): live, after a
// restart in history and in sync.
const dataDir = mkdtempSync(join(tmpdir(), "chat-dev-edits-test-"));
const env = { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: "", INTERNAL_SECRET: "", LOG_LEVEL: "warn" };
let dev: ServiceProcess | undefined;
afterAll(async () => {
  if (dev) await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
});

async function register(url: string, username: string) {
  const res = await fetch(`${url}/api/register`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: "long enough password" }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

test("dev: an edit and a deletion reach the other user live, and history and sync show them after a restart", async () => {
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const [annToken, bobToken] = [await register(dev.url, "ann"), await register(dev.url, "bob")];
  const a = await TestClient.connect(dev.url, "ann", annToken);
  const b = await TestClient.connect(dev.url, "bob", bobToken);
  b.send({ type: "ping" });
  await b.waitFor((f) => f.type === "pong");
  const m1 = await a.sendMessage({ to: "bob" }, "draft");
  const m2 = await a.sendMessage({ to: "bob" }, "oops");
  a.send({ type: "edit", id: "e1", msgId: m1.msgId, body: "final" });
  a.send({ type: "delete", id: "d1", msgId: m2.msgId });
  const e = await a.waitFor((f) => f.type === "ack" && f.id === "e1");
  const d = await a.waitFor((f) => f.type === "ack" && f.id === "d1");
  expect((await b.waitFor((f) => f.type === "event" && f.msgId === e.msgId)).body).toBe("final");
  await b.waitFor((f) => f.type === "event" && f.msgId === d.msgId);
  a.close();
  b.close();

  expect(await stopService(dev)).toBe(0);
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const res = await fetch(`${dev.url}/api/messages?with=ann`, { headers: { authorization: `Bearer ${bobToken}` } });
  const history = (await res.json()) as { messages: Array<Record<string, unknown>> };
  expect(history.messages.map((m) => [m.body, m.editedAt, m.deletedAt])).toEqual([
    ["final", e.ts, undefined],
    ["", undefined, d.ts],
  ]);
  const again = await TestClient.connect(dev.url, "bob", bobToken);
  await again.sync();
  expect(again.frames.filter((f) => f.type === "event").map((f) => f.kind)).toEqual(["edit", "delete"]);
  again.close();
}, 90_000);
