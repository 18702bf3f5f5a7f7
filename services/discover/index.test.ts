import { afterEach, describe, expect, test } from "bun:test";
import { fileURLToPath } from "node:url";

const REDIS_URL = process.env.REDIS_URL;
if (!REDIS_URL) throw new Error("REDIS_URL is not set (the test preload starts Redis and sets it)");
const SECRET = "test-internal-secret-0123456789";
const ENTRY = fileURLToPath(new URL("./index.ts", import.meta.url));

interface Child {
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  stderr: Promise<string>;
}
const children: Child[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.proc.kill("SIGKILL");
});

function start(env: Record<string, string | undefined>, args = ["--port", "0"]): Child {
  const base: Record<string, string | undefined> = { ...process.env, REDIS_URL: undefined, INTERNAL_SECRET: undefined, PORT: undefined, LOG_LEVEL: "warn" };
  const merged = Object.fromEntries(Object.entries({ ...base, ...env }).filter((e): e is [string, string] => e[1] !== undefined));
  const proc = Bun.spawn([process.execPath, "run", ENTRY, ...args], { env: merged, stdout: "pipe", stderr: "pipe" });
  const child: Child = { proc, stderr: new Response(proc.stderr).text() };
  children.push(child);
  return child;
}

async function listeningUrl(child: Child, deadlineMs = 10_000, host = "127.0.0.1"): Promise<string> {
  const reader = child.proc.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  const timer = setTimeout(() => reader.cancel(), deadlineMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`no listening line; stdout: ${seen}; stderr: ${await child.stderr}`);
      seen += decoder.decode(value, { stream: true });
      const m = new RegExp(`discover listening on (http://${host.replaceAll(".", "\\.")}:(\\d+))`).exec(seen);
      if (m && m[2] !== "0") return m[1]!;
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

async function healthBecomes(url: string, status: number, deadlineMs = 10_000) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const res = await fetch(`${url}/health`);
    if (res.status === status) return;
    if (Date.now() > end) throw new Error(`/health stayed ${res.status}, wanted ${status}`);
    await Bun.sleep(50);
  }
}

describe("discover process", () => {
  test("serves on the bound port, is healthy with Redis, and exits 0 on SIGTERM", async () => {
    const child = start({ REDIS_URL, INTERNAL_SECRET: SECRET });
    const url = await listeningUrl(child);
    await healthBecomes(url, 200);
    const hb = await fetch(`${url}/v1/instances/index-test-${crypto.randomUUID()}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
      body: JSON.stringify({ url: "http://127.0.0.1:1", ttlMs: 1000 }),
    });
    expect(await hb.json()).toEqual({ known: false });
    expect((await fetch(`${url}/v1/lookup`, { method: "POST" })).status).toBe(401);
    expect(await (await fetch(`${url}/metrics`)).text()).toContain("discover_requests_total");
    child.proc.kill("SIGTERM");
    expect(await child.proc.exited).toBe(0);
  });

  test("starts while Redis is down: listening, /health 503, SIGTERM still exits 0", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const child = start({ REDIS_URL: `redis://127.0.0.1:${port}`, INTERNAL_SECRET: SECRET });
    const url = await listeningUrl(child);
    expect((await fetch(`${url}/health`)).status).toBe(503);
    const res = await fetch(`${url}/v1/lookup`, {
      method: "POST",
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
      body: JSON.stringify({ users: ["a"] }),
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: "unavailable" });
    child.proc.kill("SIGTERM");
    expect(await child.proc.exited).toBe(0);
  });

  test("binds HOST only: reachable on that loopback address, refused on another", async () => {
    const child = start({ REDIS_URL, INTERNAL_SECRET: SECRET, HOST: "127.0.9.1" });
    const url = await listeningUrl(child, 10_000, "127.0.9.1");
    await healthBecomes(url, 200);
    const other = url.replace("127.0.9.1", "127.0.0.1");
    expect(await fetch(`${other}/health`).then(() => "answered", () => "refused")).toBe("refused");
    child.proc.kill("SIGTERM");
    expect(await child.proc.exited).toBe(0);
  });

  test("a bad HOST exits 2 naming it", async () => {
    const child = start({ REDIS_URL, INTERNAL_SECRET: SECRET, HOST: "not a host" });
    expect(await child.proc.exited).toBe(2);
    expect(await child.stderr).toContain("HOST: must be an IP address or a host name");
  });

  test("a bad REDIS_URL exits 2 naming it", async () => {
    const child = start({ REDIS_URL: "notaurl", INTERNAL_SECRET: SECRET });
    expect(await child.proc.exited).toBe(2);
    expect(await child.stderr).toContain("REDIS_URL: must be a URL");
  });

  test("a missing INTERNAL_SECRET exits 2 naming it", async () => {
    const child = start({ REDIS_URL });
    expect(await child.proc.exited).toBe(2);
    expect(await child.stderr).toContain("missing configuration: INTERNAL_SECRET");
  });

  test("a bad --port exits 2", async () => {
    const child = start({ REDIS_URL, INTERNAL_SECRET: SECRET }, ["--port", "nope"]);
    expect(await child.proc.exited).toBe(2);
    expect(await child.stderr).toContain("PORT");
  });
});
