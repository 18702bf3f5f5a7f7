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
