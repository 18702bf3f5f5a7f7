import { expect, test } from "bun:test";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { BODY_PREVIEW, createPushNotifier, payloadOf, topicOf, type PushPayload } from "./push.ts";
import type { PushOptions } from "./push-sender.ts";
import type { PushSubscription } from "./push-subscriptions.ts";

// The notifier's collapsing and clean-up, with the push service replaced by a recorder (the
// encryption and VAPID side is tested against a real local push service in push.integration.test.ts).

function setup(subs: Record<string, string[]>, online = new Set<string>(), status: (endpoint: string) => number = () => 201) {
  const sent: Array<{ endpoint: string; payload: PushPayload; opts: PushOptions }> = [];
  const dropped: string[] = [];
  const subscriptions = new Map(Object.entries(subs).map(([u, es]) => [u, es.map((endpoint): PushSubscription => ({ endpoint, keys: { p256dh: "p", auth: "a" } }))]));
  const notifier = createPushNotifier({
    sender: {
      async send(sub, payload, opts) {
        sent.push({ endpoint: sub.endpoint, payload: JSON.parse(payload), opts });
        return status(sub.endpoint);
      },
    },
    subscriptionsOf: async (users) => new Map(users.filter((u) => subscriptions.has(u)).map((u) => [u, subscriptions.get(u)!])),
    dropEndpoint: async (e) => void dropped.push(e),
    online: async (users) => new Set(users.filter((u) => online.has(u))),
    groupNames: async (ids) => new Map(ids.map((id) => [id, `name of ${id}`])),
    delayMs: 60_000, // never by itself here: stop() ends every window
    log: silentLogger,
    metrics: createMetrics("test"),
  });
  return { notifier, sent, dropped };
}

let n = 0;
const msg = (from: string, target: { to: string } | { group: string }, body = `m${++n}`): ChatMessage => ({ msgId: `id${n}`, id: `c${n}`, from, ...target, body, ts: 1000 + n });

test("one push per (user, conversation) and device for a window's messages: the newest, with the count", async () => {
  const { notifier, sent } = setup({ bob: ["https://p/bob1", "https://p/bob2"], carol: ["https://p/carol"] });
  const [a1, a2, a3] = [msg("alice", { to: "bob" }), msg("alice", { to: "bob" }), msg("alice", { to: "bob" })];
  for (const m of [a1, a2, a3]) notifier.offline(m, ["bob"]);
  const d1 = msg("dave", { to: "bob" });
  notifier.offline(d1, ["bob"]);
  const g1 = msg("alice", { group: "g1" }, "to the group");
  notifier.offline(g1, ["bob", "carol"]);
  await notifier.stop();
  const of = (endpoint: string) => sent.filter((s) => s.endpoint === endpoint).map((s) => s.payload);
  expect(of("https://p/bob1")).toEqual([
    { type: "message", conv: "d:alice", from: "alice", to: "bob", count: 3, body: a3.body, msgId: a3.msgId, ts: a3.ts, url: "/client/#d%3Aalice" },
    { type: "message", conv: "d:dave", from: "dave", to: "bob", count: 1, body: d1.body, msgId: d1.msgId, ts: d1.ts, url: "/client/#d%3Adave" },
    { type: "message", conv: "g:g1", from: "alice", group: "g1", groupName: "name of g1", count: 1, body: "to the group", msgId: g1.msgId, ts: g1.ts, url: "/client/#g%3Ag1" },
  ]);
  expect(of("https://p/bob2")).toEqual(of("https://p/bob1"));
  expect(of("https://p/carol").map((p) => p.conv)).toEqual(["g:g1"]);
  // The topic names the conversation: a push service replaces an undelivered one of the same conversation.
  expect(sent.filter((s) => s.payload.conv === "d:alice").map((s) => s.opts)).toEqual([
    { topic: topicOf("d:alice"), ttlSec: 86400, urgency: "high" },
    { topic: topicOf("d:alice"), ttlSec: 86400, urgency: "high" },
  ]);
  expect(topicOf("d:alice")).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
  expect(topicOf("d:alice")).not.toBe(topicOf("d:dave"));
});

test("a user connected by the time the window ends gets nothing; a user without subscriptions neither", async () => {
  const { notifier, sent } = setup({ bob: ["https://p/bob"] }, new Set(["bob"]));
  notifier.offline(msg("alice", { to: "bob" }), ["bob"]);
  notifier.offline(msg("alice", { to: "erin" }), ["erin"]);
  await notifier.stop();
  expect(sent).toEqual([]);
});

test("404 and 410 delete the subscription; other failures keep it", async () => {
  const codes: Record<string, number> = { "https://p/gone": 410, "https://p/unknown": 404, "https://p/busy": 503, "https://p/ok": 201 };
  const { notifier, sent, dropped } = setup({ bob: Object.keys(codes) }, new Set(), (e) => codes[e]!);
  notifier.offline(msg("alice", { to: "bob" }), ["bob"]);
  await notifier.stop();
  expect(sent.map((s) => s.endpoint).sort()).toEqual(Object.keys(codes).sort());
  expect(dropped.sort()).toEqual(["https://p/gone", "https://p/unknown"]);
});

test("a long body is cut to the preview length; a message to oneself names the conversation with oneself", () => {
  const p = payloadOf("bob", msg("alice", { to: "bob" }, "x".repeat(5000)), 1);
  expect(p.body).toHaveLength(BODY_PREVIEW);
  expect(p.body.endsWith("…")).toBe(true);
  expect(payloadOf("bob", msg("bob", { to: "bob" }), 1).conv).toBe("d:bob");
});
