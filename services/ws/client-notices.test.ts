import { describe, expect, test } from "bun:test";
// @ts-expect-error: a plain ES module of the browser client
import { createStore, noticeText } from "./client/store.js";

// Membership notices and pushed group frames in the browser client's store (services/ws/client/store.js).

function memoryStorage() {
  const m = new Map<string, string>();
  return { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v), removeItem: (k: string) => void m.delete(k) };
}
let n = 0;
const message = (from: string, body: string, cursor: string) => ({ type: "message", msgId: `m${++n}`, id: `c${n}`, from, group: "g1", body, ts: 1_000, cursor });
const notice = (from: string, action: string, user: string, cursor: string, role?: string) => ({
  type: "event", kind: "member", msgId: `e${++n}`, from, group: "g1", ts: 1_000, action, user, ...(role ? { role } : {}), cursor,
});
const view = (members: string[], owner = members[0], version = 0) => ({ groupId: "g1", name: "Crew", members, creator: "alice", owner, admins: [], version });
const items = (s: any) => s.conv("g:g1").messages.map((m: any) => m.body);

describe("membership notices", () => {
  test("texts, as the reader reads them", () => {
    expect(noticeText({ action: "added", user: "carol" }, "alice", "bob")).toBe("alice added carol");
    expect(noticeText({ action: "added", user: "bob" }, "alice", "bob")).toBe("alice added you");
    expect(noticeText({ action: "added", user: "carol" }, "bob", "bob")).toBe("You added carol");
    expect(noticeText({ action: "left", user: "carol" }, "carol", "bob")).toBe("carol left");
    expect(noticeText({ action: "removed", user: "bob" }, "alice", "bob")).toBe("alice removed you");
    expect(noticeText({ action: "created", user: "alice" }, "alice", "bob")).toBe("alice created the group");
    expect(noticeText({ action: "role", user: "bob", role: "owner" }, "alice", "bob")).toBe("You are now the owner");
    expect(noticeText({ action: "role", user: "carol", role: "admin" }, "alice", "bob")).toBe("alice made carol an admin");
    expect(noticeText({ action: "role", user: "carol", role: "member" }, "alice", "bob")).toBe("carol is no longer an admin");
  });

  test("ordered with the messages by position, live or from history, once each; never unread; the cursor moves", () => {
    const s = createStore("bob", memoryStorage());
    const added = notice("alice", "added", "carol", "1.3");
    s.applyMessage(message("alice", "hi", "1.2"));
    s.applyEvent(added);
    s.applyMessage(message("carol", "hello", "1.4"));
    s.mergeHistory("g:g1", [notice("alice", "created", "alice", "1.1"), added, { type: "event", kind: "edit", msgId: "x", from: "alice", group: "g1", ts: 1, ref: "m1", body: "?", cursor: "1.5" }], null);
    expect(items(s)).toEqual(["alice created the group", "hi", "alice added carol", "hello"]);
    expect(s.unread(s.conv("g:g1"))).toBe(2);
    s.applyEvent(notice("carol", "left", "carol", "1.6"));
    expect(s.cursor).toBe("1.6");
    expect(s.unread(s.conv("g:g1"))).toBe(2);
    expect(s.lastMessage(s.conv("g:g1")).body).toBe("carol left");
    // An event of a kind the store does not keep still moves the cursor.
    s.applyEvent({ type: "event", kind: "future", msgId: "f1", from: "x", group: "g1", ts: 1, cursor: "1.7" });
    expect(s.cursor).toBe("1.7");
    expect(items(s)).toHaveLength(5);
  });

  test("malformed notice frames are ignored", () => {
    const s = createStore("bob", memoryStorage());
    for (const f of [{ type: "event", kind: "member", cursor: "1.1" }, { ...notice("a", "added", "b", "1.2"), group: 5 }, { ...notice("a", "added", "b", "1.3"), user: null }]) s.applyEvent(f);
    expect(s.hasConv("g:g1")).toBe(false);
  });

  test("kept in the cache with the messages, and the removal notice with the conversation's name", () => {
    const storage = memoryStorage();
    const s = createStore("bob", storage);
    s.setGroups([view(["alice", "bob"])]);
    s.applyMessage(message("alice", "hi", "1.1"));
    s.applyEvent(notice("alice", "removed", "bob", "1.2"));
    s.applyGroup({ type: "group", groupId: "g1", change: { action: "removed", user: "bob", by: "alice" }, group: null });
    s.flush();
    const again = createStore("bob", storage);
    again.load();
    expect(items(again)).toEqual(["hi", "alice removed you"]);
    expect(again.conv("g:g1").notice).toBeUndefined();
    expect(again.conv("g:g1").messages[1].notice).toEqual({ action: "removed", user: "bob" });
    expect(again.conv("g:g1").removed).toEqual({ action: "removed", by: "alice" });
    expect(again.conv("g:g1").name).toBe("Crew");
  });

  test("a removal that comes through sync marks the conversation; being added again clears it; history does not", () => {
    const s = createStore("bob", memoryStorage());
    s.mergeHistory("g:g1", [notice("alice", "removed", "bob", "1.1")], null);
    expect(s.conv("g:g1").removed).toBeUndefined();
    s.applyEvent(notice("alice", "removed", "bob", "1.2"));
    expect(s.conv("g:g1").removed).toEqual({ action: "removed", by: "alice" });
    s.applyEvent(notice("carol", "added", "bob", "1.3"));
    expect(s.conv("g:g1").removed).toBeUndefined();
    s.applyEvent(notice("bob", "left", "bob", "1.4"));
    expect(s.conv("g:g1").removed).toEqual({ action: "left", by: "bob" });
  });
});

describe("pushed group frames", () => {
  test("update the group at once; a list asked for before a frame is known to be stale", () => {
    const s = createStore("bob", memoryStorage());
    s.setGroups([view(["alice", "bob"])]);
    const before = s.groupFrames;
    s.applyGroup({ type: "group", groupId: "g1", change: { action: "added", user: "carol", by: "alice" }, group: view(["alice", "bob", "carol"]) });
    expect(s.groups.get("g1").members).toEqual(["alice", "bob", "carol"]);
    expect(s.groupFrames).toBe(before + 1);
  });

  test("a frame older than one already applied is ignored (two changes at once); a list older than a frame keeps the frame's state", () => {
    const s = createStore("bob", memoryStorage());
    s.setGroups([view(["alice", "bob"], "alice", 1)]);
    const frame = (v: number, members: string[], action: string, user: string) => ({ type: "group", groupId: "g1", version: v, change: { action, user, by: "alice" }, group: view(members, "alice", v) });
    s.applyGroup(frame(3, ["alice", "bob", "carol", "dave"], "added", "dave"));
    s.applyGroup(frame(2, ["alice", "bob", "carol"], "added", "carol"));
    expect(s.groups.get("g1").members).toEqual(["alice", "bob", "carol", "dave"]);
    s.setGroups([view(["alice", "bob", "carol"], "alice", 2)]);
    expect(s.groups.get("g1").members).toEqual(["alice", "bob", "carol", "dave"]);
    s.setGroups([view(["alice", "bob"], "alice", 4)]);
    expect(s.groups.get("g1").members).toEqual(["alice", "bob"]);
    // A removal older than being added back is ignored too.
    s.applyGroup({ type: "group", groupId: "g1", version: 3, change: { action: "removed", user: "bob", by: "alice" }, group: null });
    expect(s.groups.has("g1")).toBe(true);
  });

  test("a group this user joins goes to the top of the list; being added back clears the removal", () => {
    const s = createStore("bob", memoryStorage());
    s.setGroups([]);
    s.applyMessage({ type: "message", msgId: "d1", id: "d1", from: "dave", to: "bob", body: "yo", ts: Date.now() - 60_000, cursor: "1.1" });
    s.applyGroup({ type: "group", groupId: "g1", change: { action: "removed", user: "bob", by: "alice" }, group: null });
    s.applyGroup({ type: "group", groupId: "g1", change: { action: "added", user: "bob", by: "alice" }, group: view(["alice", "bob"]) });
    expect(s.conv("g:g1").removed).toBeUndefined();
    expect(s.conversations().map((c: any) => c.key)).toEqual(["g:g1", "d:dave"]);
  });

  test("malformed group frames change nothing", () => {
    const s = createStore("bob", memoryStorage());
    s.setGroups([view(["alice", "bob"])]);
    s.applyGroup({ type: "group" });
    s.applyGroup({ type: "group", groupId: "g1", change: {}, group: { members: "x" } });
    expect(s.groups.get("g1").members).toEqual(["alice", "bob"]);
  });
});
