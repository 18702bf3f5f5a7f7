import { describe, expect, test } from "bun:test";
import { sign } from "hono/jwt";
import { DirectoryUnavailable, type Directory, type Ledger } from "../../shared/directory/directory.ts";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { createMetrics } from "../../shared/metrics.ts";
import { createDiscoverApp } from "./app.ts";

const SECRET = "test-internal-secret-0123456789";
const AUTH = { authorization: `Bearer ${SECRET}` };

function setup(opts: { healthy?: boolean; backend?: Directory & Ledger } = {}) {
  const backend = opts.backend ?? createMemoryDirectory();
  let healthy = opts.healthy ?? true;
  const app = createDiscoverApp({ directory: backend, ledger: backend, internalSecret: SECRET, health: () => healthy, metrics: createMetrics("discover") });
  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = AUTH) =>
    app.request(path, {
      method,
      headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
  return { app, call, setHealthy: (v: boolean) => void (healthy = v) };
}

const ROUTES: Array<[string, string, unknown?]> = [
  ["PUT", "/v1/instances/a", { url: "http://127.0.0.1:4001", ttlMs: 6000 }],
  ["DELETE", "/v1/instances/a"],
  ["POST", "/v1/instances/a/presence", { online: ["alice"], offline: [] }],
  ["POST", "/v1/lookup", { users: ["alice"] }],
  ["POST", "/v1/claims", { msgIds: ["m1"] }],
  ["POST", "/v1/claims/complete", { done: [{ msgId: "m1", ts: 1 }] }],
  ["POST", "/v1/claims/release", { msgIds: ["m1"] }],
];

describe("auth", async () => {
  const userToken = await sign({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 60 }, SECRET, "HS256");
  const bad: Array<[string, Record<string, string>]> = [
    ["no header", {}],
    ["a wrong secret", { authorization: "Bearer wrong-secret-wrong-secret" }],
    ["the secret with a suffix", { authorization: `Bearer ${SECRET}x` }],
    ["a prefix of the secret", { authorization: `Bearer ${SECRET.slice(0, -1)}` }],
    ["the secret without Bearer", { authorization: SECRET }],
    ["the secret as Basic", { authorization: `Basic ${SECRET}` }],
    ["a user token, even one signed with the same secret", { authorization: `Bearer ${userToken}` }],
    ["an empty bearer", { authorization: "Bearer " }],
  ];
  for (const [method, path, body] of ROUTES) {
    test(`${method} ${path} answers 401 to every wrong credential`, async () => {
      const { call } = setup();
      for (const [what, headers] of bad) {
        const res = await call(method, path, body, headers);
        expect({ what, status: res.status }).toEqual({ what, status: 401 });
        expect(await res.json()).toEqual({ error: "unauthorized" });
      }
    });
    test(`${method} ${path} answers 2xx with the secret`, async () => {
      const { call } = setup();
      const res = await call(method, path, body);
      expect(res.status).toBeLessThan(300);
    });
  }

  test("an unauthenticated malformed body is still 401", async () => {
    const { call } = setup();
    const res = await call("POST", "/v1/lookup", "{not json", {});
    expect(res.status).toBe(401);
  });

  test("GET /health and GET /metrics need no secret", async () => {
    const { call } = setup();
    expect((await call("GET", "/health", undefined, {})).status).toBe(200);
    expect((await call("GET", "/metrics", undefined, {})).status).toBe(200);
  });
});

describe("unknown paths", () => {
  test("404 JSON with or without the secret", async () => {
    const { call } = setup();
    for (const [method, path] of [["GET", "/nope"], ["GET", "/v1/nope"], ["POST", "/v1/instances/a/nope"], ["GET", "/v1/lookup"], ["PUT", "/v1/instances/"]] as const) {
      for (const headers of [AUTH, {}]) {
        const res = await call(method, path, undefined, headers);
        expect({ method, path, status: res.status }).toEqual({ method, path, status: 404 });
        expect(await res.json()).toEqual({ error: "not_found" });
      }
    }
  });
});

describe("validation", () => {
  test("malformed JSON is 400 with a message", async () => {
    const { call } = setup();
    const res = await call("POST", "/v1/lookup", "{users: [");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "bad_request", message: expect.stringContaining("JSON") });
  });

  const cases: Array<[string, string, string, unknown, string]> = [
    ["missing users", "POST", "/v1/lookup", {}, "users"],
    ["users not an array", "POST", "/v1/lookup", { users: "alice" }, "users"],
    ["a user id with a space", "POST", "/v1/lookup", { users: ["ok", "not ok"] }, "users.1"],
    ["a 65-character user id", "POST", "/v1/lookup", { users: ["a".repeat(65)] }, "users.0"],
    ["an empty user id", "POST", "/v1/instances/a/presence", { online: [""], offline: [] }, "online.0"],
    ["too many users", "POST", "/v1/lookup", { users: Array.from({ length: 10_001 }, (_, i) => `u${i}`) }, "users"],
    ["a non-http url", "PUT", "/v1/instances/a", { url: "ftp://x", ttlMs: 6000 }, "url"],
    ["a missing ttl", "PUT", "/v1/instances/a", { url: "http://127.0.0.1:1" }, "ttlMs"],
    ["a fractional ttl", "PUT", "/v1/instances/a", { url: "http://127.0.0.1:1", ttlMs: 1.5 }, "ttlMs"],
    ["a bad instance id", "PUT", `/v1/instances/${encodeURIComponent("a b")}`, { url: "http://127.0.0.1:1", ttlMs: 6000 }, "id"],
    ["a long instance id", "DELETE", `/v1/instances/${"i".repeat(129)}`, undefined, "id"],
    ["an empty msgId", "POST", "/v1/claims", { msgIds: [""] }, "msgIds.0"],
    ["a negative ts", "POST", "/v1/claims/complete", { done: [{ msgId: "m", ts: -1 }] }, "done.0.ts"],
    ["a missing msgIds", "POST", "/v1/claims/release", { ids: ["m"] }, "msgIds"],
  ];
  for (const [what, method, path, body, field] of cases) {
    test(`${what} is 400 naming ${field}`, async () => {
      const { call } = setup();
      const res = await call(method, path, body);
      expect(res.status).toBe(400);
      const json = (await res.json()) as { error: string; message: string };
      expect(json.error).toBe("bad_request");
      expect(json.message).toContain(`${field}:`);
    });
  }

  test("a body over the size limit is 413", async () => {
    const { call } = setup();
    const res = await call("POST", "/v1/lookup", JSON.stringify({ users: ["a"], pad: "x".repeat(5 * 1024 * 1024) }));
    expect(res.status).toBe(413);
  });
});

describe("happy paths", () => {
  test("heartbeat, presence, lookup, remove", async () => {
    const { call } = setup();
    const put = () => call("PUT", "/v1/instances/gw-1", { url: "http://127.0.0.1:4001", ttlMs: 6000 });
    expect(await (await put()).json()).toEqual({ known: false });
    expect(await (await put()).json()).toEqual({ known: true });
    expect((await call("POST", "/v1/instances/gw-1/presence", { online: ["alice", "bob"], offline: [] })).status).toBe(204);
    expect((await call("POST", "/v1/instances/gw-1/presence", { offline: ["bob"] })).status).toBe(204);
    const found = await call("POST", "/v1/lookup", { users: ["alice", "bob"] });
    expect(found.status).toBe(200);
    expect(await found.json()).toEqual({ users: { alice: [{ id: "gw-1", url: "http://127.0.0.1:4001" }], bob: [] } });
    expect((await call("DELETE", "/v1/instances/gw-1")).status).toBe(204);
    expect(await (await call("POST", "/v1/lookup", { users: ["alice"] })).json()).toEqual({ users: { alice: [] } });
  });

  test("claims, complete, release", async () => {
    const { call } = setup();
    const claim = async (msgIds: string[]) => (await (await call("POST", "/v1/claims", { msgIds })).json()) as unknown;
    expect(await claim(["m1", "m2"])).toEqual({ claims: { m1: { state: "new" }, m2: { state: "new" } } });
    expect((await call("POST", "/v1/claims/complete", { done: [{ msgId: "m1", ts: 99 }] })).status).toBe(204);
    expect((await call("POST", "/v1/claims/release", { msgIds: ["m1", "m2"] })).status).toBe(204);
    expect(await claim(["m1", "m2"])).toEqual({ claims: { m1: { state: "done", ts: 99 }, m2: { state: "new" } } });
  });

  test("health follows the store, metrics count requests per route", async () => {
    const { call, setHealthy } = setup();
    expect(await (await call("GET", "/health")).json()).toEqual({ ok: true });
    setHealthy(false);
    const down = await call("GET", "/health");
    expect(down.status).toBe(503);
    await call("POST", "/v1/lookup", { users: ["a", "b"] });
    const text = await (await call("GET", "/metrics")).text();
    expect(text).toMatch(/discover_requests_total\{[^}]*route="\/v1\/lookup"[^}]*status="200"[^}]*\} 1/);
    expect(text).toMatch(/discover_requests_total\{[^}]*route="\/health"[^}]*status="503"[^}]*\} 1/);
    expect(text).toMatch(/discover_lookup_users_total\{[^}]*\} 2/);
    expect(text).toContain("discover_request_duration_seconds_bucket");
  });
});

describe("errors", () => {
  const failing = (err: () => Error): Directory & Ledger => {
    const fail = async (): Promise<never> => {
      throw err();
    };
    return { heartbeat: fail, setPresence: fail, lookup: fail, removeInstance: fail, claim: fail, complete: fail, release: fail, watch: () => ({ live: () => false, stop() {} }) };
  };

  test("DirectoryUnavailable is 503 unavailable on every route", async () => {
    const { call } = setup({ backend: failing(() => new DirectoryUnavailable("redis down")) });
    for (const [method, path, body] of ROUTES) {
      const res = await call(method, path, body);
      expect({ path, status: res.status }).toEqual({ path, status: 503 });
      expect(await res.json()).toEqual({ error: "unavailable" });
    }
  });

  test("any error while the store is down is 503", async () => {
    const { call } = setup({ healthy: false, backend: failing(() => new Error("Connection is closed.")) });
    expect((await call("POST", "/v1/lookup", { users: ["a"] })).status).toBe(503);
  });

  test("a bug is 500 internal, without details", async () => {
    const { call } = setup({ backend: failing(() => new TypeError("boom")) });
    const res = await call("POST", "/v1/lookup", { users: ["a"] });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: "internal" });
  });
});
