import { expect, test } from "bun:test";
// @ts-expect-error: a plain ES module of the browser client
import { createStore } from "./client/store.js";

// Edits and deletions in the browser client's store (services/ws/client/store.js): whatever order
// event frames, acks and messages read from storage arrive in, it shows the server's state.

function memoryStorage() {
  const m = new Map<string, string>();
  return { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v), removeItem: (k: string) => void m.delete(k) };
}
let n = 0;
const msg = (from: string, to: string, body: string, cursor: string, extra: Record<string, unknown> = {}) => ({ type: "message", msgId: `m${++n}`, id: `c${n}`, from, to, body, ts: 1000, cursor, ...extra });
const ev = (kind: string, ref: string, ts: number, cursor: string, extra: Record<string, unknown> = {}) => ({ type: "event", kind, msgId: `e${++n}`, from: "bob", to: "me", ts, ref, cursor, ...extra });
const state = (s: any, msgId: string) => {
  const m = s.conv("d:bob").messages.find((x: { msgId: string }) => x.msgId === msgId);
  return { body: m.body, editedAt: m.editedAt, deletedAt: m.deletedAt };
};

test("edits: the newest by ts wins in any order; a deletion is final; the cursor follows event frames", () => {
  const s = createStore("me", memoryStorage());
  const m = msg("bob", "me", "one", "1.1");
  s.applyMessage(m);
  s.applyEvent(ev("edit", m.msgId, 3000, "1.3", { body: "three" }));
  s.applyEvent(ev("edit", m.msgId, 2000, "1.2", { body: "two" })); // older: ignored
  expect(state(s, m.msgId)).toEqual({ body: "three", editedAt: 3000, deletedAt: undefined });
  expect(s.cursor).toBe("1.2");
  s.applyEvent(ev("delete", m.msgId, 4000, "1.4"));
  s.applyEvent(ev("edit", m.msgId, 5000, "1.5", { body: "after" }));
  expect(state(s, m.msgId)).toEqual({ body: "", editedAt: undefined, deletedAt: 4000 });
  expect(s.cursor).toBe("1.5");
  // An unknown kind moves the cursor and nothing else.
  s.applyEvent({ ...ev("reaction", m.msgId, 6000, "1.6"), data: { x: 1 } });
  expect(s.cursor).toBe("1.6");
  expect(s.lastMessage(s.conv("d:bob")).deletedAt).toBe(4000);
});

test("a change before its message (history fetched later) waits for it; storage's state merges without going back", () => {
  const s = createStore("me", memoryStorage());
  const m = msg("bob", "me", "old text", "1.1");
  s.applyEvent(ev("edit", m.msgId, 3000, "1.7", { body: "new text" }));
  s.mergeHistory("d:bob", [m], null);
  expect(state(s, m.msgId)).toEqual({ body: "new text", editedAt: 3000, deletedAt: undefined });
  // History with an older edit state does not undo the newer one; a tombstone wins.
  s.mergeHistory("d:bob", [{ ...m, body: "older", editedAt: 2000 }], null);
  expect(state(s, m.msgId).body).toBe("new text");
  s.mergeHistory("d:bob", [{ ...m, body: "", deletedAt: 5000 }], null);
  expect(state(s, m.msgId)).toEqual({ body: "", editedAt: undefined, deletedAt: 5000 });
  // An edit read from storage after the deletion (body "" and deletedAt) counts as the deletion.
  const m2 = msg("bob", "me", "x", "1.8");
  s.applyMessage(m2);
  s.applyEvent(ev("edit", m2.msgId, 6000, "1.9", { body: "", deletedAt: 7000 }));
  expect(state(s, m2.msgId)).toEqual({ body: "", editedAt: undefined, deletedAt: 7000 });
});

test("one's own edit and deletion apply on their ack with the server's ts; a refusal leaves the message as it was; the cache keeps the state", () => {
  const storage = memoryStorage();
  const s = createStore("me", storage);
  const out = s.addOutgoing("d:bob", "typo");
  s.applyAck({ type: "ack", id: out.id, msgId: "mine1", ts: 1000, cursor: "1.1" });
  const [m] = s.conv("d:bob").messages;
  const edit = s.editFrame(m, "fixed");
  expect(edit).toEqual({ type: "edit", id: edit.id, msgId: "mine1", body: "fixed" });
  expect(m.pending).toBe("edit");
  s.applyAck({ type: "ack", id: edit.id, msgId: "ev1", ts: 2000, cursor: "1.2" });
  expect([m.body, m.editedAt, m.pending]).toEqual(["fixed", 2000, undefined]);
  expect(s.cursor).toBeNull(); // an ack is not a place to resume from

  const refused = s.editFrame(m, "again");
  expect(s.applyOpError({ type: "error", id: refused.id, code: "too_old" })).toMatchObject({ kind: "edit", ref: "mine1" });
  expect([m.body, m.pending]).toEqual(["fixed", undefined]);

  const del = s.deleteFrame(m);
  s.applyAck({ type: "ack", id: del.id, msgId: "ev2", ts: 3000, cursor: "1.3" });
  expect([m.body, m.deletedAt]).toEqual(["", 3000]);
  s.flush();
  const again = createStore("me", storage);
  again.load();
  expect(again.conv("d:bob").messages.map((x: any) => [x.body, x.deletedAt])).toEqual([["", 3000]]);
});
