import { expect, test } from "bun:test";

// The client's service worker (services/ws/client/sw.js) run against a stand-in for the worker's
// global scope: its notifications, its clients. (In Chromium, client-push.browser.test.ts.)

const SOURCE = await Bun.file(new URL("./client/sw.js", import.meta.url)).text();

function load(windows: Array<{ url: string }> = []) {
  const handlers: Record<string, (e: any) => void> = {};
  const shown: Array<{ title: string; options: any }> = [];
  const opened: string[] = [];
  const messages: Array<{ url: string; data: any }> = [];
  const focused: string[] = [];
  const self = {
    location: { origin: "https://chat.example.com" },
    addEventListener: (type: string, fn: (e: any) => void) => (handlers[type] = fn),
    skipWaiting: () => {},
    registration: {
      showNotification: async (title: string, options: any) => void shown.push({ title, options }),
      getNotifications: async ({ tag }: { tag: string }) => shown.filter((s) => s.options.tag === tag).map((s) => ({ data: s.options.data })),
    },
    clients: {
      claim: async () => {},
      matchAll: async () => windows.map((w) => ({ url: w.url, postMessage: (data: any) => messages.push({ url: w.url, data }), focus: async () => void focused.push(w.url) })),
      openWindow: async (url: string) => void opened.push(url),
    },
  };
  new Function("self", SOURCE)(self);
  const dispatch = async (type: string, e: any) => {
    let wait: Promise<unknown> = Promise.resolve();
    handlers[type]!({ ...e, waitUntil: (p: Promise<unknown>) => (wait = p) });
    await wait;
  };
  const push = (payload: unknown) => dispatch("push", { data: { json: () => (typeof payload === "string" ? JSON.parse(payload) : payload) } });
  const click = (data: unknown) => dispatch("notificationclick", { notification: { data, close: () => {} } });
  return { shown, opened, messages, focused, push, click };
}

const direct = { type: "message", conv: "d:alice", from: "alice", to: "bob", count: 1, body: "hi", msgId: "m1", ts: 1, url: "/client/#d%3Aalice" };

test("a push shows the conversation's notification; the next one replaces it and adds its count", async () => {
  const sw = load();
  await sw.push(direct);
  await sw.push({ ...direct, count: 2, body: "are you there?" });
  await sw.push({ ...direct, conv: "g:g1", group: "g1", groupName: "Book club", to: undefined, body: "chapter 3" });
  expect(sw.shown.map((s) => [s.title, s.options.body, s.options.tag, s.options.data])).toEqual([
    ["alice", "hi", "d:alice", { conv: "d:alice", count: 1 }],
    ["alice (3 new messages)", "are you there?", "d:alice", { conv: "d:alice", count: 3 }],
    ["Book club", "alice: chapter 3", "g:g1", { conv: "g:g1", count: 1 }],
  ]);
  expect(sw.shown.every((s) => s.options.renotify === true)).toBe(true);
});

test("a push that is not ours still shows something (browsers require it)", async () => {
  const sw = load();
  await sw.push("not json at all");
  await sw.push({ type: "other" });
  await sw.push({ ...direct, conv: "x:<script>" });
  expect(sw.shown.map((s) => s.title)).toEqual(["Relay", "Relay", "Relay"]);
});

test("a click focuses an open client and tells it the conversation, or opens the client at it", async () => {
  const open = load([{ url: "https://chat.example.com/elsewhere" }, { url: "https://chat.example.com/client/#d%3Acarol" }]);
  await open.click({ conv: "d:alice", count: 2 });
  expect(open.messages).toEqual([{ url: "https://chat.example.com/client/#d%3Acarol", data: { type: "open-conversation", conv: "d:alice" } }]);
  expect(open.focused).toEqual(["https://chat.example.com/client/#d%3Acarol"]);
  expect(open.opened).toEqual([]);

  const none = load();
  await none.click({ conv: "g:g_1", count: 1 });
  await none.click({ conv: "javascript:alert(1)" });
  expect(none.opened).toEqual(["/client/#g%3Ag_1", "/client/"]);
});
