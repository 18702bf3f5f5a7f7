import { afterAll, describe, expect, test } from "bun:test";
import { openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch } from "../../shared/db/messages.ts";
import { readMarker, receiptsOf } from "../../shared/db/receipts.ts";
import type { NewEvent } from "../../shared/events/registry.ts";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createReceipts, ReadError } from "./receipts.ts";

// services/ws/receipts.ts against PostgreSQL, with the event pipeline faked at its one function
// (publish): what is announced, when a failed announcement is tried again, and that a marker
// moves only once its event was published.

const handle = openPostgres(process.env.DATABASE_URL!, { max: 2 });
afterAll(() => handle.close());
const E = 1_700_000_000_000_000;
const tag = () => crypto.randomUUID().slice(0, 8);

function setup(publish: (e: NewEvent) => Promise<unknown>, now?: () => number) {
  const published: NewEvent[] = [];
  const r = createReceipts({
    db: () => handle.db,
    awaitWritten: async () => {},
    publish: async (e) => {
      await publish(e);
      published.push(e);
    },
    log: silentLogger,
    metrics: createMetrics("test"),
    tickMs: 3_600_000, // the tests flush, or tick with their own clock
    now,
  });
  return { r, published };
}

const msg = (from: string, to: string, ts: number): ChatMessage => ({ msgId: `m-${tag()}`, id: tag(), from, to, body: "x", ts });

describe("delivered receipts", () => {
  test("one event per (user, conversation) per round with the latest message and every sender; own messages and events are not deliveries", async () => {
    const { r, published } = setup(async () => {});
    const [a, b, c] = [`a-${tag()}`, `b-${tag()}`, `c-${tag()}`];
    const m1 = msg(a, b, 1000);
    const m2 = msg(a, b, 2000);
    r.delivered(b, m2);
    r.delivered(b, m1); // older: the marker stays at m2
    r.delivered(a, m1); // a's own message
    r.delivered(b, { ...msg(a, b, 3000), kind: "edit" }); // an event
    r.delivered(c, { ...msg(a, c, 500) });
    await r.flush();
    expect(published.map((e) => [e.kind, e.from, e.to, e.ref, e.data]).sort()).toEqual(
      [
        ["delivered", b, a, m2.msgId, { refTs: 2000, rcpt: [a] }],
        ["delivered", c, a, expect.any(String), { refTs: 500, rcpt: [a] }],
      ].sort(),
    );
    expect((await receiptsOf(handle.db, conversationKey(m1), [b]))[b]!.delivered).toEqual({ msgId: m2.msgId, ts: 2000 });
    // Noted again without moving: nothing announced.
    r.delivered(b, m1);
    await r.flush();
    expect(published).toHaveLength(2);
    await r.stop();
  });

  test("a direct conversation with a user and a group of the same name are noted apart", async () => {
    const { r, published } = setup(async () => {});
    const [a, b] = [`a-${tag()}`, `b-${tag()}`];
    const direct = msg(a, b, 1000);
    const inGroup: ChatMessage = { msgId: `m-${tag()}`, id: "g", from: `x-${tag()}`, group: a, body: "x", ts: 2000 };
    r.delivered(b, direct);
    r.delivered(b, inGroup);
    await r.flush();
    expect(published.map((e) => [e.to ?? null, e.group ?? null, e.ref]).sort()).toEqual(
      [
        [a, null, direct.msgId],
        [null, a, inGroup.msgId],
      ].sort(),
    );
    await r.stop();
  });

  test("an announcement that fails moves nothing and is tried again next round, merged with what came meanwhile", async () => {
    let fail = true;
    const { r, published } = setup(async () => {
      if (fail) throw new Error("queue down");
    });
    const [a, b, d, g] = [`a-${tag()}`, `b-${tag()}`, `d-${tag()}`, `g_${tag()}`];
    const m1: ChatMessage = { msgId: `m-${tag()}`, id: "1", from: a, group: g, body: "x", ts: 1000 };
    r.delivered(b, m1);
    await r.flush();
    expect(published).toEqual([]);
    expect((await receiptsOf(handle.db, `g:${g}`, [b]))[b]!.delivered).toBeNull();
    fail = false;
    const m2: ChatMessage = { msgId: `m-${tag()}`, id: "2", from: d, group: g, body: "x", ts: 2000 };
    r.delivered(b, m2);
    await r.flush();
    // One event for the group: the latest message, and both senders (a's from the failed round).
    expect(published.map((e) => [e.from, e.group, e.ref, (e.data!.rcpt as string[]).sort()])).toEqual([[b, g, m2.msgId, [a, d].sort()]]);
    expect((await receiptsOf(handle.db, `g:${g}`, [b]))[b]!.delivered).toEqual({ msgId: m2.msgId, ts: 2000 });
    await r.stop();
  });
});

describe("when delivered receipts go out", () => {
  // A clock the test moves; r.tick() is one round of the gateway's timer (every DELIVERED_TICK_MS).
  function clocked() {
    const clock = { t: 1_000_000 };
    const { r, published } = setup(async () => {}, () => clock.t);
    const delivered = (step: number, user: string, m: ChatMessage) => {
      clock.t += step;
      r.delivered(user, m);
    };
    const tickAt = async (t: number) => {
      clock.t = t;
      await r.tick();
    };
    return { r, published, clock, delivered, tickAt };
  }

  test("once a conversation is quiet for DELIVERED_QUIET_MS: not while the burst goes on, then the latest message", async () => {
    const { r, published, clock, delivered, tickAt } = clocked();
    const [a, b] = [`a-${tag()}`, `b-${tag()}`];
    const t0 = clock.t;
    const ms = [1, 2, 3].map((i) => msg(a, b, 1000 * i));
    for (const m of ms) delivered(100, b, m); // t0+100, +200, +300
    await tickAt(t0 + 300 + 249);
    expect(published).toEqual([]);
    await tickAt(t0 + 300 + 250);
    expect(published.map((e) => [e.kind, e.from, e.to, e.ref])).toEqual([["delivered", b, a, ms[2]!.msgId]]);
    await r.stop();
  });

  test("a conversation that never goes quiet: one after DELIVERED_MAX_WAIT_MS, not one per second", async () => {
    const { r, published, clock, delivered, tickAt } = clocked();
    const [a, b] = [`a-${tag()}`, `b-${tag()}`];
    const t0 = clock.t;
    // a message every 100 ms for 12 s, the timer's round every 250 ms
    let i = 0;
    let latest: ChatMessage | undefined;
    const announced: Array<[number, boolean]> = [];
    for (let t = t0 + 250; t <= t0 + 12_000; t += 250) {
      while (clock.t + 100 <= t) delivered(100, b, (latest = msg(a, b, 10 * ++i)));
      const before = published.length;
      await tickAt(t);
      if (published.length > before) announced.push([t - t0, published.at(-1)!.ref === latest!.msgId]);
    }
    // The first delivery was noted at t0+100: due at t0+5100, announced at the next round (t0+5250),
    // up to the latest message; the next one noted at t0+5300 is due at t0+10,300.
    expect(announced).toEqual([
      [5250, true],
      [10_500, true],
    ]);
    await r.stop();
  });

  test("never two within DELIVERED_INTERVAL_MS for one conversation; other conversations are not held back", async () => {
    const { r, published, clock, delivered, tickAt } = clocked();
    const [a, b, c] = [`a-${tag()}`, `b-${tag()}`, `c-${tag()}`];
    const t0 = clock.t;
    delivered(0, b, msg(a, b, 1));
    await tickAt(t0 + 250);
    expect(published).toHaveLength(1);
    // quiet again 250 ms later, but the last announcement was 500 ms ago
    delivered(250, b, msg(a, b, 2)); // t0+500
    delivered(0, c, msg(a, c, 3));
    await tickAt(t0 + 750);
    expect(published.map((e) => e.from)).toEqual([b, c]);
    await tickAt(t0 + 1000);
    expect(published.map((e) => e.from)).toEqual([b, c]);
    await tickAt(t0 + 1250);
    expect(published.map((e) => [e.from, e.data!.refTs])).toEqual([
      [b, 1],
      [c, 3],
      [b, 2],
    ]);
    await r.stop();
  });

  test("a failed announcement keeps its place: due again at the next round", async () => {
    let fail = true;
    const clock = { t: 5_000_000 };
    const { r, published } = setup(
      async () => {
        if (fail) throw new Error("queue down");
      },
      () => clock.t,
    );
    const [a, b] = [`a-${tag()}`, `b-${tag()}`];
    r.delivered(b, msg(a, b, 7));
    clock.t += 250;
    await r.tick();
    expect(published).toEqual([]);
    fail = false;
    clock.t += 250;
    await r.tick();
    expect(published.map((e) => [e.from, e.data!.refTs])).toEqual([[b, 7]]);
    await r.stop();
  });
});

describe("read receipts", () => {
  test("the event first, then the marker: a failed announcement leaves the marker; the retry is the same event (same key)", async () => {
    let fail = true;
    const { r, published } = setup(async () => {
      if (fail) throw new Error("queue down");
    });
    const [a, b] = [`a-${tag()}`, `b-${tag()}`];
    const m = msg(a, b, 1000);
    const conv = conversationKey(m);
    await insertBatch(handle.db, [m], [
      { user: a, position: { epoch: E, pos: 1 }, msgId: m.msgId, conv },
      { user: b, position: { epoch: E, pos: 1 }, msgId: m.msgId, conv },
    ]);
    const err = await r.read(b, { type: "read", to: a, cursor: `${E}.1` }).catch((e) => e);
    expect(err).toBeInstanceOf(ReadError);
    expect(err.code).toBe("unavailable");
    expect(await readMarker(handle.db, b, conv)).toBeNull();
    fail = false;
    await r.read(b, { type: "read", to: a, cursor: `${E}.1` });
    expect(published.map((e) => [e.kind, e.from, e.to, e.ref, e.key, e.data])).toEqual([
      ["read", b, a, m.msgId, `${conv}\n${E}.1`, { refTs: 1000, upTo: `${E}.1`, rcpt: [b, a] }],
    ]);
    expect(await readMarker(handle.db, b, conv)).toEqual({ epoch: E, pos: 1 });
    // Again: the marker does not move, nothing is announced.
    await r.read(b, { type: "read", to: a, cursor: `${E}.1` });
    expect(published).toHaveLength(1);
    // A cursor of another conversation, or of no entry: bad_request.
    for (const f of [{ type: "read" as const, to: `x-${tag()}`, cursor: `${E}.1` }, { type: "read" as const, to: a, cursor: `${E}.2` }]) {
      const e = await r.read(b, f).catch((x) => x);
      expect([e instanceof ReadError, e.code]).toEqual([true, "bad_request"]);
    }
    await r.stop();
  });
});
