import { describe, expect, test } from "bun:test";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { Conn, Connections } from "./connections.ts";
import type { Delivery } from "./delivery.ts";
import { createGateway, MAX_QUEUED_BYTES } from "./gateway.ts";
import { deriveMsgId, type Pipeline } from "./pipeline.ts";
import type { PresenceWatch } from "./presence.ts";
import type { Receipts } from "./receipts.ts";

// gateway.ts driven through its WebSocket handlers, with fakes for the roles it calls.

function setup(opts: { register?: () => Promise<void>; sync?: () => Promise<void>; rate?: { perSec: number; burst: number } } = {}) {
  const calls: string[] = [];
  const gateway = createGateway({
    connections: { add: () => opts.register?.() ?? Promise.resolve(), remove: () => calls.push("remove"), all: () => [] } as unknown as Connections,
    pipeline: {
      send: async (m: { id: string }) => {
        calls.push(`send ${m.id}`);
        return { ts: 1, cursor: "1.1" };
      },
    } as unknown as Pipeline,
    stream: {
      init: async () => {},
      frame: () => {},
      sync: async () => {
        calls.push("sync");
        await opts.sync?.();
      },
      drop: () => calls.push("drop"),
    } as unknown as Delivery,
    receipts: { read: async () => {} } as unknown as Receipts,
    presence: {
      watch: async () => void calls.push("watch"),
      unwatch: () => calls.push("unwatch"),
    } as unknown as PresenceWatch,
    typing: async () => void calls.push("typing"),
    log: silentLogger,
    metrics: createMetrics("test"),
    rate: opts.rate ?? { perSec: 1000, burst: 1000 },
  });
  const sent: any[] = [];
  const ws = { data: gateway.connData({ user: "u", ver: 0, id: "j:t" }), send: (s: string) => sent.push(JSON.parse(s)), close: () => {} } as unknown as Conn;
  const h = gateway.websocket;
  return { gateway, ws, sent, calls, open: () => h.open!(ws), message: (s: string) => h.message!(ws, s), close: () => h.close!(ws, 1000, "") };
}

const settle = (ws: Conn) => ws.data.chain;

describe("gateway", () => {
  test("frames waiting behind a sync are not handled once the socket closed (no watch for a dead socket)", async () => {
    let finishSync!: () => void;
    const t = setup({ sync: () => new Promise<void>((r) => (finishSync = r)) });
    t.open();
    t.message(JSON.stringify({ type: "sync" }));
    t.message(JSON.stringify({ type: "watch", users: ["x"] }));
    t.message(JSON.stringify({ type: "send", id: "s1", to: "x", body: "hi" }));
    while (!t.calls.includes("sync")) await Bun.sleep(1);
    t.close();
    finishSync();
    await settle(t.ws);
    expect(t.calls).toEqual(["sync", "remove", "unwatch", "drop"]);
    t.message(JSON.stringify({ type: "ping" }));
    await settle(t.ws);
    expect(t.sent).toEqual([]);
  });

  test("a send while the connection cannot be registered is answered unavailable with its id", async () => {
    const t = setup({ register: () => Promise.reject(new Error("directory down")) });
    t.open();
    t.message(JSON.stringify({ type: "send", id: "s1", to: "x", body: "hi" }));
    t.message(JSON.stringify({ type: "ping" }));
    await settle(t.ws);
    expect(t.sent[0]).toMatchObject({ type: "error", id: "s1", code: "unavailable" });
    expect(t.sent[1]).toMatchObject({ type: "error", code: "unavailable" });
    expect(t.sent[1].id).toBeUndefined();
  });

  test("acks carry the message's cursor", async () => {
    const t = setup();
    t.open();
    t.message(JSON.stringify({ type: "send", id: "s1", to: "x", body: "hi" }));
    await settle(t.ws);
    while (t.sent.length === 0) await Bun.sleep(1);
    expect(t.sent[0]).toMatchObject({ type: "ack", id: "s1", ts: 1, cursor: "1.1" });
  });

  test("bytes waiting to be handled are bounded: past the bound frames get rate_limited", async () => {
    let finishSync!: () => void;
    const t = setup({ sync: () => new Promise<void>((r) => (finishSync = r)) });
    t.open();
    t.message(JSON.stringify({ type: "sync" }));
    const big = JSON.stringify({ type: "send", id: "b", to: "x", body: "x".repeat(4000) });
    const fit = Math.floor(MAX_QUEUED_BYTES / big.length);
    for (let i = 0; i < fit + 5; i++) t.message(big);
    const limited = t.sent.filter((f) => f.code === "rate_limited").length;
    expect(limited).toBeGreaterThanOrEqual(5);
    expect(t.ws.data.queuedBytes).toBeLessThanOrEqual(MAX_QUEUED_BYTES);
    while (!t.calls.includes("sync")) await Bun.sleep(1);
    finishSync();
    await settle(t.ws);
    expect(t.ws.data.queuedBytes).toBe(0);
  });

  test("a connection remembers at least its last 2,000 sends (a gap repair passes them silently), not every send", async () => {
    const t = setup({ rate: { perSec: 1e6, burst: 1e6 } });
    t.open();
    for (let i = 0; i < 5000; i++) {
      t.message(JSON.stringify({ type: "send", id: `s${i}`, to: "x", body: "hi" }));
      if (i % 500 === 499) await settle(t.ws);
    }
    await settle(t.ws);
    const own = t.ws.data.own;
    for (let i = 3000; i < 5000; i++) expect(own.has(deriveMsgId("u", `s${i}`, { to: "x" }))).toBe(true);
    expect(own.size).toBeLessThanOrEqual(4000);
    expect(own.has(deriveMsgId("u", "s0", { to: "x" }))).toBe(false);
  });
});
