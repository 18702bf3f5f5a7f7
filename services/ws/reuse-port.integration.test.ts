import { afterAll, beforeAll, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser } from "../../test/client.ts";
import { spawnService, startCluster, stopService, waitHealthy, type Cluster, type ServiceProcess } from "../../scripts/cluster.ts";
import { tcpMigrateReq } from "./reuse-port.ts";

// Two gateway processes sharing one client port (REUSE_PORT=1), each with its own internal
// listener (INTERNAL_PORT=0: any free port) that the directory names as its address. Clients
// connect to the shared port and the kernel spreads them; a message between users held by
// different processes must reach its recipient through the internal forward, addressed to the
// right process (a forward landing on the wrong one would count in ws_forward_not_there_total).

const PAIRS = 100;
let cluster: Cluster;
let gateways: ServiceProcess[] = [];
let internalUrls: string[] = [];
let sharedUrl = "";
const clients: TestClient[] = [];

/** A port free right now (the two gateways then bind it together). */
function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** The internal API URL a gateway printed (`ws internal API on <url>`). */
const internalUrlOf = (p: ServiceProcess) => {
  const line = p.logs.find((l) => l.startsWith("ws internal API on "));
  if (!line) throw new Error(`${p.name} printed no internal API line:\n${p.logs.join("\n")}`);
  return line.slice("ws internal API on ".length).trim();
};

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  // unlabelled series carry only the default label: name{service="ws"} value
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{service="));
  return line ? Number(line.split(" ").pop()) : 0;
}

beforeAll(async () => {
  cluster = await startCluster({ ws: 0 });
  const port = freePort();
  const env = { ...cluster.env, HOST: "127.0.0.1", INTERNAL_PORT: "0", REUSE_PORT: "1" };
  gateways = await Promise.all([1, 2].map((i) => spawnService(`ws${i}`, "services/ws/index.ts", env, port)));
  internalUrls = gateways.map(internalUrlOf);
  sharedUrl = gateways[0]!.url;
  await Promise.all(gateways.map((g, i) => waitHealthy({ ...g, url: internalUrls[i]! })));
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(gateways.map((g) => stopService(g)));
  await cluster?.stop();
});

test("each warns at start exactly when this host would reset the handshakes queued at a dying gateway (net.ipv4.tcp_migrate_req 0)", () => {
  for (const g of gateways) expect(g.logs.some((l) => l.includes("net.ipv4.tcp_migrate_req is 0"))).toBe(tcpMigrateReq() === "0");
});

test("both gateways listen on the one client port; each internal API is its own port", () => {
  expect(gateways[1]!.url).toBe(sharedUrl);
  expect(new Set(internalUrls).size).toBe(2);
  expect(internalUrls).not.toContain(sharedUrl);
});

test("the client port does not serve /internal/*; the internal port serves nothing of the client API", async () => {
  const auth = { authorization: `Bearer ${cluster.internalSecret}`, "content-type": "application/json" };
  const onClient = await fetch(`${sharedUrl}/internal/deliver`, { method: "POST", headers: auth, body: '{"deliveries":[]}' });
  expect(onClient.status).toBe(404);
  const onInternal = await fetch(`${internalUrls[0]}/internal/deliver`, { method: "POST", headers: auth, body: '{"deliveries":[]}' });
  expect(onInternal.status).toBe(200);
  // malformed on the internal port: the route's own 400, nothing delivered
  const bad = await fetch(`${internalUrls[0]}/internal/deliver`, { method: "POST", headers: auth, body: '{"deliveries":5}' });
  expect(bad.status).toBe(400);
  expect((await fetch(`${internalUrls[0]}/api/users?ids=a`)).status).toBe(404);
  expect((await fetch(`${internalUrls[0]}/ws`)).status).toBe(404);
  expect((await fetch(`${internalUrls[1]}/health`)).status).toBe(200);
  expect((await fetch(`${sharedUrl}/health`)).status).toBe(200);
});

test(`${PAIRS} pairs on the shared port: the kernel spreads them over both processes and every message reaches its partner`, async () => {
  const pairs = await Promise.all(
    Array.from({ length: PAIRS }, async () => {
      const [a, b] = [uniqueUser("rpa"), uniqueUser("rpb")];
      const [ca, cb] = await Promise.all(
        [a, b].map(async (u) => {
          const c = await TestClient.connect(sharedUrl, u, await mintToken(u, cluster.jwtSecret));
          clients.push(c);
          c.send({ type: "ping" });
          await c.next((f) => f.type === "pong", "pong");
          return c;
        }),
      );
      return { ca: ca!, cb: cb! };
    }),
  );
  const held = await Promise.all(internalUrls.map((u) => metric(u, "ws_connections")));
  expect(held[0]! + held[1]!).toBe(2 * PAIRS);
  // each process holds some (all 200 on one: probability 2^-199)
  expect(held[0]).toBeGreaterThan(0);
  expect(held[1]).toBeGreaterThan(0);

  await Promise.all(
    pairs.map(async ({ ca, cb }, i) => {
      const body = `hello ${i}`;
      const got = cb.next((f) => f.type === "message" && f.from === ca.user, `message from ${ca.user}`);
      const ack = await ca.sendMessage({ to: cb.user }, body);
      expect(ack.type).toBe("ack");
      expect((await got).body).toBe(body);
    }),
  );
  const [fwd, notThere, failed] = await Promise.all(
    ["ws_forwarded_messages_total", "ws_forward_not_there_total", "ws_forward_failures_total"].map((m) => Promise.all(internalUrls.map((u) => metric(u, m)))),
  );
  // pairs split across the processes went through the forward (100 pairs all on one side: 2^-99) ...
  expect(fwd![0]! + fwd![1]!).toBeGreaterThan(0);
  // ... and every forward reached the process that holds its recipient
  expect(notThere).toEqual([0, 0]);
  expect(failed).toEqual([0, 0]);
}, 60_000);
