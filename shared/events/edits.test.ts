import { expect, test } from "bun:test";
import { useTempPglite } from "../../test/pglite.ts";
import { conversationKey, insertBatch, readRecords } from "../db/messages.ts";
import { SendError, type ChatMessage } from "../protocol.ts";
import type { EventContext } from "./kind.ts";
import { kindOf, newEvent, persistEvents } from "./registry.ts";

// The edit and delete kinds against a real (embedded) database: acceptance rules and what persist
// does, in every order batches may be written in.

const pg = useTempPglite("chat-edits-test-");

const HOUR = 3600_000;
const T0 = 1_800_000_000_000;
let n = 0;
const message = (from: string, to: string, body = "hello", ts = T0): ChatMessage => ({ msgId: `m${++n}-${crypto.randomUUID().slice(0, 6)}`, id: `c${n}`, from, to, body, ts });

/** Writes records as persist does: the row, one stream entry per user, and the kinds' hooks. */
async function write(records: ChatMessage[], users: string[] = []) {
  const entries = records.flatMap((m, i) => [m.from, ...users].map((user) => ({ user, position: { epoch: 1, pos: ++n * 10 + i }, msgId: m.msgId, conv: conversationKey(m), kind: m.kind ?? "message" })));
  await insertBatch(pg.handle().db, records, entries, (tx) => persistEvents(tx, records));
}

const ctx = (now: number): EventContext => ({ db: pg.handle().db, groupMembers: async () => new Map(), awaitWritten: async () => {}, editWindowMs: 48 * HOUR, now: () => now });
const change = (kind: "edit" | "delete", m: ChatMessage, key: string, ts: number, body = "") => newEvent({ kind, from: m.from, key: `${key}\n${m.msgId}`, ref: m.msgId, body, ts });
const refusal = (p: Promise<unknown>) => p.then(() => "accepted", (e) => (e instanceof SendError ? e.code : `threw ${e}`));
const row = async (id: string) => (await readRecords(pg.handle().db, [id])).get(id)!;

test("accept: the sender's own message within the window; its conversation and users; refusals with their codes", async () => {
  const m = message("alice", "bob");
  await write([m], ["bob"]);
  const e = change("edit", m, "k", T0 + HOUR, "new");
  expect(await kindOf("edit")!.accept(e, ctx(T0 + HOUR))).toEqual(["alice", "bob"]);
  expect(e.to).toBe("bob");
  expect(await refusal(kindOf("edit")!.accept(change("edit", m, "k2", T0), ctx(T0 + 48 * HOUR)))).toBe("too_old");
  expect(await refusal(kindOf("delete")!.accept(change("delete", m, "k3", T0), ctx(T0 + 48 * HOUR + 1)))).toBe("too_old");
  expect(await refusal(kindOf("delete")!.accept(newEvent({ kind: "delete", from: "bob", key: "k4", ref: m.msgId }), ctx(T0)))).toBe("forbidden");
  expect(await refusal(kindOf("delete")!.accept(newEvent({ kind: "delete", from: "alice", key: "k5", ref: "unknown" }), ctx(T0)))).toBe("not_found");
  // An event is not a message one can edit.
  await write([e]);
  expect(await refusal(kindOf("edit")!.accept(newEvent({ kind: "edit", from: "alice", key: "k6", ref: e.msgId, body: "x" }), ctx(T0)))).toBe("not_found");
  // A window of 0 allows nothing.
  expect(await refusal(kindOf("edit")!.accept(change("edit", m, "k7", T0), { ...ctx(T0), editWindowMs: 0 }))).toBe("too_old");
});

test("a retry of a stored deletion is accepted again, even past the window; another deletion is not_found", async () => {
  const m = message("alice", "bob");
  await write([m], ["bob"]);
  const d = change("delete", m, "d1", T0 + 1);
  await write([d]);
  expect(await kindOf("delete")!.accept({ ...d }, ctx(T0 + 100 * HOUR))).toEqual(["alice", "bob"]);
  expect(await refusal(kindOf("delete")!.accept(change("delete", m, "d2", T0 + 2), ctx(T0 + 2)))).toBe("not_found");
});

test("persist: the latest edit wins in either write order; a deletion wins over every edit and blanks their texts, in either order", async () => {
  const orders: Array<(es: ChatMessage[]) => ChatMessage[][]> = [
    (es) => es.map((e) => [e]), // one batch each, oldest first
    (es) => es.toReversed().map((e) => [e]), // newest first
    (es) => [es], // all in one batch
  ];
  for (const order of orders) {
    const m = message("alice", "bob");
    await write([m]);
    const edits = [change("edit", m, "e1", T0 + 1, "first"), change("edit", m, "e2", T0 + 2, "second"), change("edit", m, "e3", T0 + 3, "third")];
    for (const b of order(edits)) await write(b);
    expect(await row(m.msgId)).toMatchObject({ body: "third", editedAt: T0 + 3 });

    const m2 = message("alice", "bob");
    await write([m2]);
    const events = [change("edit", m2, "e1", T0 + 1, "edited"), change("delete", m2, "d", T0 + 2), change("edit", m2, "e2", T0 + 3, "edited later")];
    for (const b of order(events)) await write(b);
    const stored = await readRecords(pg.handle().db, [m2.msgId, ...events.map((e) => e.msgId)]);
    for (const r of stored.values()) expect(r.body).toBe("");
    expect(stored.get(m2.msgId)).toMatchObject({ deletedAt: T0 + 2 });
    expect(stored.get(m2.msgId)!.editedAt).toBeUndefined();
  }
});

test("persist hooks are idempotent: writing a batch again changes nothing", async () => {
  const m = message("alice", "bob");
  await write([m]);
  const e = change("edit", m, "e", T0 + 5, "once");
  await write([e]);
  await write([change("edit", m, "older", T0 + 1, "older")]);
  await write([e]);
  expect(await row(m.msgId)).toMatchObject({ body: "once", editedAt: T0 + 5 });
});
