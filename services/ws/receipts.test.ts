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

function setup(publish: (e: NewEvent) => Promise<unknown>) {
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
    intervalMs: 3_600_000, // flushed by the tests
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
