import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestClient, type Frame } from "../../test/client.ts";
import { spawnService, stopService, type ServiceProcess } from "../../scripts/cluster.ts";

// Group membership changes on `bun run dev`'s embedded backends (PGlite with migration 0008, the
// in-memory directory, queue and allocator).
const dataDir = mkdtempSync(join(tmpdir(), "chat-dev-members-"));
const env = { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: "", INTERNAL_SECRET: "", LOG_LEVEL: "warn" };
let dev: ServiceProcess | undefined;
afterAll(async () => {
  if (dev) await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
});

test("dev mode: pushed group frames, membership notices, a new member's shared history, the owner's role handed on", async () => {
  dev = await spawnService("dev", "services/dev/index.ts", env, 0, 30_000);
  const url = dev.url;
  const call = async (method: string, path: string, body: unknown, token: string) => {
    const res = await fetch(url + path, { method, headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const tokens: Record<string, string> = {};
  const clients: Record<string, TestClient> = {};
  for (const u of ["ann", "bob", "cara"]) {
    const r = await fetch(`${url}/api/register`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: u, password: "long enough" }) });
    expect(r.status).toBe(201);
    tokens[u] = ((await r.json()) as { token: string }).token;
    clients[u] = await TestClient.connect(url, u, tokens[u]!);
    clients[u]!.send({ type: "ping" });
    await clients[u]!.waitFor((f) => f.type === "pong");
  }
  const is = (action: string, user: string) => (f: Frame) => f.type === "group" && f.change.action === action && f.change.user === user;

  const created = await call("POST", "/api/groups", { name: "Dev crew", members: ["bob"] }, tokens.ann!);
  expect(created.status).toBe(201);
  expect(created.body).toMatchObject({ owner: "ann", admins: [], creator: "ann" });
  const g = created.body.groupId as string;
  expect((await clients.bob!.waitFor(is("created", "ann"))).group.members).toEqual(["ann", "bob"]);
  const first = await clients.ann!.sendMessage({ group: g }, "first");
  const second = await clients.ann!.sendMessage({ group: g }, "second");

  expect((await call("POST", `/api/groups/${g}/members`, { userId: "cara" }, tokens.bob!)).status).toBe(204);
  const added = await clients.cara!.waitFor(is("added", "cara"));
  const live = clients.cara!.frames.slice(0, clients.cara!.frames.indexOf(added)).filter((f) => f.type === "message");
  expect(live.map((f) => f.msgId)).toEqual([first.msgId, second.msgId]);
  const h = await call("GET", `/api/messages?group=${g}`, undefined, tokens.cara!);
  expect(h.body.messages.map((m: Frame) => m.body)).toEqual(["first", "second"]);

  expect((await call("DELETE", `/api/groups/${g}/members/ann`, undefined, tokens.ann!)).status).toBe(204);
  expect((await clients.cara!.waitFor(is("role", "bob"))).group).toMatchObject({ owner: "bob", members: ["bob", "cara"] });
  expect((await call("DELETE", `/api/groups/${g}/members/cara`, undefined, tokens.bob!)).status).toBe(204);
  expect((await clients.cara!.waitFor(is("removed", "cara"))).group).toBeNull();
  expect((await call("GET", `/api/messages?group=${g}`, undefined, tokens.cara!)).status).toBe(403);
  // The notices, in bob's history between the messages (PGlite stores the member events).
  const notices = (await call("GET", `/api/messages?group=${g}`, undefined, tokens.bob!)).body.messages.map((f: Frame) => (f.type === "event" ? `${f.from} ${f.action} ${f.user}` : f.body));
  expect(notices).toEqual(["ann created ann", "first", "second", "bob added cara", "ann left ann", "ann role bob", "bob removed cara"]);
  for (const c of Object.values(clients)) c.close();
}, 60_000);
