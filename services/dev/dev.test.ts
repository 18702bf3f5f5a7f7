import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestClient } from "../../test/client.ts";
import { startPushService, type TestPushService } from "../../test/push-service.ts";
import { spawnService, stopService, type ServiceProcess } from "../../scripts/cluster.ts";

// `bun run dev` with no servers: none of REDIS_URL / AMQP_URL / DATABASE_URL reach it.
const dataDir = mkdtempSync(join(tmpdir(), "chat-dev-test-"));
const env = { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: "", INTERNAL_SECRET: "", LOG_LEVEL: "warn" };
let dev: ServiceProcess | undefined;
afterAll(async () => {
  if (dev) await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
});

async function post(url: string, path: string, body: unknown, token?: string) {
  const res = await fetch(url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json().catch(() => null)) as any };
}

test("one process: client served, register/login, two users chat, history survives a restart", async () => {
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const url = dev.url;
  expect(dev.logs.join("\n")).toContain("/client/");
  expect((await fetch(`${url}/health`)).status).toBe(200);
  const page = await fetch(`${url}/client/`);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain("<html");

  const ann = await post(url, "/api/register", { username: "ann", password: "correct horse" });
  expect(ann.status).toBe(201);
  const bob = await post(url, "/api/register", { username: "bob", password: "battery staple" });
  expect(bob.status).toBe(201);
  expect((await post(url, "/api/register", { username: "ann", password: "something else" })).status).toBe(409);
  const login = await post(url, "/api/login", { username: "ann", password: "correct horse" });
  expect(login.status).toBe(200);
  expect(login.body.userId).toBe("ann");
  expect((await post(url, "/api/login", { username: "ann", password: "wrong password" })).status).toBe(401);

  const a = await TestClient.connect(url, "ann", login.body.token);
  const b = await TestClient.connect(url, "bob", bob.body.token);
  b.send({ type: "ping" });
  await b.waitFor((f) => f.type === "pong");
  const ack = await a.sendMessage({ to: "bob" }, "hello from dev");
  expect(ack.type).toBe("ack");
  expect((await b.waitFor((f) => f.type === "message")).body).toBe("hello from dev");
  const reply = await b.sendMessage({ to: "ann" }, "hi ann");
  await a.waitFor((f) => f.type === "message" && f.msgId === reply.msgId);
  a.close();
  b.close();

  // Restart: SIGTERM flushes the queue into PGlite; the new process reads the same files.
  expect(await stopService(dev)).toBe(0);
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const again = await post(dev.url, "/api/login", { username: "bob", password: "battery staple" });
  expect(again.status).toBe(200);
  const res = await fetch(`${dev.url}/api/messages?with=ann`, { headers: { authorization: `Bearer ${again.body.token}` } });
  const history = (await res.json()) as { messages: Array<{ body: string }> };
  expect(history.messages.map((m) => m.body)).toEqual(["hello from dev", "hi ann"]);
  // The token issued before the restart still works (the generated secret is kept in DATA_DIR).
  const old = await TestClient.connect(dev.url, "ann", login.body.token);
  const { messages } = await old.sync();
  expect(messages.map((m) => m.body)).toEqual(["hello from dev", "hi ann"]);
  old.close();
}, 120_000);

test("web push in one process: a kept VAPID key, and an offline user's messages pushed as one", async () => {
  const dir = mkdtempSync(join(tmpdir(), "chat-dev-push-"));
  const pushEnv = { ...env, DATA_DIR: dir, PUSH_ALLOW_HTTP: "true", PUSH_DELAY_MS: "300" };
  let p = await spawnService("dev-push", "services/dev/index.ts", pushEnv, 0, 30_000);
  let svc: TestPushService | undefined;
  try {
    const ann = await post(p.url, "/api/register", { username: "ann", password: "correct horse" });
    const bob = await post(p.url, "/api/register", { username: "bob", password: "battery staple" });
    const keyOf = async (url: string, token: string) => ((await (await fetch(`${url}/api/push/key`, { headers: { authorization: `Bearer ${token}` } })).json()) as any).publicKey as string;
    const key = await keyOf(p.url, bob.body.token);
    expect(JSON.parse(readFileSync(join(dir, "dev-secrets.json"), "utf8")).VAPID.publicKey).toBe(key);
    expect(p.logs.join("\n")).toContain(key);

    svc = await startPushService(key);
    const sub = svc.subscribe();
    expect((await post(p.url, "/api/push/subscriptions", sub.json, bob.body.token)).status).toBe(201);
    const a = await TestClient.connect(p.url, "ann", ann.body.token);
    const acks = await Promise.all([a.sendMessage({ to: "bob" }, "one"), a.sendMessage({ to: "bob" }, "two")]);
    await svc.until(() => sub.received.length > 0, "bob's push");
    expect(sub.received.map((r) => r.payload)).toEqual([
      { type: "message", conv: "d:ann", from: "ann", to: "bob", count: 2, body: "two", msgId: acks[1]!.msgId, ts: acks[1]!.ts, url: "/client/#d%3Aann" },
    ]);
    a.close();

    // Restarted, the same key: browsers' subscriptions stay valid. With a window longer than this
    // test may run, a push can only come from SIGTERM sending what waits.
    expect(await stopService(p)).toBe(0);
    p = await spawnService("dev-push", "services/dev/index.ts", { ...pushEnv, PUSH_DELAY_MS: "60000" }, 0, 30_000);
    expect(await keyOf(p.url, bob.body.token)).toBe(key);
    const a2 = await TestClient.connect(p.url, "ann", ann.body.token);
    const late = await a2.sendMessage({ to: "bob" }, "three");
    expect(late.type).toBe("ack");
    a2.close();
    expect(await stopService(p)).toBe(0);
    await svc.until(() => sub.received.length > 1, "the push sent at shutdown");
    expect(sub.received.map((r) => [r.payload.body, r.payload.count])).toEqual([
      ["two", 2],
      ["three", 1],
    ]);
  } finally {
    svc?.stop();
    await stopService(p);
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
