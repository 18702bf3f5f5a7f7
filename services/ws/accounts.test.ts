import { afterAll, describe, expect, test } from "bun:test";
import { decode, sign } from "hono/jwt";
import { parseConfig } from "../../shared/config.ts";
import { openPostgres } from "../../shared/db/index.ts";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import { accountSettings, createAccounts, hashedWithOtherCost } from "./accounts.ts";
import { createApp } from "./app.ts";
import type { Revocations } from "./revocations.ts";
import { createMemoryRevocations } from "./revocations-memory.ts";
import type { Router } from "./router.ts";
import type { Throttle } from "./throttle.ts";
import { createMemoryThrottle } from "./throttle-memory.ts";
import * as store from "./store.ts";
import { createTokenGate } from "./token-gate.ts";

// The account routes through the whole gateway app (app.request), on the test PostgreSQL, with the
// embedded throttle (on a manual clock) and revocations. The Redis implementations pass the same
// contract suites (throttle-redis.test.ts, revocations-redis.test.ts); accounts.integration.test.ts
// runs these routes on real processes over Redis.

const handle = openPostgres(process.env.DATABASE_URL!, { max: 4 });
afterAll(() => handle.close());
const SECRET = "accounts-test-secret-accounts-test-secret";
const PASSWORD = "s3cret-enough";

/** The suite's password cost (test/preload.ts) unless a test names its own (undefined: the default). */
const SUITE_COST = { PASSWORD_MEMORY_KIB: process.env.PASSWORD_MEMORY_KIB, PASSWORD_TIME_COST: process.env.PASSWORD_TIME_COST };

function makeApp(env: Record<string, string | undefined> = {}, revocations: Revocations = createMemoryRevocations(), broken?: Throttle) {
  let now = Date.now();
  const throttle = broken ?? createMemoryThrottle({ now: () => now });
  const cfg = parseConfig([], {
    ...SUITE_COST,
    LOGIN_USER_MAX_FAILURES: "3",
    LOGIN_ADDR_MAX_FAILURES: "6",
    LOGIN_LOCK_SEC: "60",
    REGISTER_ADDR_MAX: "4",
    ACCESS_TOKEN_TTL_SEC: "600",
    ...env,
  });
  const settings = accountSettings(cfg);
  const gate = createTokenGate({ revocations, cacheMs: settings.revocationCacheMs });
  const accounts = createAccounts({ db: handle.db, jwtSecret: SECRET, throttle, revocations, gate, ...settings });
  const app = createApp({
    db: handle.db,
    directory: createMemoryDirectory(),
    router: {} as Router, // /internal is not under test here
    groups: {} as never, // groups are tested in services/ws/groups*.integration.test.ts
    stream: { awaitWritten: async () => {} } as never,
    pipeline: {} as never, // nor edits
    jwtSecret: SECRET,
    internalSecret: "internal-secret-internal-secret",
    accounts,
    corsOrigins: settings.corsOrigins,
    health: async () => ({}),
    metrics: createMetrics("test"),
    log: silentLogger,
  });
  const started = gate.start();
  /** A request from `addr` (the socket's address as Bun's server.requestIP reports it). */
  const call = async (method: string, path: string, opts: { body?: unknown; raw?: string; token?: string; addr?: string; headers?: Record<string, string> } = {}) => {
    await started;
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined || opts.raw !== undefined) headers["content-type"] = "application/json";
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const address = opts.addr ?? "192.0.2.1";
    return app.request(path, { method, headers, body }, { requestIP: () => ({ address, family: "IPv4", port: 1 }) });
  };
  return { app, call, revocations, advance: (ms: number) => void (now += ms) };
}

let addrN = 0;
/** A fresh client address per use, so tests do not share address counters. */
const addr = () => `198.51.100.${++addrN % 250}`;
const uniq = (p = "u") => `${p}-${crypto.randomUUID().slice(0, 12)}`;

type Session = { userId: string; token: string; refreshToken: string; expiresIn: number };

async function register(t: ReturnType<typeof makeApp>, username = uniq(), password = PASSWORD): Promise<Session> {
  const res = await t.call("POST", "/api/register", { body: { username, password }, addr: addr() });
  expect(res.status).toBe(201);
  return (await res.json()) as Session;
}
const login = (t: ReturnType<typeof makeApp>, username: string, password: string, from = addr()) =>
  t.call("POST", "/api/login", { body: { username, password }, addr: from });
const groups = (t: ReturnType<typeof makeApp>, token: string) => t.call("GET", "/api/groups", { token });

describe("register", () => {
  test("201 with userId, token, refreshToken and expiresIn; the token carries ver, sid and jti and lasts expiresIn", async () => {
    const t = makeApp();
    const name = uniq("reg");
    const s = await register(t, name);
    expect(Object.keys(s).sort()).toEqual(["expiresIn", "refreshToken", "token", "userId"]);
    expect(s.userId).toBe(name);
    expect(s.expiresIn).toBe(600);
    const { payload } = decode(s.token);
    expect(payload).toMatchObject({ sub: name, ver: 0 });
    expect(typeof payload.sid).toBe("string");
    expect(typeof payload.jti).toBe("string");
    expect((payload.exp as number) - (payload.iat as number)).toBe(600);
    expect((await groups(t, s.token)).status).toBe(200);
  });

  test("an address may try REGISTER_ADDR_MAX times per window, malformed attempts included; then 429 with Retry-After", async () => {
    const t = makeApp();
    const from = addr();
    expect((await t.call("POST", "/api/register", { raw: "{", addr: from })).status).toBe(400);
    expect((await t.call("POST", "/api/register", { body: { username: "x" }, addr: from })).status).toBe(400);
    for (let i = 0; i < 2; i++) expect((await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD }, addr: from })).status).toBe(201);
    const refused = await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD }, addr: from });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBe(600);
    expect(((await refused.json()) as { retryAfter: number }).retryAfter).toBe(600);
    // Another address is not affected; the window's end lifts the limit.
    expect((await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD }, addr: addr() })).status).toBe(201);
    t.advance(600_000);
    expect((await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD }, addr: from })).status).toBe(201);
  });
});

describe("login throttling", () => {
  test("after LOGIN_USER_MAX_FAILURES failures the username is locked: 429 with Retry-After, even for the right password, from any address", async () => {
    const t = makeApp();
    const s = await register(t);
    for (let i = 0; i < 3; i++) expect((await login(t, s.userId, "wrong-password")).status).toBe(401);
    const locked = await login(t, s.userId, PASSWORD);
    expect(locked.status).toBe(429);
    expect(locked.headers.get("retry-after")).toBe("60");
    expect(await locked.json()).toEqual({ error: "too many attempts; try again later", retryAfter: 60 });
    t.advance(60_000);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(200);
  });

  test("the lock grows with repeated failures and a success resets the username's count", async () => {
    const t = makeApp();
    const s = await register(t);
    const retryAfter = async () => (await login(t, s.userId, PASSWORD)).headers.get("retry-after");
    for (let i = 0; i < 3; i++) await login(t, s.userId, "wrong-password");
    expect(await retryAfter()).toBe("60");
    t.advance(60_000);
    expect((await login(t, s.userId, "wrong-password")).status).toBe(401);
    expect(await retryAfter()).toBe("120");
    t.advance(120_000);
    expect((await login(t, s.userId, "wrong-password")).status).toBe(401);
    expect(await retryAfter()).toBe("240");
    t.advance(240_000);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(200);
    // Reset: two more failures are below the threshold again.
    for (let i = 0; i < 2; i++) expect((await login(t, s.userId, "wrong-password")).status).toBe(401);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(200);
  });

  test("an unknown username gets exactly the same answers as a known one", async () => {
    const t = makeApp();
    const s = await register(t);
    const known: string[] = [];
    const unknown: string[] = [];
    const ghost = uniq("nobody");
    for (let i = 0; i < 5; i++) {
      const a = await login(t, s.userId, "wrong-password");
      const b = await login(t, ghost, "wrong-password");
      known.push(`${a.status} ${a.headers.get("retry-after")} ${a.headers.get("content-type")} ${await a.text()}`);
      unknown.push(`${b.status} ${b.headers.get("retry-after")} ${b.headers.get("content-type")} ${await b.text()}`);
    }
    expect(unknown).toEqual(known);
    expect(known.map((k) => k.slice(0, 3))).toEqual(["401", "401", "401", "429", "429"]);
  });

  test("LOGIN_ADDR_MAX_FAILURES failures from one address lock the address for every username", async () => {
    const t = makeApp();
    const s = await register(t);
    const from = addr();
    for (let i = 0; i < 6; i++) expect((await login(t, uniq("spray"), "wrong-password", from)).status).toBe(401);
    const res = await login(t, s.userId, PASSWORD, from);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await login(t, s.userId, PASSWORD, addr())).status).toBe(200);
  });

  test("X-Forwarded-For is ignored without trusted hops: varying it does not escape the address lock", async () => {
    const t = makeApp();
    const from = addr();
    for (let i = 0; i < 6; i++) {
      const res = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: from, headers: { "x-forwarded-for": `203.0.113.${i}` } });
      expect(res.status).toBe(401);
    }
    const res = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: from, headers: { "x-forwarded-for": "203.0.113.99" } });
    expect(res.status).toBe(429);
  });

  test("with one trusted hop the proxy's X-Forwarded-For entry is the address; client-written entries are not; a bad entry is 400", async () => {
    const t = makeApp({ TRUSTED_PROXY_HOPS: "1" });
    const proxy = addr();
    const client = "203.0.113.7";
    for (let i = 0; i < 6; i++) {
      const res = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: proxy, headers: { "x-forwarded-for": `10.9.9.${i}, ${client}` } });
      expect(res.status).toBe(401);
    }
    const locked = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: proxy, headers: { "x-forwarded-for": client } });
    expect(locked.status).toBe(429);
    const other = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: proxy, headers: { "x-forwarded-for": "203.0.113.8" } });
    expect(other.status).toBe(401);
    for (const bad of ["not-an-ip", "1.2.3.4, <script>", "999.0.0.1"]) {
      const res = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, addr: proxy, headers: { "x-forwarded-for": bad } });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toContain("X-Forwarded-For");
    }
    const reg = await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD }, addr: proxy, headers: { "x-forwarded-for": "nope" } });
    expect(reg.status).toBe(400);
  });

  test("a throttle store that cannot answer makes login and register answer 503, never an unthrottled guess", async () => {
    const fail = () => Promise.reject(new Error("down"));
    const t = makeApp({}, createMemoryRevocations(), { lockedFor: fail, hit: fail, reset: fail });
    expect((await login(t, uniq(), "wrong-password")).status).toBe(503);
    expect((await t.call("POST", "/api/register", { body: { username: uniq(), password: PASSWORD } })).status).toBe(503);
  });

  test.each([
    ["malformed JSON", "{"],
    ["no password", JSON.stringify({ username: "someone" })],
    ["no username", JSON.stringify({ password: PASSWORD })],
    ["a numeric password", JSON.stringify({ username: "someone", password: 12345678 })],
    ["an array", "[]"],
    ["an empty body", ""],
  ])("400 for %s, and it counts as no failure", async (_, raw) => {
    const t = makeApp();
    const s = await register(t);
    const from = addr();
    for (let i = 0; i < 8; i++) expect((await t.call("POST", "/api/login", { raw, addr: from })).status).toBe(400);
    expect((await login(t, s.userId, PASSWORD, from)).status).toBe(200);
  });
});

describe("revocation", () => {
  test("a minted token without ver works while the user's version is 0, and ends with logout-all", async () => {
    const t = makeApp();
    const user = uniq("minted");
    const minted = await sign({ sub: user }, SECRET, "HS256");
    expect((await groups(t, minted)).status).toBe(200);
    expect((await t.call("POST", "/api/logout-all", { token: minted })).status).toBe(204);
    expect((await groups(t, minted)).status).toBe(401);
    expect((await groups(t, await sign({ sub: user, ver: 1 }, SECRET, "HS256"))).status).toBe(200);
  });

  test.each([["a string ver", "1"], ["a negative ver", -1], ["a fractional ver", 0.5]])("a token with %s is invalid", async (_, ver) => {
    const t = makeApp();
    expect((await groups(t, await sign({ sub: uniq(), ver }, SECRET, "HS256"))).status).toBe(401);
  });

  test("logout ends the current token and its refresh token, and nothing else", async () => {
    const t = makeApp();
    const s = await register(t);
    const other = (await (await login(t, s.userId, PASSWORD)).json()) as Session;
    expect((await t.call("POST", "/api/logout", { token: s.token })).status).toBe(204);
    expect((await groups(t, s.token)).status).toBe(401);
    expect((await t.call("POST", "/api/logout", { token: s.token })).status).toBe(401);
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } })).status).toBe(401);
    expect((await groups(t, other.token)).status).toBe(200);
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: other.refreshToken } })).status).toBe(200);
  });

  test("logout of a minted token (no jti) ends that token only", async () => {
    const t = makeApp();
    const user = uniq("minted");
    const a = await sign({ sub: user }, SECRET, "HS256");
    const b = await sign({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET, "HS256");
    expect((await t.call("POST", "/api/logout", { token: a })).status).toBe(204);
    expect((await groups(t, a)).status).toBe(401);
    expect((await groups(t, b)).status).toBe(200);
  });

  test("logout-all ends every access and refresh token of the user; signing in again works", async () => {
    const t = makeApp();
    const s1 = await register(t);
    const s2 = (await (await login(t, s1.userId, PASSWORD)).json()) as Session;
    const bystander = await register(t);
    expect((await t.call("POST", "/api/logout-all", { token: s2.token })).status).toBe(204);
    for (const s of [s1, s2]) {
      expect((await groups(t, s.token)).status).toBe(401);
      expect((await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } })).status).toBe(401);
    }
    expect((await groups(t, bystander.token)).status).toBe(200);
    const again = (await (await login(t, s1.userId, PASSWORD)).json()) as Session;
    expect(decode(again.token).payload.ver).toBe(1);
    expect((await groups(t, again.token)).status).toBe(200);
  });

  test("a revocations store that cannot answer makes /api answer 503, not let tokens through", async () => {
    const down = createMemoryRevocations();
    const t = makeApp({}, { ...down, version: () => Promise.reject(new Error("down")), isRevoked: () => Promise.reject(new Error("down")) });
    const res = await groups(t, await sign({ sub: uniq() }, SECRET, "HS256"));
    expect(res.status).toBe(503);
  });
});

describe("refresh", () => {
  test("rotates: a new access and refresh token for the same session; the old refresh token is spent", async () => {
    const t = makeApp();
    const s = await register(t);
    const res = await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } });
    expect(res.status).toBe(200);
    const r = (await res.json()) as Session;
    expect(Object.keys(r).sort()).toEqual(["expiresIn", "refreshToken", "token", "userId"]);
    expect(r.userId).toBe(s.userId);
    expect(r.refreshToken).not.toBe(s.refreshToken);
    expect(r.token).not.toBe(s.token);
    expect(decode(r.token).payload.sid).toBe(decode(s.token).payload.sid);
    expect((await groups(t, r.token)).status).toBe(200);
    const r2 = await t.call("POST", "/api/refresh", { body: { refreshToken: r.refreshToken } });
    expect(r2.status).toBe(200);
  });

  test("reuse of a rotated refresh token revokes the whole family", async () => {
    const t = makeApp();
    const s = await register(t);
    const next = (await (await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } })).json()) as Session;
    const replay = await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } });
    expect(replay.status).toBe(401);
    expect(((await replay.json()) as { error: string }).error).toContain("already used");
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: next.refreshToken } })).status).toBe(401);
    // Another sign-in of the same user is a different family and keeps working.
    const other = (await (await login(t, s.userId, PASSWORD)).json()) as Session;
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: other.refreshToken } })).status).toBe(200);
  });

  test("the refresh token is stored only as a hash", async () => {
    const t = makeApp();
    const s = await register(t);
    const rows = await handle.db.execute(`select * from refresh_tokens where user_id = '${s.userId}'` as never);
    const text = JSON.stringify(rows);
    expect(text).toContain(s.userId);
    expect(text).not.toContain(s.refreshToken);
  });

  test.each([
    ["an unknown token", JSON.stringify({ refreshToken: "x".repeat(43) }), 401],
    ["no token", "{}", 400],
    ["a numeric token", JSON.stringify({ refreshToken: 5 }), 400],
    ["an over-long token", JSON.stringify({ refreshToken: "x".repeat(201) }), 400],
    ["malformed JSON", "{", 400],
  ])("%s: %d", async (_, raw, status) => {
    const t = makeApp();
    expect((await t.call("POST", "/api/refresh", { raw })).status).toBe(status);
  });

  test("an expired refresh token is refused", async () => {
    const t = makeApp({ REFRESH_TOKEN_TTL_SEC: "60" });
    const s = await register(t);
    await handle.db.execute(`update refresh_tokens set expires_at = now() - interval '1 second' where user_id = '${s.userId}'` as never);
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: s.refreshToken } })).status).toBe(401);
    // The next sign-in of the user clears the expired row.
    expect((await login(t, s.userId, PASSWORD)).status).toBe(200);
    const rows = (await handle.db.execute(`select expires_at from refresh_tokens where user_id = '${s.userId}'` as never)) as unknown as unknown[];
    expect(rows).toHaveLength(1);
  });
});

describe("password change", () => {
  test("changes the password, ends every other session, and answers a new session", async () => {
    const t = makeApp();
    const s = await register(t);
    const other = (await (await login(t, s.userId, PASSWORD)).json()) as Session;
    const res = await t.call("POST", "/api/password", { token: s.token, body: { current: PASSWORD, next: "a-new-password" } });
    expect(res.status).toBe(200);
    const fresh = (await res.json()) as Session;
    expect(Object.keys(fresh).sort()).toEqual(["expiresIn", "refreshToken", "token", "userId"]);
    expect((await groups(t, fresh.token)).status).toBe(200);
    for (const old of [s, other]) {
      expect((await groups(t, old.token)).status).toBe(401);
      expect((await t.call("POST", "/api/refresh", { body: { refreshToken: old.refreshToken } })).status).toBe(401);
    }
    expect((await t.call("POST", "/api/refresh", { body: { refreshToken: fresh.refreshToken } })).status).toBe(200);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(401);
    expect((await login(t, s.userId, "a-new-password")).status).toBe(200);
  });

  test("a wrong current password is 403 and counts toward the username's lock", async () => {
    const t = makeApp();
    const s = await register(t);
    for (let i = 0; i < 3; i++) {
      expect((await t.call("POST", "/api/password", { token: s.token, body: { current: "wrong-password", next: "a-new-password" } })).status).toBe(403);
    }
    const res = await t.call("POST", "/api/password", { token: s.token, body: { current: PASSWORD, next: "a-new-password" } });
    expect(res.status).toBe(429);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(429);
    expect((await groups(t, s.token)).status).toBe(200); // the session itself stays
  });

  test.each([
    ["a short new password", { current: PASSWORD, next: "short" }],
    ["a long new password", { current: PASSWORD, next: "p".repeat(129) }],
    ["no current password", { next: "a-new-password" }],
    ["no new password", { current: PASSWORD }],
  ])("400 for %s", async (_, body) => {
    const t = makeApp();
    const s = await register(t);
    expect((await t.call("POST", "/api/password", { token: s.token, body })).status).toBe(400);
    expect((await t.call("POST", "/api/password", { token: s.token, raw: "{" })).status).toBe(400);
  });

  test("a minted user without an account has no password to change: 403", async () => {
    const t = makeApp();
    const res = await t.call("POST", "/api/password", { token: await sign({ sub: uniq() }, SECRET, "HS256"), body: { current: PASSWORD, next: "a-new-password" } });
    expect(res.status).toBe(403);
  });

  test.each(["/api/logout", "/api/logout-all", "/api/password"])("%s needs a valid token", async (path) => {
    const t = makeApp();
    expect((await t.call("POST", path, { body: { current: PASSWORD, next: "a-new-password" } })).status).toBe(401);
    expect((await t.call("POST", path, { token: "garbage", body: {} })).status).toBe(401);
  });
});

describe("headers", () => {
  const SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
  };
  test("every kind of answer carries a strict CSP (no inline script, no framing) and the other security headers", async () => {
    const t = makeApp();
    const s = await register(t);
    const answers = [
      await t.call("GET", "/client/"),
      await t.call("GET", "/client/app.js"),
      await t.call("GET", "/client/style.css"),
      await t.call("GET", "/client/missing.js"),
      await t.call("GET", "/health"),
      await t.call("GET", "/api/groups"),
      await groups(t, s.token),
      await login(t, uniq(), "wrong-password"),
      await t.call("POST", "/api/login", { raw: "{" }),
      await t.call("GET", "/nowhere"),
    ];
    for (const res of answers) {
      for (const [k, v] of Object.entries(SECURITY)) expect(res.headers.get(k)).toBe(v);
      const csp = res.headers.get("content-security-policy") ?? "";
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("default-src 'none'");
      expect(csp).not.toMatch(/script-src[^;]*('unsafe-inline'|'unsafe-eval')/);
      expect(res.headers.get("access-control-allow-origin")).toBeNull();
    }
    expect((await groups(t, s.token)).headers.get("cache-control")).toBe("no-store");
  });

  test("CORS is closed by default: a preflight gets no Access-Control headers", async () => {
    const t = makeApp();
    const res = await t.call("OPTIONS", "/api/groups", { headers: { origin: "https://evil.example", "access-control-request-method": "GET" } });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect(res.headers.get("access-control-allow-headers")).toBeNull();
  });

  test("CORS_ORIGINS opens /api to the listed origins only", async () => {
    const t = makeApp({ CORS_ORIGINS: "https://chat.example.com, https://other.example" });
    const pre = await t.call("OPTIONS", "/api/groups", { headers: { origin: "https://chat.example.com", "access-control-request-method": "GET", "access-control-request-headers": "authorization" } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("https://chat.example.com");
    expect(pre.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    const evil = await t.call("OPTIONS", "/api/groups", { headers: { origin: "https://evil.example", "access-control-request-method": "GET" } });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    const get = await t.call("POST", "/api/login", { body: { username: uniq(), password: "x" }, headers: { origin: "https://other.example" } });
    expect(get.headers.get("access-control-allow-origin")).toBe("https://other.example");
  });

  test("the client page has no inline script or inline event handlers (the CSP would block them)", async () => {
    const html = await Bun.file(new URL("./client/index.html", import.meta.url)).text();
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\ssrc="\/client\/[^"]+"/);
      expect(body!.trim()).toBe("");
    }
    expect(html).not.toMatch(/\son[a-z]+\s*=/i);
    expect(html).not.toMatch(/javascript:/i);
  });
});

describe("password hashes", () => {
  const DEFAULT_COST = { PASSWORD_MEMORY_KIB: undefined, PASSWORD_TIME_COST: undefined };
  const stored = async (user: string) => (await store.passwordHashOf(handle.db, user))!;

  test("by default argon2id with 64 MiB and 2 passes (the suite's own cost is only the tests')", async () => {
    const t = makeApp(DEFAULT_COST);
    const s = await register(t);
    expect(await stored(s.userId)).toMatch(/^\$argon2id\$v=19\$m=65536,t=2,p=1\$/);
    expect((await login(t, s.userId, PASSWORD)).status).toBe(200);
  });

  test("PASSWORD_MEMORY_KIB and PASSWORD_TIME_COST set the cost of new hashes; a password change uses it too", async () => {
    const t = makeApp({ PASSWORD_MEMORY_KIB: "1024", PASSWORD_TIME_COST: "3" });
    const s = await register(t);
    expect(await stored(s.userId)).toMatch(/^\$argon2id\$v=19\$m=1024,t=3,p=1\$/);
    const res = await t.call("POST", "/api/password", { body: { current: PASSWORD, next: "another-s3cret" }, token: s.token });
    expect(res.status).toBe(200);
    expect(await stored(s.userId)).toMatch(/^\$argon2id\$v=19\$m=1024,t=3,p=1\$/);
  });

  test("a hash made at another cost is made again at the next login, and the password still works", async () => {
    const before = makeApp({ PASSWORD_MEMORY_KIB: "512", PASSWORD_TIME_COST: "1" });
    const s = await register(before);
    const old = await stored(s.userId);
    expect(old).toContain("m=512,t=1,");
    const after = makeApp({ PASSWORD_MEMORY_KIB: "2048", PASSWORD_TIME_COST: "2" });
    // a failed login changes nothing
    expect((await login(after, s.userId, "wrong-password")).status).toBe(401);
    expect(await stored(s.userId)).toBe(old);
    expect((await login(after, s.userId, PASSWORD)).status).toBe(200);
    const redone = await stored(s.userId);
    expect(redone).toContain("m=2048,t=2,");
    expect(await Bun.password.verify(PASSWORD, redone)).toBe(true);
    // at the same cost a login leaves the hash alone
    expect((await login(after, s.userId, PASSWORD)).status).toBe(200);
    expect(await stored(s.userId)).toBe(redone);
    // and the old cost's gateway still verifies the new hash (the cost travels in the hash)
    expect((await login(before, s.userId, PASSWORD)).status).toBe(200);
  });

  test("the rehash never undoes a password change that raced it", async () => {
    const t = makeApp();
    const s = await register(t);
    const verified = await stored(s.userId);
    const changed = await Bun.password.hash("changed-meanwhile", { algorithm: "argon2id", memoryCost: 64, timeCost: 1 });
    await store.setPasswordHash(handle.db, s.userId, changed);
    // the login verified `verified`; the change landed before its rehash
    expect(await store.replacePasswordHash(handle.db, s.userId, verified, "$argon2id$v=19$m=99,t=9,p=1$x$y")).toBe(false);
    expect(await stored(s.userId)).toBe(changed);
    expect(await store.replacePasswordHash(handle.db, s.userId, changed, verified)).toBe(true);
    expect(await stored(s.userId)).toBe(verified);
  });

  test("which hashes count as made at another cost", () => {
    const cost = { memoryCost: 65536, timeCost: 2 };
    expect(hashedWithOtherCost("$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA", cost)).toBe(false);
    expect(hashedWithOtherCost("$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA", cost)).toBe(true);
    expect(hashedWithOtherCost("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", cost)).toBe(true);
    expect(hashedWithOtherCost("$argon2id$v=19$m=65536,t=2,p=4$c2FsdA$aGFzaA", cost)).toBe(true);
    expect(hashedWithOtherCost("$2b$10$abcdefghijklmnopqrstuv", cost)).toBe(true);
  });

  test("an unknown user costs a full verification at the configured cost (no fast path)", async () => {
    // Not a timing oracle test: it checks the unknown-user path verifies against a hash of today's
    // cost at all. At the default cost a verification is ~100 ms here, far above the rest of a login.
    const t = makeApp(DEFAULT_COST);
    const s = await register(t);
    const time = async (username: string) => {
      const t0 = performance.now();
      expect((await login(t, username, "wrong-password")).status).toBe(401);
      return performance.now() - t0;
    };
    await time(uniq("nobody")); // the dummy hash is made once
    const wrong = Math.min(await time(s.userId), await time(s.userId));
    const unknown = Math.min(await time(uniq("nobody")), await time(uniq("nobody")));
    expect(unknown).toBeGreaterThan(wrong / 2);
  });
});
