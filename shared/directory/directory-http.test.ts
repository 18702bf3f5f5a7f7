import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createDiscoverApp } from "../../services/discover/app.ts";
import { createMetrics } from "../metrics.ts";
import { closeRedis, isRedisReady, type Redis } from "../redis.ts";
import { deletePrefix, openTestRedis } from "../../test/redis.ts";
import { directoryContract } from "./directory.contract.ts";
import { DirectoryUnavailable } from "./directory.ts";
import { createHttpDirectory, DirectoryRequestError, type FetchLike } from "./directory-http.ts";
import { createMemoryDirectory } from "./directory-memory.ts";
import { createRedisDirectory } from "./directory-redis.ts";

const SECRET = "test-internal-secret-0123456789";

let redis: Redis;
beforeAll(async () => {
  redis = await openTestRedis();
});
afterAll(() => closeRedis(redis));


directoryContract("http client over the discover app over redis", async () => {
  const prefix = `test:${crypto.randomUUID()}:`;
  const backend = createRedisDirectory(redis, { prefix });
  const app = createDiscoverApp({
    directory: backend,
    ledger: backend,
    internalSecret: SECRET,
    health: () => isRedisReady(redis),
    metrics: createMetrics("discover"),
  });
  const client = createHttpDirectory({ baseUrl: "http://discover.test/", secret: SECRET, fetch: (url, init) => app.request(url, init) });
  return { directory: client, ledger: client, cleanup: () => deletePrefix(redis, prefix) };
});

function appWith(backend = createMemoryDirectory()) {
  return createDiscoverApp({ directory: backend, ledger: backend, internalSecret: SECRET, health: () => true, metrics: createMetrics("discover") });
}

describe("http directory client", () => {
  test("talks to a real server over the network", async () => {
    const server = Bun.serve({ port: 0, fetch: appWith().fetch });
    try {
      const client = createHttpDirectory({ baseUrl: `http://127.0.0.1:${server.port}`, secret: SECRET });
      const a = { id: "a", url: "http://127.0.0.1:1" };
      expect(await client.heartbeat(a, 10_000)).toBe(false);
      await client.setPresence("a", ["x"], []);
      expect(await client.lookup(["x"])).toEqual({ x: [a] });
    } finally {
      server.stop(true);
    }
  });

  test("a refused connection is DirectoryUnavailable", async () => {
    const server = Bun.serve({ port: 0, fetch: () => new Response() });
    const port = server.port;
    server.stop(true);
    const client = createHttpDirectory({ baseUrl: `http://127.0.0.1:${port}`, secret: SECRET });
    expect(await client.lookup(["x"]).catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
  });

  test("5xx answers and unreadable bodies are DirectoryUnavailable", async () => {
    for (const res of [() => Response.json({ error: "unavailable" }, { status: 503 }), () => new Response("<html>", { status: 200 })]) {
      const client = createHttpDirectory({ baseUrl: "http://d", secret: SECRET, fetch: async () => res() });
      expect(await client.claim(["m"]).catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
    }
  });

  test("a request that outlives timeoutMs is DirectoryUnavailable", async () => {
    const hang: FetchLike = (_url, init) =>
      new Promise((_, reject) => init.signal!.addEventListener("abort", () => reject(init.signal!.reason)));
    const client = createHttpDirectory({ baseUrl: "http://d", secret: SECRET, fetch: hang, timeoutMs: 20 });
    expect(await client.heartbeat({ id: "a", url: "http://127.0.0.1:1" }, 1000).catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
  });

  test("a wrong secret is a DirectoryRequestError with status 401", async () => {
    const app = appWith();
    const client = createHttpDirectory({ baseUrl: "http://d", secret: "not-the-secret-at-all", fetch: (u, i) => app.request(u, i) });
    const err = await client.lookup(["x"]).catch((e) => e);
    expect(err).toBeInstanceOf(DirectoryRequestError);
    expect(err.status).toBe(401);
  });

  test("several discover instances: a refused, 5xx or hung one is skipped, the healthy one stays preferred, 4xx is not retried elsewhere", async () => {
    const app = appWith();
    const seen: string[] = [];
    let bDown = false;
    const fetch: FetchLike = (url, init) => {
      const host = new URL(url).host;
      seen.push(host);
      if (host === "refused") return Promise.reject(new TypeError("connection refused"));
      if (host === "failing") return Response.json({ error: "unavailable" }, { status: 503 });
      if (host === "hung") return new Promise((_, reject) => init.signal!.addEventListener("abort", () => reject(init.signal!.reason)));
      if (host === "b" && bDown) return Promise.reject(new TypeError("connection refused"));
      return app.request(url, init);
    };
    const client = createHttpDirectory({ baseUrl: "http://refused,http://failing/, http://hung,http://b,http://c", secret: SECRET, fetch, timeoutMs: 50 });
    const a = { id: "a", url: "http://127.0.0.1:1" };
    expect(await client.heartbeat(a, 10_000)).toBe(false);
    expect(seen).toEqual(["refused", "failing", "hung", "b"]);
    seen.length = 0;
    await client.setPresence("a", ["x"], []);
    expect(seen).toEqual(["b"]);
    seen.length = 0;
    bDown = true;
    expect(await client.lookup(["x"])).toEqual({ x: [a] });
    expect(seen).toEqual(["b", "c"]);
    const wrong = createHttpDirectory({ baseUrl: ["http://b", "http://c"], secret: "not-the-secret-at-all", fetch: (u, i) => app.request(u, i) });
    expect(await wrong.lookup(["x"]).catch((e) => e)).toBeInstanceOf(DirectoryRequestError);
    const allDown = createHttpDirectory({ baseUrl: "http://refused,http://failing", secret: SECRET, fetch });
    expect(await allDown.lookup(["x"]).catch((e) => e)).toBeInstanceOf(DirectoryUnavailable);
  });

  test("calls over the batch limit are split", async () => {
    const app = appWith();
    let requests = 0;
    const client = createHttpDirectory({ baseUrl: "http://d", secret: SECRET, fetch: (u, i) => (requests++, app.request(u, i)) });
    const users = Array.from({ length: 25_000 }, (_, i) => `u${i}`);
    await client.heartbeat({ id: "a", url: "http://127.0.0.1:1" }, 10_000);
    requests = 0;
    await client.setPresence("a", users, []);
    expect(requests).toBe(3);
    const r = await client.lookup(users);
    expect(Object.keys(r)).toHaveLength(25_000);
    expect(r.u24999).toEqual([{ id: "a", url: "http://127.0.0.1:1" }]);
    const claims = await client.claim(users);
    expect(Object.keys(claims)).toHaveLength(25_000);
  });
});

describe("http change feed", () => {
  const until = async (check: () => boolean, what: string) => {
    const end = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
      await Bun.sleep(20);
    }
  };

  test("goes live over a real server, reports changes, drops (with a reset) when discover goes away and comes back on the next instance", async () => {
    const backend = createMemoryDirectory();
    const one = Bun.serve({ port: 0, fetch: appWith(backend).fetch });
    const two = Bun.serve({ port: 0, fetch: appWith(backend).fetch });
    const events: Array<string[] | null> = [];
    const client = createHttpDirectory({ baseUrl: `http://127.0.0.1:${one.port},http://127.0.0.1:${two.port}`, secret: SECRET });
    const feed = client.watch((u) => events.push(u));
    try {
      await until(() => feed.live(), "live");
      expect(events).toEqual([null]);
      await backend.heartbeat({ id: "a", url: "http://a" }, 60_000);
      await backend.setPresence("a", ["x"], []);
      await until(() => events.some((e) => e?.includes("x")), "x reported");
      one.stop(true);
      await until(() => !feed.live(), "not live once its discover is gone");
      await until(() => feed.live(), "live again on the other discover");
      expect(events.filter((e) => e === null).length).toBeGreaterThanOrEqual(3); // live, dropped, live again
      await backend.setPresence("a", ["y"], []);
      await until(() => events.some((e) => e?.includes("y")), "y reported");
    } finally {
      feed.stop();
      one.stop(true);
      two.stop(true);
    }
    expect(feed.live()).toBe(false);
  });

  test("a wrong secret never goes live (401), and /v1/changes needs the secret", async () => {
    const app = appWith();
    const res = await app.request("http://d/v1/changes");
    expect(res.status).toBe(401);
    const client = createHttpDirectory({ baseUrl: "http://d", secret: "not-the-secret-at-all", fetch: (u, i) => app.request(u, i) });
    const events: Array<string[] | null> = [];
    const feed = client.watch((u) => events.push(u));
    await Bun.sleep(300);
    expect(feed.live()).toBe(false);
    expect(events).toEqual([]);
    feed.stop();
  });
});
