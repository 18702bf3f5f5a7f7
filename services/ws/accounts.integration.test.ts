import { describe, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

// Accounts and the bearer-token door (CONTRACT.md section 2) on real processes: discover, two ws
// instances and persist over Redis, RabbitMQ and PostgreSQL.

// One trusted proxy hop: tests that need an address of their own send X-Forwarded-For as a proxy would.
const fx = useCluster({ ws: 2, env: { TRUSTED_PROXY_HOPS: "1", LOGIN_ADDR_MAX_FAILURES: "30" } });
const sql = () => fx.sql();

const A = fx.A;
const B = fx.B;
const PASSWORD = "s3cret-enough";

async function post(base: string, path: string, body: unknown, raw = false, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: raw ? (body as string) : JSON.stringify(body),
  });
}

const SESSION_KEYS = ["expiresIn", "refreshToken", "token", "userId"];

async function register(base: string, username: string, password = PASSWORD) {
  const res = await post(base, "/api/register", { username, password });
  return { status: res.status, body: (await res.json()) as { userId?: string; token?: string; refreshToken?: string; error?: string } };
}

/** The token opens both doors: an /api route (200) and a WebSocket whose ping is answered. */
async function expectTokenWorks(token: string, user: string, base = A()) {
  const res = await fetch(`${base}/api/groups`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  expect(Array.isArray(((await res.json()) as { groups: unknown }).groups)).toBe(true);
  const c = await TestClient.connect(base, user, token);
  fx.track(c);
  c.send({ type: "ping" });
  await c.next((f) => f.type === "pong", "pong");
  c.close();
}

describe("register", () => {
  test("201 with userId and a token that works on /ws and /api of every instance (plus refreshToken and expiresIn)", async () => {
    const name = uniqueUser("reg");
    const r = await register(A(), name);
    expect(r.status).toBe(201);
    expect(Object.keys(r.body).sort()).toEqual(SESSION_KEYS);
    expect(r.body.userId).toBe(name);
    expect(typeof r.body.token).toBe("string");
    await expectTokenWorks(r.body.token!, name, A());
    await expectTokenWorks(r.body.token!, name, B());
  });

  test("the full character set and the 64-character limit are accepted", async () => {
    const tail = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    for (const name of [`A.b_c-9.${tail}`, `L${tail}`.padEnd(64, "x")]) {
      const r = await register(A(), name);
      expect(r.status).toBe(201);
      expect(r.body.userId).toBe(name);
    }
  });

  test("409 when the username is taken, on either instance, whatever the password", async () => {
    const name = uniqueUser("taken");
    expect((await register(A(), name)).status).toBe(201);
    const again = await register(B(), name, "another password");
    expect(again.status).toBe(409);
    expect(typeof again.body.error).toBe("string");
    // The first password still logs in: the second registration changed nothing.
    expect((await post(A(), "/api/login", { username: name, password: PASSWORD })).status).toBe(200);
    expect((await post(A(), "/api/login", { username: name, password: "another password" })).status).toBe(401);
  });

  test("409 for a name taken in another letter case; the first spelling stays, login is exact", async () => {
    const name = `Case-${crypto.randomUUID().slice(0, 8)}`;
    expect((await register(A(), name.toUpperCase())).status).toBe(201);
    for (const variant of [name, name.toLowerCase(), name.toUpperCase()]) expect((await register(B(), variant)).status).toBe(409);
    expect((await sql()`select id from users where lower(id) = ${name.toLowerCase()}`).map((r) => r.id)).toEqual([name.toUpperCase()]);
    expect((await post(A(), "/api/login", { username: name.toUpperCase(), password: PASSWORD })).status).toBe(200);
    expect((await post(A(), "/api/login", { username: name.toLowerCase(), password: PASSWORD })).status).toBe(401);
  });

  test("concurrent registrations of one name in different cases: exactly one wins", async () => {
    const name = uniqueUser("rAce");
    const rs = await Promise.all([name, name.toLowerCase(), name.toUpperCase(), name].map((n, i) => register(i % 2 ? B() : A(), n)));
    expect(rs.map((r) => r.status).sort()).toEqual([201, 409, 409, 409]);
  });

  test("concurrent registrations of one name: exactly one wins", async () => {
    const name = uniqueUser("race");
    const rs = await Promise.all([A(), B(), A(), B()].map((base) => register(base, name)));
    expect(rs.map((r) => r.status).sort()).toEqual([201, 409, 409, 409]);
  });

  const invalid: Array<[string, string, boolean?]> = [
    ["a username with a space", JSON.stringify({ username: "bad name", password: PASSWORD })],
    ["a username with a slash", JSON.stringify({ username: "bad/name", password: PASSWORD })],
    ["a username with a non-ASCII letter", JSON.stringify({ username: "zoë", password: PASSWORD })],
    ["an empty username", JSON.stringify({ username: "", password: PASSWORD })],
    ["a 65-character username", JSON.stringify({ username: "x".repeat(65), password: PASSWORD })],
    ["a numeric username", JSON.stringify({ username: 12345, password: PASSWORD })],
    ["a 7-character password", JSON.stringify({ username: "seven-chars", password: "1234567" })],
    ["a 129-character password", JSON.stringify({ username: "long-pw", password: "p".repeat(129) })],
    ["a numeric password", JSON.stringify({ username: "num-pw", password: 123456789 })],
    ["no password", JSON.stringify({ username: "no-pw" })],
    ["no username", JSON.stringify({ password: PASSWORD })],
    ["an empty object", "{}"],
    ["malformed JSON", '{"username": "x", "password":'],
    ["an array", JSON.stringify([{ username: "arr", password: PASSWORD }])],
    ["a string", JSON.stringify("username=x&password=y")],
    ["null", "null"],
    ["an empty body", ""],
  ];
  test.each(invalid)("400 for %s", async (_, text) => {
    const res = await post(A(), "/api/register", text, true);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: unknown };
    expect(typeof body.error).toBe("string");
  });

  test("400 at the boundaries, 201 just inside them (8 and 128 characters)", async () => {
    for (const password of ["p".repeat(8), "p".repeat(128)]) {
      const name = uniqueUser("pw");
      expect((await register(A(), name, password)).status).toBe(201);
      expect((await post(A(), "/api/login", { username: name, password })).status).toBe(200);
    }
  });

  test("passwords are stored only as argon2id hashes, salted", async () => {
    const [one, two] = [uniqueUser("hash"), uniqueUser("hash")];
    const password = "the-same-Password-for-both";
    expect((await register(A(), one, password)).status).toBe(201);
    expect((await register(B(), two, password)).status).toBe(201);
    const rows = await sql()<Array<{ id: string; password_hash: string }>>`select id, password_hash from users where id in ${sql()([one, two])} order by id`;
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.password_hash.startsWith("$argon2id$")).toBe(true);
      expect(r.password_hash).not.toContain(password);
      expect(await Bun.password.verify(password, r.password_hash)).toBe(true);
    }
    expect(rows[0]!.password_hash).not.toBe(rows[1]!.password_hash);
    // No other column holds the password either.
    const all = await sql()`select * from users where id = ${one}`;
    expect(JSON.stringify(all)).not.toContain(password);
  });
});

describe("login", () => {
  test("200 with a working token, on the other instance too", async () => {
    const name = uniqueUser("login");
    expect((await register(A(), name)).status).toBe(201);
    const res = await post(B(), "/api/login", { username: name, password: PASSWORD });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { userId: string; token: string };
    expect(Object.keys(body).sort()).toEqual(SESSION_KEYS);
    expect(body.userId).toBe(name);
    await expectTokenWorks(body.token, name, B());
  });

  test("401 with the same answer for a wrong password and for an unknown user", async () => {
    const name = uniqueUser("login");
    expect((await register(A(), name)).status).toBe(201);
    const wrong = await post(A(), "/api/login", { username: name, password: "not-the-password" });
    const unknown = await post(A(), "/api/login", { username: uniqueUser("nobody"), password: PASSWORD });
    const caseChanged = await post(A(), "/api/login", { username: name.toUpperCase(), password: PASSWORD });
    expect([wrong.status, unknown.status, caseChanged.status]).toEqual([401, 401, 401]);
    const [w, u, c] = await Promise.all([wrong.text(), unknown.text(), caseChanged.text()]);
    expect(u).toBe(w);
    expect(c).toBe(w);
    expect(unknown.headers.get("content-type")).toBe(wrong.headers.get("content-type"));
  });

  test.each([
    ["no password", JSON.stringify({ username: "someone" })],
    ["malformed JSON", "{"],
    ["an array", "[]"],
  ])("400 for %s", async (_, text) => {
    expect((await post(A(), "/api/login", text, true)).status).toBe(400);
  });
});

describe("bearer tokens on /api", () => {
  const routes: Array<[string, string, unknown?]> = [
    ["GET", "/api/groups"],
    ["POST", "/api/groups", { name: "g", members: [] }],
    ["POST", "/api/groups/g_any/members", { userId: "someone" }],
    ["DELETE", "/api/groups/g_any/members/someone"],
    ["GET", "/api/messages?with=someone"],
    ["GET", "/api/messages?group=g_any"],
    ["GET", "/api/presence?users=someone"],
    ["GET", "/api/users?ids=someone"],
    ["GET", "/api/no-such-route"],
  ];

  async function call(method: string, path: string, body: unknown, authorization?: string) {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (authorization !== undefined) headers.authorization = authorization;
    return fetch(`${A()}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  test("every route but register and login answers 401 to a missing, garbage, expired, foreign or ill-formed token", async () => {
    const user = uniqueUser("tok");
    const now = Math.floor(Date.now() / 1000);
    const unsigned = (payload: object) =>
      `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.`;
    const bad: Array<[string, string | undefined]> = [
      ["no header", undefined],
      ["an empty header", ""],
      ["a bare token without Bearer", await mintToken(user, fx.cluster.jwtSecret)],
      ["Basic auth", `Basic ${btoa(`${user}:${PASSWORD}`)}`],
      ["garbage", "Bearer garbage"],
      ["a truncated token", `Bearer ${(await mintToken(user, fx.cluster.jwtSecret)).slice(0, -4)}`],
      ["an expired token", `Bearer ${await mintToken(user, fx.cluster.jwtSecret, { exp: now - 10 })}`],
      ["exp 0", `Bearer ${await mintToken(user, fx.cluster.jwtSecret, { exp: 0 })}`],
      ["a non-numeric exp", `Bearer ${await mintToken(user, fx.cluster.jwtSecret, { exp: "never" })}`],
      ["a token not valid before an hour from now", `Bearer ${await mintToken(user, fx.cluster.jwtSecret, { nbf: now + 3600 })}`],
      ["a token signed with another key", `Bearer ${await mintToken(user, "another-key-another-key-another-key")}`],
      ["an unsigned (alg none) token", `Bearer ${unsigned({ sub: user })}`],
      ["a sub with a space", `Bearer ${await mintToken("bad user", fx.cluster.jwtSecret)}`],
      ["a 65-character sub", `Bearer ${await mintToken("x".repeat(65), fx.cluster.jwtSecret)}`],
      ["an empty sub", `Bearer ${await mintToken("", fx.cluster.jwtSecret)}`],
      ["a numeric sub", `Bearer ${await mintToken(42 as unknown as string, fx.cluster.jwtSecret)}`],
      ["no sub", `Bearer ${await (await import("hono/jwt")).sign({ iat: now }, fx.cluster.jwtSecret, "HS256")}`],
    ];
    for (const [method, path, body] of routes) {
      for (const [what, auth] of bad) {
        const res = await call(method, path, body, auth);
        if (res.status !== 401) throw new Error(`${method} ${path} with ${what}: ${res.status}, expected 401`);
        expect(typeof ((await res.json()) as { error: unknown }).error).toBe("string");
      }
    }
  });

  test("a token minted with JWT_SECRET for an unregistered user works on /api and /ws, with or without exp", async () => {
    const user = uniqueUser("minted");
    const future = Math.floor(Date.now() / 1000) + 3600;
    for (const token of [await mintToken(user, fx.cluster.jwtSecret), await mintToken(user, fx.cluster.jwtSecret, { exp: future })]) {
      for (const [method, path, body] of routes.filter(([, p]) => p !== "/api/no-such-route")) {
        const res = await call(method, path, body, `Bearer ${token}`);
        expect([401, 500, 503]).not.toContain(res.status);
      }
      await expectTokenWorks(token, user, A());
      await expectTokenWorks(token, user, B());
    }
    const rows = await sql()`select id from users where id = ${user}`;
    expect(rows).toHaveLength(0);
  });

  test("register and login need no token, and ignore a bad one", async () => {
    const name = uniqueUser("open");
    const headers = { "content-type": "application/json", authorization: "Bearer garbage" };
    const reg = await fetch(`${A()}/api/register`, { method: "POST", headers, body: JSON.stringify({ username: name, password: PASSWORD }) });
    expect(reg.status).toBe(201);
    const login = await fetch(`${A()}/api/login`, { method: "POST", headers, body: JSON.stringify({ username: name, password: PASSWORD }) });
    expect(login.status).toBe(200);
  });
});

// Issue 12: throttling, revocation and refresh on real processes, the two gateways sharing Redis.

let nextAddr = 0;
/** An address of this test's own, as the trusted proxy reports it. */
const viaProxy = () => ({ "x-forwarded-for": `203.0.113.${++nextAddr}` });
const login = (base: string, username: string, password: string, headers: Record<string, string> = viaProxy()) =>
  post(base, "/api/login", { username, password }, false, headers);

async function session(base: string) {
  const name = uniqueUser("acct");
  const r = await register(base, name);
  expect(r.status).toBe(201);
  return { user: name, token: r.body.token!, refreshToken: r.body.refreshToken! };
}

async function connected(base: string, user: string, token: string) {
  const c = await TestClient.connect(base, user, token);
  fx.track(c);
  c.send({ type: "ping" });
  await c.next((f) => f.type === "pong", "pong");
  return c;
}

async function upgradeStatus(base: string, token: string): Promise<number> {
  const res = await fetch(`${base}/ws?token=${encodeURIComponent(token)}`, { headers: { connection: "upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": btoa("0123456789abcdef") } });
  await res.body?.cancel();
  return res.status;
}

/** Resolves with the close event, or fails when the socket is still open after `ms` (the issue's bound). */
function closedWithin(c: TestClient, ms: number) {
  return Promise.race([c.closed, Bun.sleep(ms).then(() => Promise.reject(new Error(`${c.user}: socket still open after ${ms} ms`)))]);
}

describe("brute force (issue 12)", () => {
  test("failures for one account on both instances lock it everywhere: 429 with Retry-After, even for the right password", async () => {
    const s = await session(A());
    for (const base of [A(), B(), A(), B(), A()]) expect((await login(base, s.user, "wrong-password")).status).toBe(401);
    for (const base of [A(), B()]) {
      const res = await login(base, s.user, PASSWORD);
      expect(res.status).toBe(429);
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    }
    // An unknown user is answered alike.
    const ghost = uniqueUser("ghost");
    for (const base of [A(), B(), A(), B(), A()]) expect((await login(base, ghost, "wrong-password")).status).toBe(401);
    expect((await login(B(), ghost, PASSWORD)).status).toBe(429);
  });

  test("failures from one address on both instances lock that address, for every account", async () => {
    const s = await session(A());
    const from = viaProxy();
    for (let i = 0; i < 30; i++) expect((await login(i % 2 ? A() : B(), uniqueUser("spray"), "wrong-password", from)).status).toBe(401);
    for (const base of [A(), B()]) expect((await login(base, s.user, PASSWORD, from)).status).toBe(429);
    expect((await login(A(), s.user, PASSWORD)).status).toBe(200);
  });
});

describe("revocation across instances (issue 12)", () => {
  test("logout-all on one instance closes the user's sockets on the other within 2 s, and the tokens stop working everywhere", async () => {
    const s = await session(A());
    const other = (await (await login(A(), s.user, PASSWORD)).json()) as { token: string; refreshToken: string };
    const bystander = await session(A());
    const onB = await connected(B(), s.user, s.token);
    const onA = await connected(A(), s.user, other.token);
    const keep = await connected(B(), bystander.user, bystander.token);
    const res = await fetch(`${A()}/api/logout-all`, { method: "POST", headers: { authorization: `Bearer ${s.token}` } });
    expect(res.status).toBe(204);
    expect((await closedWithin(onB, 2000)).code).toBe(4401);
    expect((await closedWithin(onA, 2000)).code).toBe(4401);
    for (const base of [A(), B()]) {
      for (const token of [s.token, other.token]) {
        expect((await fetch(`${base}/api/groups`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
        expect(await upgradeStatus(base, token)).toBe(401);
      }
    }
    expect((await post(B(), "/api/refresh", { refreshToken: other.refreshToken })).status).toBe(401);
    keep.send({ type: "ping" });
    await keep.next((f) => f.type === "pong", "pong");
  });

  test("logout ends this token on every instance and closes its sockets only", async () => {
    const s = await session(A());
    const other = (await (await login(B(), s.user, PASSWORD)).json()) as { token: string };
    const mine = await connected(B(), s.user, s.token);
    const theirs = await connected(B(), s.user, other.token);
    expect((await fetch(`${A()}/api/logout`, { method: "POST", headers: { authorization: `Bearer ${s.token}` } })).status).toBe(204);
    expect((await closedWithin(mine, 2000)).code).toBe(4401);
    expect((await fetch(`${B()}/api/groups`, { headers: { authorization: `Bearer ${s.token}` } })).status).toBe(401);
    expect(await upgradeStatus(B(), s.token)).toBe(401);
    theirs.send({ type: "ping" });
    await theirs.next((f) => f.type === "pong", "pong");
    expect((await fetch(`${B()}/api/groups`, { headers: { authorization: `Bearer ${other.token}` } })).status).toBe(200);
  });

  test("a password change on one instance closes the other sessions' sockets on the other", async () => {
    const s = await session(A());
    const onB = await connected(B(), s.user, s.token);
    const res = await post(A(), "/api/password", { current: PASSWORD, next: "brand-new-password" }, false, { authorization: `Bearer ${s.token}` });
    expect(res.status).toBe(200);
    const fresh = (await res.json()) as { token: string };
    expect((await closedWithin(onB, 2000)).code).toBe(4401);
    await expectTokenWorks(fresh.token, s.user, B());
  });

  test("refresh rotates on the other instance; replaying the old refresh token there revokes the family", async () => {
    const s = await session(A());
    const r = await post(B(), "/api/refresh", { refreshToken: s.refreshToken });
    expect(r.status).toBe(200);
    const next = (await r.json()) as { token: string; refreshToken: string };
    await expectTokenWorks(next.token, s.user, A());
    expect((await post(A(), "/api/refresh", { refreshToken: s.refreshToken })).status).toBe(401);
    expect((await post(B(), "/api/refresh", { refreshToken: next.refreshToken })).status).toBe(401);
  });
});

test("the client page and the API answer with the security headers on a real process", async () => {
  for (const path of ["/client/", "/client/app.js", "/api/groups", "/health"]) {
    const res = await fetch(`${B()}${path}`);
    await res.arrayBuffer();
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
  }
});

describe("GET /api/users", () => {
  async function users(query: string, token?: string) {
    token ??= await mintToken(uniqueUser("asker"), fx.cluster.jwtSecret);
    const res = await fetch(`${A()}/api/users?${query}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, body: (await res.json()) as { users?: Record<string, unknown>; error?: string } };
  }

  test("tells registered from unknown ids, matching any case and answering the registered spelling", async () => {
    const name = `Reg.${crypto.randomUUID().slice(0, 8)}`;
    expect((await register(B(), name)).status).toBe(201);
    const unknown = uniqueUser("ghost");
    const minted = uniqueUser("minted"); // has a token and connects, but never registered
    await expectTokenWorks(await mintToken(minted, fx.cluster.jwtSecret), minted);
    const r = await users(`ids=${name},${name.toLowerCase()},${unknown},${minted}`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      users: {
        [name]: { registered: true, userId: name },
        [name.toLowerCase()]: { registered: true, userId: name },
        [unknown]: { registered: false },
        [minted]: { registered: false },
      },
    });
  });

  test("400 for a malformed query", async () => {
    for (const q of ["", "ids=", "ids=a,,b", "ids=bad%20name", "ids=a/b", `ids=${"x".repeat(65)}`, "users=a", `ids=${Array.from({ length: 1001 }, (_, i) => `u${i}`).join(",")}`]) {
      const r = await users(q);
      if (r.status !== 400) throw new Error(`GET /api/users?${q}: ${r.status}, expected 400`);
      expect(typeof r.body.error).toBe("string");
    }
  });
});
