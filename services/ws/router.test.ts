import { describe, expect, test } from "bun:test";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { Conn, Connections } from "./connections.ts";
import type { StreamItem } from "./delivery.ts";
import { createRouter, type Delivery } from "./router.ts";

// router.ts with the in-memory directory and a fake peer (its fetch) at the far side, forwarding
// over HTTP (links: links.test.ts).

const msg = (i: number): ChatMessage => ({ msgId: `m${i}`, id: `c${i}`, from: "a", to: "b", body: `hi ${i}`, ts: 1 });

function setup(peer: (body: { deliveries: Delivery[] }) => Promise<Response>, opts: { maxBacklog?: number } = {}) {
  const directory = createMemoryDirectory();
  const offered: Array<{ user: string; item: StreamItem }> = [];
  const local = new Map<string, Set<Conn>>();
  const connections = { of: (u: string) => local.get(u) } as unknown as Connections;
  const metrics = createMetrics("test");
  const calls: Delivery[][] = [];
  const router = createRouter({
    connections,
    stream: { offer: (ws: Conn, item: StreamItem) => offered.push({ user: ws.data.user, item }) } as never,
    directory,
    self: { id: "self", url: "http://self" },
    internalSecret: "s".repeat(32),
    log: silentLogger,
    metrics,
    maxBacklog: opts.maxBacklog,
    forwardOver: "http",
    fetch: (async (_url: string, init: RequestInit) => {
      const body = JSON.parse(String(init.body));
      calls.push(body.deliveries);
      return peer(body);
    }) as never,
  });
  return { router, directory, offered, local, metrics, calls };
}

const ok = () => Promise.resolve(Response.json({ missing: 0 }));

describe("router", () => {
  test("local users get the item at their own position; the sending connection gets a silent one", async () => {
    const t = setup(ok);
    const sender = { data: { user: "a" } } as Conn;
    const other = { data: { user: "a" } } as Conn;
    const b = { data: { user: "b" } } as Conn;
    t.local.set("a", new Set([sender, other]));
    t.local.set("b", new Set([b]));
    await t.router.route(msg(1), { a: { epoch: 1, pos: 7 }, b: { epoch: 2, pos: 3 } }, sender);
    expect(t.offered.map((o) => [o.user, o.item.position.pos, o.item.head === null])).toEqual([
      ["a", 7, true],
      ["a", 7, false],
      ["b", 3, false],
    ]);
    t.router.stop();
  });

  test("remote users are forwarded to their instance with their positions, one request per tick", async () => {
    const t = setup(ok);
    await t.directory.heartbeat({ id: "peer", url: "http://peer" }, 60_000);
    await t.directory.setPresence("peer", ["b"], []);
    await Promise.all([1, 2, 3].map((i) => t.router.route(msg(i), { a: { epoch: 1, pos: i }, b: { epoch: 5, pos: i } })));
    expect(t.calls.length).toBe(1);
    expect(t.calls[0]!.map((d) => d.positions)).toEqual([{ b: "5.1" }, { b: "5.2" }, { b: "5.3" }]);
    expect(t.calls[0]!.every((d) => !("rcpt" in d.message))).toBe(true);
    t.router.stop();
  });

  test("a peer that keeps failing is given up after a few attempts, not retried for long", async () => {
    const t = setup(() => Promise.resolve(new Response("no", { status: 500 })));
    await t.directory.heartbeat({ id: "peer", url: "http://peer" }, 60_000);
    await t.directory.setPresence("peer", ["b"], []);
    await t.router.route(msg(1), { b: { epoch: 1, pos: 1 } });
    expect(t.calls.length).toBe(3);
    expect(await t.metrics.render().then((r) => r.text())).toContain('ws_forward_failures_total{service="test"} 1');
    t.router.stop();
  });

  test("a peer that never answers holds at most maxBacklog deliveries; the rest are dropped and counted", async () => {
    let release!: () => void;
    const hang = new Promise<Response>((r) => (release = () => r(Response.json({ missing: 0 }))));
    const t = setup(() => hang, { maxBacklog: 10 });
    await t.directory.heartbeat({ id: "peer", url: "http://peer" }, 60_000);
    await t.directory.setPresence("peer", ["b"], []);
    const routes = Array.from({ length: 50 }, (_, i) => t.router.route(msg(i), { b: { epoch: 1, pos: i + 1 } }));
    await Bun.sleep(20);
    const text = await t.metrics.render().then((r) => r.text());
    expect(text).toContain('ws_forward_dropped_total{service="test"} 40');
    release();
    await Promise.all(routes);
    t.router.stop();
  });

  test("a forwarded delivery for a user named __proto__ reaches that user (positions are not a plain object's keys)", () => {
    const t = setup(ok);
    const p = { data: { user: "__proto__" } } as Conn;
    t.local.set("__proto__", new Set([p]));
    const missing = t.router.deliverForwarded(JSON.parse('{"message":{"msgId":"m1","id":"c1","from":"a","to":"__proto__","body":"hi","ts":1},"positions":{"__proto__":"3.4"}}'));
    expect(missing).toBe(0);
    expect(t.offered.map((o) => [o.user, o.item.position])).toEqual([["__proto__", { epoch: 3, pos: 4 }]]);
    t.router.stop();
  });

  test("a forwarded delivery is offered at the positions it names", () => {
    const t = setup(ok);
    const b = { data: { user: "b" } } as Conn;
    t.local.set("b", new Set([b]));
    const missing = t.router.deliverForwarded({ message: msg(1), positions: { b: "9.4", c: "1.1" } });
    expect(missing).toBe(1);
    expect(t.offered.map((o) => o.item.position)).toEqual([{ epoch: 9, pos: 4 }]);
    t.router.stop();
  });
});

describe("location cache (fed by the directory's change feed)", () => {
  const P = { id: "peer", url: "http://peer" };
  const Q = { id: "q", url: "http://q" };

  test("a located user is served from the cache until the feed reports a change for them", async () => {
    const t = setup(ok);
    let lookups = 0;
    const inner = t.directory.lookup.bind(t.directory);
    t.directory.lookup = (users) => (lookups++, inner(users));
    await t.directory.heartbeat(P, 60_000);
    await t.directory.heartbeat(Q, 60_000);
    await t.directory.setPresence(P.id, ["b"], []);
    expect((await t.router.locate(["b"])).b).toEqual([P]);
    expect((await t.router.locate(["b"])).b).toEqual([P]);
    expect(lookups).toBe(1);
    // b moves: the feed drops the entry and the next locate asks again
    await t.directory.setPresence(P.id, [], ["b"]);
    await t.directory.setPresence(Q.id, ["b"], []);
    expect((await t.router.locate(["b"])).b).toEqual([Q]);
    expect(lookups).toBe(2);
    t.router.stop();
  });

  test("a lookup answered after a change it may predate is not cached", async () => {
    const t = setup(ok);
    await t.directory.heartbeat(P, 60_000);
    await t.directory.heartbeat(Q, 60_000);
    await t.directory.setPresence(P.id, ["b"], []);
    let lookups = 0;
    const inner = t.directory.lookup.bind(t.directory);
    t.directory.lookup = async (users) => {
      lookups++;
      const r = await inner(users);
      // b moves while this (now stale) answer is on its way back
      if (lookups === 1) await t.directory.setPresence(Q.id, ["b"], []);
      return r;
    };
    expect((await t.router.locate(["b"])).b).toEqual([P]);
    const again = await t.router.locate(["b"]);
    expect(lookups).toBe(2);
    expect(again.b!.map((i) => i.id).sort()).toEqual(["peer", "q"]);
    t.router.stop();
  });

  test("nothing is cached while the feed is not live", async () => {
    const t = setup(ok);
    let lookups = 0;
    const inner = t.directory.lookup.bind(t.directory);
    t.directory.lookup = (users) => (lookups++, inner(users));
    t.directory.watch = () => ({ live: () => false, stop() {} });
    const router = createRouter({
      connections: { of: () => undefined } as unknown as Connections,
      stream: { offer() {} } as never,
      directory: t.directory,
      self: { id: "self", url: "http://self" },
      internalSecret: "s".repeat(32),
      log: silentLogger,
      metrics: createMetrics("test2"),
    });
    await t.directory.heartbeat(P, 60_000);
    await t.directory.setPresence(P.id, ["b"], []);
    await router.locate(["b"]);
    await router.locate(["b"]);
    expect(lookups).toBe(2);
    router.stop();
    t.router.stop();
  });
});
