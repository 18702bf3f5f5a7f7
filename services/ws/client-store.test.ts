import { describe, expect, test } from "bun:test";
// @ts-expect-error: a plain ES module of the browser client
import { createStore } from "./client/store.js";

// The browser client's store (services/ws/client/store.js) without a browser: the order it keeps,
// its outbox, and its cache. Storage is a Map behind the localStorage methods the store uses.

function memoryStorage() {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    keys: () => [...m.keys()],
  };
}

let n = 0;
const frame = (from: string, to: string, body: string, cursor: string, extra: Record<string, unknown> = {}) => ({
  type: "message", msgId: `m${++n}`, id: `c${n}`, from, to, body, ts: 1_000, cursor, ...extra,
});
const bodies = (store: any, key: string) => store.conv(key).messages.map((m: { body: string }) => m.body);

describe("order in the store", () => {
  test("received frames by their cursors, whatever the timestamps or arrival order", () => {
    const s = createStore("me", memoryStorage());
    s.mergeHistory("d:bob", [frame("bob", "me", "third", "1.30", { ts: 1 }), frame("bob", "me", "first", "1.10", { ts: 9 })], null);
    s.applyMessage(frame("bob", "me", "second", "1.20", { ts: 5 }));
    s.applyMessage(frame("bob", "me", "fourth", "1.40", { ts: 2 }));
    expect(bodies(s, "d:bob")).toEqual(["first", "second", "third", "fourth"]);
    expect(s.lastMessage(s.conv("d:bob")).body).toBe("fourth");
  });

  test("typed messages stay after the positioned ones in the order typed; an ack places them after what was seen", () => {
    const s = createStore("me", memoryStorage());
    s.applyMessage(frame("bob", "me", "hi", "2.1"));
    const typed = ["one", "two", "three"].map((b) => s.addOutgoing("d:bob", b));
    expect(s.outbox().map((m: { body: string }) => m.body)).toEqual(["one", "two", "three"]);
    s.applyMessage(frame("bob", "me", "meanwhile", "2.2"));
    expect(bodies(s, "d:bob")).toEqual(["hi", "meanwhile", "one", "two", "three"]);
    s.applyAck({ type: "ack", id: typed[0].id, msgId: "a1", ts: 5 });
    s.applyAck({ type: "ack", id: typed[1].id, msgId: "a2", ts: 5 });
    s.applyMessage(frame("bob", "me", "reply", "2.5"));
    expect(bodies(s, "d:bob")).toEqual(["hi", "meanwhile", "one", "two", "reply", "three"]);
    // The sync answer brings their own positions: "two" was in fact after "reply" in this stream.
    s.applyMessage({ ...frame("me", "bob", "one", "2.3"), msgId: "a1", id: typed[0].id });
    s.applyMessage({ ...frame("me", "bob", "two", "2.6"), msgId: "a2", id: typed[1].id });
    expect(bodies(s, "d:bob")).toEqual(["hi", "meanwhile", "one", "reply", "two", "three"]);
    expect(s.outbox().map((m: { body: string }) => m.body)).toEqual(["three"]);
  });

  test("legacy live frames carry the connection's cursor: arrival order, then sync's own positions", () => {
    const s = createStore("me", memoryStorage());
    s.applySynced({ type: "synced", cursor: "100" });
    s.applyMessage(frame("bob", "me", "a", "100"));
    const mine = s.addOutgoing("d:bob", "b");
    s.applyAck({ type: "ack", id: mine.id, msgId: "b1", ts: 1 });
    s.applyMessage(frame("bob", "me", "c", "100"));
    expect(bodies(s, "d:bob")).toEqual(["a", "b", "c"]);
    // History brings own sequence numbers for some of them: the order holds.
    const [a] = s.conv("d:bob").messages;
    s.mergeHistory("d:bob", [{ ...frame("bob", "me", "a", "101"), msgId: a.msgId }], null);
    expect(bodies(s, "d:bob")).toEqual(["a", "b", "c"]);
  });

  test("a reload keeps the order, the outbox order, drafts and closed conversations", () => {
    const storage = memoryStorage();
    const s = createStore("me", storage);
    s.applyMessage(frame("bob", "me", "x", "3.7"));
    s.addOutgoing("d:bob", "p1");
    s.addOutgoing("d:bob", "p2");
    s.applyMessage(frame("bob", "me", "y", "3.8"));
    s.setDraft("d:bob", "half");
    s.applyMessage(frame("carol", "me", "z", "3.9"));
    s.close("d:carol");
    s.flush();
    const t = createStore("me", storage);
    t.load();
    expect(bodies(t, "d:bob")).toEqual(["x", "y", "p1", "p2"]);
    expect(t.outbox().map((m: { body: string }) => m.body)).toEqual(["p1", "p2"]);
    expect(t.conv("d:bob").draft).toBe("half");
    expect(t.conversations().map((c: { key: string }) => c.key)).toEqual(["d:bob"]);
    expect(t.cursor).toBe("3.9");
    // A new message brings the closed conversation back.
    t.applyMessage(frame("carol", "me", "again", "3.10"));
    expect(t.conversations().map((c: { key: string }) => c.key).sort()).toEqual(["d:bob", "d:carol"]);
  });

  test("a version-1 cache loads: its messages keep their saved order, before anything new", () => {
    const storage = memoryStorage();
    const old = { msgId: "o", from: "bob", to: "me", body: "", ts: 50, status: "received", error: null };
    storage.setItem("relay-chat:state:me", JSON.stringify({
      v: 1, cursor: "40",
      convs: [{ key: "d:bob", readTs: 0, touched: 0, messages: [{ ...old, msgId: "o1", body: "old 1", ts: 90 }, { ...old, msgId: "o2", body: "old 2", ts: 10 }] }],
    }));
    const s = createStore("me", storage);
    expect(s.load()).toBe(true);
    s.applyMessage(frame("bob", "me", "new", "41"));
    expect(bodies(s, "d:bob")).toEqual(["old 1", "old 2", "new"]);
  });

  test("nothing is written once canSave() says no, and clear() removes the cache for good", () => {
    const storage = memoryStorage();
    let ours = true;
    const s = createStore("me", storage, { canSave: () => ours });
    s.applyMessage(frame("bob", "me", "x", "1.1"));
    s.flush();
    expect(storage.keys()).toEqual(["relay-chat:state:me"]);
    storage.removeItem("relay-chat:state:me");
    ours = false;
    s.applyMessage(frame("bob", "me", "y", "1.2"));
    s.flush();
    expect(storage.keys()).toEqual([]);
    ours = true;
    s.clear();
    s.applyMessage(frame("bob", "me", "z", "1.3"));
    s.flush();
    expect(storage.keys()).toEqual([]);
  });
});

describe("read marker", () => {
  test("unread counts by order, not time: a later message with an older timestamp is unread", () => {
    const storage = memoryStorage();
    const s = createStore("me", storage);
    s.applyMessage(frame("bob", "me", "one", "4.1", { ts: 5_000 }));
    s.markRead("d:bob");
    expect(s.unread(s.conv("d:bob"))).toBe(0);
    s.applyMessage(frame("bob", "me", "two", "4.2", { ts: 4_000 }));
    s.applyMessage(frame("bob", "me", "three", "4.3", { ts: 5_000 }));
    expect(s.unread(s.conv("d:bob"))).toBe(2);
    s.flush();
    const t = createStore("me", storage);
    t.load();
    expect(t.unread(t.conv("d:bob"))).toBe(2);
    t.markRead("d:bob");
    expect(t.unread(t.conv("d:bob"))).toBe(0);
  });
});
