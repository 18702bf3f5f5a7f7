import { describe, expect, test } from "bun:test";
// @ts-expect-error: plain ES modules of the browser client
import { applyReceiptEvent, receiptOf, receiptText } from "./client/receipts.js";
// @ts-expect-error
import { ctx } from "./client/state.js";
// @ts-expect-error
import { createStore } from "./client/store.js";

// The browser client's receipt state without a browser: the server's unread counts, read markers
// from other devices, and what the user's own messages show.

function memoryStorage() {
  const m = new Map<string, string>();
  return { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v), removeItem: (k: string) => void m.delete(k) };
}
/** What app.js does with an event frame: the store takes its cursor (and edits), receipts.js its marker. */
const apply = (f: Record<string, unknown>) => {
  ctx.store.applyEvent(f);
  applyReceiptEvent(f);
};
let n = 0;
const frame = (from: string, to: { to: string } | { group: string }, cursor: string, ts = 1_000) => ({ type: "message", msgId: `m${++n}`, id: `c${n}`, from, ...to, body: `b${n}`, ts, cursor });

describe("unread counts and read markers", () => {
  test("the server's count stands for what this device does not hold; later messages add to it; reading clears it", () => {
    const s = createStore("me", memoryStorage());
    const last = frame("bob", { to: "me" }, "1.10");
    s.mergeFrames([last]);
    const c = s.conv("d:bob");
    c.serverUnread = 7;
    c.serverTop = "1.10";
    expect(s.unread(c)).toBe(7);
    s.applyMessage(frame("bob", { to: "me" }, "1.11"));
    expect(s.unread(c)).toBe(8);
    s.markRead("d:bob");
    expect(s.unread(c)).toBe(0);
  });

  test("a marker from another device moves forward only, and counts what came after it", () => {
    const s = createStore("me", memoryStorage());
    for (const p of ["1.1", "1.2", "1.3"]) s.applyMessage(frame("bob", { to: "me" }, p));
    const c = s.conv("d:bob");
    expect(s.unread(c)).toBe(3);
    expect(s.setRead("d:bob", "1.2")).toBe(true);
    expect(s.unread(c)).toBe(1);
    expect(s.setRead("d:bob", "1.1")).toBe(false);
    expect(s.setRead("d:bob", "1.2")).toBe(false);
    expect(s.unread(c)).toBe(1);
  });
});

describe("receipt events and what my messages show", () => {
  test("direct: sent, delivered, read; my own read event from another device moves my marker; the event's cursor is kept", () => {
    const s = (ctx.store = createStore("me", memoryStorage()));
    const mine = frame("me", { to: "bob" }, "1.1", 2_000);
    s.applyMessage(mine);
    s.applyMessage(frame("bob", { to: "me" }, "1.2", 2_500));
    const m = s.conv("d:bob").messages[0];
    expect(receiptOf(m).state).toBe("sent");
    apply({ type: "event", kind: "delivered", from: "bob", to: "me", ref: mine.msgId, refTs: mine.ts, cursor: "1.3" });
    expect([receiptOf(m).state, receiptText(m)]).toEqual(["delivered", "delivered ✓✓"]);
    expect(s.cursor).toBe("1.3");
    // An older marker changes nothing.
    apply({ type: "event", kind: "read", from: "bob", to: "me", ref: "older", refTs: 1_000, upTo: "1.0", cursor: "1.4" });
    expect(receiptOf(m).state).toBe("delivered");
    apply({ type: "event", kind: "read", from: "bob", to: "me", ref: mine.msgId, refTs: mine.ts, upTo: "1.1", cursor: "1.5" });
    expect([receiptOf(m).state, receiptText(m)]).toEqual(["read", "read ✓✓"]);
    expect(s.unread(s.conv("d:bob"))).toBe(1);
    apply({ type: "event", kind: "read", from: "me", to: "bob", ref: "x", refTs: 2_500, upTo: "1.2", cursor: "1.6" });
    expect(s.unread(s.conv("d:bob"))).toBe(0);
    // Malformed or unknown events change nothing.
    apply({ type: "event", kind: "read", from: "bob", to: "me", ref: 5, cursor: "1.7" });
    apply({ type: "event", kind: "edit", from: "bob", to: "me", cursor: "1.8" });
    expect(receiptOf(m).state).toBe("read");
    ctx.store = null;
  });

  test("groups: read by N, delivered once every other member has it", () => {
    const s = (ctx.store = createStore("me", memoryStorage()));
    s.setGroups([{ groupId: "g1", name: "G", members: ["me", "bob", "carol"] }]);
    const mine = frame("me", { group: "g1" }, "1.1", 5_000);
    s.applyMessage(mine);
    const m = s.conv("g:g1").messages[0];
    apply({ type: "event", kind: "read", from: "bob", group: "g1", ref: mine.msgId, refTs: mine.ts, upTo: "7.1", cursor: "1.2" });
    expect(receiptOf(m)).toEqual({ state: "sent", readBy: 1, of: 2 });
    expect(receiptText(m)).toBe("✓ read by 1");
    apply({ type: "event", kind: "delivered", from: "carol", group: "g1", ref: mine.msgId, refTs: mine.ts, cursor: "1.3" });
    expect(receiptText(m)).toBe("✓✓ read by 1");
    apply({ type: "event", kind: "read", from: "carol", group: "g1", ref: "later", refTs: 6_000, upTo: "9.4", cursor: "1.4" });
    expect(receiptOf(m)).toEqual({ state: "read", readBy: 2, of: 2 });
    expect(receiptText(m)).toBe("✓✓ read by 2");
    ctx.store = null;
  });
});
