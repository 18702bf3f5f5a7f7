import { afterEach, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { Connections } from "./connections.ts";
import { createPeerLinks, forwardBodies, parseForward, type ForwardBody, type LinkReply } from "./links.ts";
import { createRouter, type Delivery } from "./router.ts";

// The links between gateways (links.ts) against real Bun WebSocket servers on loopback.

const msg = (i: number, body = `hi ${i}`): ChatMessage => ({ msgId: `m${i}`, id: `c${i}`, from: "a", to: "b", body, ts: 1 });
const delivery = (i: number, body?: string): Delivery => ({ message: msg(i, body), positions: { b: `1.${i}` } });
const SECRET = "s".repeat(32);

const servers: Server<unknown>[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.stop(true);
});

/** A peer taking links (with the secret) and recording every frame, or answering 404 to them. */
function peer(opts: { links: boolean; reply?: (frame: string) => string | undefined }) {
  const frames: string[] = [];
  const auth: string[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req, srv) {
      auth.push(req.headers.get("authorization") ?? "");
      if (opts.links && new URL(req.url).pathname === "/internal/link" && srv.upgrade(req)) return undefined;
      return Response.json({ error: "not found" }, { status: 404 });
    },
    websocket: {
      message(ws, m) {
        frames.push(String(m));
        const r = opts.reply?.(String(m));
        if (r) ws.send(r);
      },
    },
  });
  servers.push(server as Server<unknown>);
  return { url: `http://127.0.0.1:${server.port}`, frames, auth };
}

const until = async (what: string, ok: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
};

const body = (n: number, from = 0): ForwardBody => ({ body: JSON.stringify({ deliveries: Array.from({ length: n }, (_, i) => delivery(from + i)) }), n });

describe("forward bodies", () => {
  test("without a limit: one body, the forward as JSON", () => {
    const ds = [delivery(1), delivery(2)];
    const { bodies, tooLarge } = forwardBodies(ds, []);
    expect(bodies).toEqual([{ body: JSON.stringify({ deliveries: ds }), n: 2 }]);
    expect(tooLarge.deliveries).toEqual([]);
  });

  test("with a limit: split in order into bodies below it; an item larger than any body is handed back", () => {
    const ds = Array.from({ length: 300 }, (_, i) => delivery(i));
    const big = delivery(999, "x".repeat(5000));
    const typing = { users: ["b"], frame: { type: "typing" as const, from: "a", to: "b", ttlMs: 5000 } };
    const { bodies, tooLarge } = forwardBodies([...ds.slice(0, 150), big, ...ds.slice(150)], [typing], 4000);
    expect(bodies.length).toBeGreaterThan(5);
    for (const b of bodies) expect(b.body.length).toBeLessThanOrEqual(4000);
    const parsed = bodies.map((b) => parseForward(JSON.parse(b.body))!);
    expect(parsed.every((p) => p !== null)).toBe(true);
    expect(parsed.flatMap((p) => p.deliveries)).toEqual(ds);
    expect(bodies.map((b) => b.n)).toEqual(parsed.map((p) => p.deliveries.length));
    expect(parsed.flatMap((p) => p.ephemeral)).toEqual([typing]);
    expect(tooLarge.deliveries).toEqual([big]);
  });
});

describe("parseForward", () => {
  test("takes a well-formed forward, refuses malformed ones", () => {
    expect(parseForward({ deliveries: [delivery(1)] })).toEqual({ deliveries: [delivery(1)], ephemeral: [] });
    for (const bad of [
      null,
      5,
      { deliveries: 5 },
      { deliveries: [{ message: msg(1), positions: { b: "1" } }] },
      { deliveries: [{ message: { ...msg(1), ts: "1" }, positions: { b: "1.1" } }] },
      { deliveries: [{ message: { ...msg(1), group: "g" }, positions: { b: "1.1" } }] },
      { deliveries: [], ephemeral: [{ users: "b", frame: {} }] },
    ]) {
      expect(parseForward(bad)).toBeNull();
    }
  });
});

describe("peer links", () => {
  test("frames reach the peer in order over one socket carrying the secret; its replies come back", async () => {
    const p = peer({ links: true, reply: (f) => (f.includes('"m3"') ? JSON.stringify({ missing: 1 }) : undefined) });
    const replies: LinkReply[] = [];
    const links = createPeerLinks({ secret: SECRET, log: silentLogger, onReply: (_u, r) => replies.push(r), onSent: () => {}, onUnsent: () => {}, onDropped: () => {} });
    // the first frames wait for the link to open
    expect(links.send(p.url, [body(2, 0), body(2, 2)])).toBe(true);
    await until("link open", () => links.openPeers().length === 1);
    expect(links.send(p.url, [body(1, 4)])).toBe(true);
    await until("3 frames", () => p.frames.length === 3);
    expect(p.frames.map((f) => (JSON.parse(f).deliveries as Delivery[]).map((d) => d.message.msgId))).toEqual([["m0", "m1"], ["m2", "m3"], ["m4"]]);
    expect(p.auth).toEqual([`Bearer ${SECRET}`]);
    await until("reply", () => replies.length === 1);
    expect(replies).toEqual([{ missing: 1 }]);
    links.stop();
  });

  test("a peer without links: what waited is handed back, HTTP is used for a while, then a link is tried again", async () => {
    const p = peer({ links: false });
    const unsent: ForwardBody[] = [];
    const links = createPeerLinks({ secret: SECRET, log: silentLogger, onReply: () => {}, onSent: () => {}, onUnsent: (_u, b) => unsent.push(...b), onDropped: () => {}, retryMs: 300 });
    expect(links.send(p.url, [body(1, 0)])).toBe(true);
    await until("handed back", () => unsent.length === 1);
    expect(unsent[0]!.n).toBe(1);
    expect(links.send(p.url, [body(1, 1)])).toBe(false);
    expect(p.auth.length).toBe(1);
    await Bun.sleep(350);
    expect(links.send(p.url, [body(1, 2)])).toBe(true);
    await until("second attempt refused", () => unsent.length === 2);
    expect(p.auth.length).toBe(2);
    links.stop();
  });

  test("a peer that accepts but never answers the handshake: the link is given up and what waited is handed back", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const unsent: ForwardBody[] = [];
      const links = createPeerLinks({ secret: SECRET, log: silentLogger, onReply: () => {}, onSent: () => {}, onUnsent: (_u, b) => unsent.push(...b), onDropped: () => {}, openTimeoutMs: 200 });
      const url = `http://127.0.0.1:${silent.port}`;
      expect(links.send(url, [body(2)])).toBe(true);
      await until("handed back", () => unsent.length === 1);
      expect(links.send(url, [body(1)])).toBe(false);
      links.stop();
    } finally {
      silent.stop(true);
    }
  });

  test("a peer that stopped reading: frames past the buffer limit are dropped and reported, not queued", async () => {
    // a stand-in socket whose unsent bytes stay high
    const sent: string[] = [];
    const fake = Object.assign(new EventTarget(), { bufferedAmount: 0, send: (s: string) => void sent.push(s), close() {} });
    const dropped: number[] = [];
    const links = createPeerLinks({
      secret: SECRET,
      log: silentLogger,
      onReply: () => {},
      onSent: () => {},
      onUnsent: () => {},
      onDropped: (_u, b) => dropped.push(...b.map((x) => x.n)),
      maxBuffered: 1000,
      connect: () => fake as unknown as WebSocket,
    });
    links.send("http://peer", [body(2)]);
    fake.dispatchEvent(new Event("open"));
    expect(sent.length).toBe(1);
    fake.bufferedAmount = 5000;
    links.send("http://peer", [body(3)]);
    expect(sent.length).toBe(1);
    expect(dropped).toEqual([3]);
    fake.bufferedAmount = 0;
    links.send("http://peer", [body(1)]);
    expect(sent.length).toBe(2);
    links.stop();
  });
});

describe("router over links", () => {
  /** A router whose directory puts user b on the peer at `peerUrl`. */
  async function router(fetched: string[], peerUrl: string) {
    const directory = createMemoryDirectory();
    const metrics = createMetrics("links");
    const r = createRouter({
      connections: { of: () => undefined } as unknown as Connections,
      stream: { offer() {} } as never,
      directory,
      self: { id: "self", url: "http://self" },
      internalSecret: SECRET,
      log: silentLogger,
      metrics,
      fetch: (async (url: string, init: RequestInit) => {
        fetched.push(`${url} ${init.body}`);
        return Response.json({ missing: 0 });
      }) as never,
    });
    await directory.heartbeat({ id: "peer", url: peerUrl }, 60_000);
    await directory.setPresence("peer", ["b"], []);
    return { r, directory, metrics };
  }
  const forwardedTotal = async (metrics: ReturnType<typeof createMetrics>) => Number(/ws_forwarded_messages_total\{[^}]*\} (\d+)/.exec(await (await metrics.render()).text())?.[1] ?? 0);

  test("forwards go over the link, not HTTP, and are counted", async () => {
    const p = peer({ links: true });
    const fetched: string[] = [];
    const t = await router(fetched, p.url);
    await Promise.all([1, 2, 3].map((i) => t.r.route(msg(i), { a: { epoch: 1, pos: i }, b: { epoch: 1, pos: i } })));
    await until("frames", () => p.frames.flatMap((f) => JSON.parse(f).deliveries).length === 3);
    expect(p.frames.flatMap((f) => (JSON.parse(f).deliveries as Delivery[]).map((d) => [d.message.msgId, d.positions]))).toEqual([
      ["m1", { b: "1.1" }],
      ["m2", { b: "1.2" }],
      ["m3", { b: "1.3" }],
    ]);
    expect(fetched).toEqual([]);
    expect(await forwardedTotal(t.metrics)).toBe(3);
    t.r.stop();
  });

  test("a peer that cannot take a link gets the same forwards over HTTP", async () => {
    const p = peer({ links: false });
    const fetched: string[] = [];
    const t = await router(fetched, p.url);
    await t.r.route(msg(1), { a: { epoch: 1, pos: 1 }, b: { epoch: 1, pos: 1 } });
    await until("handed to HTTP", () => fetched.length === 1);
    await t.r.route(msg(2), { a: { epoch: 1, pos: 2 }, b: { epoch: 1, pos: 2 } });
    await until("HTTP again", () => fetched.length === 2);
    expect(fetched.map((f) => f.split(" ")[0])).toEqual([`${p.url}/internal/deliver`, `${p.url}/internal/deliver`]);
    expect(fetched.map((f) => JSON.parse(f.slice(f.indexOf(" ") + 1)).deliveries[0].message.msgId)).toEqual(["m1", "m2"]);
    expect(p.frames).toEqual([]);
    expect(await forwardedTotal(t.metrics)).toBe(2);
    t.r.stop();
  });
});
