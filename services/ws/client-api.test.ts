import { afterEach, expect, test } from "bun:test";
// @ts-expect-error: a plain ES module of the browser client
import { createApi } from "./client/api.js";

// The browser client's API wrapper (services/ws/client/api.js) against a scripted fetch.

type Call = { path: string; auth: string | null; body: unknown };
const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

/** Answers each call with the next of `answers` ([status, body]); records the calls. */
function script(answers: Array<[number, unknown]>): Call[] {
  const calls: Call[] = [];
  globalThis.fetch = (async (path: string, init: RequestInit) => {
    const headers = init.headers as Record<string, string>;
    calls.push({ path, auth: headers.authorization ?? null, body: init.body ? JSON.parse(String(init.body)) : undefined });
    const [status, body] = answers.shift() ?? [500, { error: "unexpected call" }];
    return new Response(body === null ? null : JSON.stringify(body), { status });
  }) as typeof fetch;
  return calls;
}

/** `stored()`: the session this tab's localStorage holds at each syncSession() (another tab's, once it arrives). */
function client(session: { token: string; refreshToken: string }, opts: { stored?: () => typeof session; settleMs?: number } = {}) {
  const seen = { sessions: [] as unknown[], unauthorized: 0, syncs: 0 };
  let s = session;
  const api = createApi({
    getToken: () => s.token,
    getRefreshToken: () => s.refreshToken,
    onSession: (n: typeof s) => {
      s = n;
      seen.sessions.push(n);
    },
    onUnauthorized: () => seen.unauthorized++,
    syncSession: () => {
      seen.syncs++;
      if (opts.stored) s = opts.stored();
    },
    settleMs: opts.settleMs,
  });
  return { api, seen, current: () => s };
}

const session = (n: number) => ({ userId: "al", token: `t${n}`, refreshToken: `r${n}`, expiresIn: 900 });

test("changePassword hands the answered session to onSession, as a refresh does", async () => {
  const calls = script([[200, session(2)]]);
  const c = client(session(1));
  expect(await c.api.changePassword("old password", "new password")).toEqual(session(2));
  expect(calls).toEqual([{ path: "/api/password", auth: "Bearer t1", body: { current: "old password", next: "new password" } }]);
  expect(c.seen.sessions).toEqual([session(2)]);
  expect(c.current().token).toBe("t2");
});

test("changePassword with an expired access token refreshes once and tries again with the new one", async () => {
  const calls = script([[401, { error: "token expired" }], [200, session(2)], [200, session(3)]]);
  const c = client(session(1));
  expect(await c.api.changePassword("old password", "new password")).toEqual(session(3));
  expect(calls.map((x) => [x.path, x.auth])).toEqual([
    ["/api/password", "Bearer t1"],
    ["/api/refresh", null],
    ["/api/password", "Bearer t2"],
  ]);
  expect(c.current().token).toBe("t3");
  expect(c.seen.unauthorized).toBe(0);
});

test("changePassword: a wrong current password is a 403 that changes nothing; an ended session calls onUnauthorized", async () => {
  script([[403, { error: "wrong current password" }]]);
  const c = client(session(1));
  const e = await c.api.changePassword("bad", "new password").catch((x: unknown) => x);
  expect(e).toMatchObject({ status: 403, message: "wrong current password" });
  expect(c.seen.sessions).toEqual([]);
  expect(c.seen.unauthorized).toBe(0);

  script([[401, { error: "token revoked" }], [401, { error: "invalid or expired refresh token" }]]);
  const d = client(session(1));
  expect(await d.api.changePassword("old password", "new password").catch((x: { status: number }) => x.status)).toBe(401);
  expect(d.seen.unauthorized).toBe(1);
});

test("refresh(failedToken) asks nothing when the session no longer uses that token (syncSession adopted another tab's)", async () => {
  const calls = script([]);
  let s = session(1);
  const api = createApi({
    getToken: () => s.token,
    getRefreshToken: () => s.refreshToken,
    onUnauthorized: () => {},
    syncSession: () => (s = session(5)), // another tab changed the password and saved its session
  });
  expect(await api.refresh("t1")).toBeNull();
  expect(calls).toEqual([]);
});

test("a refused refresh waits for another tab's new session before giving up (its localStorage write lags the lock)", async () => {
  // Another tab changed the password: every refresh token is revoked, so this tab's refresh is
  // refused, and the other tab's new session shows up in this tab's storage only a moment later.
  const calls = script([[401, { error: "invalid or expired refresh token" }]]);
  let stored = session(1);
  const c = client(session(1), {
    stored: () => {
      if (c.seen.syncs === 3) stored = session(7); // arrives while the refused refresh waits
      return stored;
    },
    settleMs: 2000,
  });
  expect(await c.api.refresh("t1")).toBeNull();
  expect(calls.map((x) => x.path)).toEqual(["/api/refresh"]);
  expect(c.current().token).toBe("t7");
});

test("a refused refresh with no other session arriving is a 401 after the settle time (signed out)", async () => {
  script([[401, { error: "invalid or expired refresh token" }]]);
  const c = client(session(1), { stored: () => session(1), settleMs: 200 });
  expect(await c.api.refresh("t1").catch((e: { status: number }) => e.status)).toBe(401);
  expect(c.seen.syncs).toBeGreaterThan(2); // it looked again while it waited
});
