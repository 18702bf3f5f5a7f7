import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { PushSender } from "./push-sender.ts";
import type { PushSubscription } from "./push-subscriptions.ts";

/** What a push carries (encrypted to the browser): the newest message of a conversation and how many came in the window. */
export interface PushPayload {
  type: "message";
  /** The conversation as the recipient's client names it: `d:<other user>` or `g:<groupId>`. */
  conv: string;
  from: string;
  to?: string;
  group?: string;
  groupName?: string;
  /** Messages of this conversation collapsed into this notification. */
  count: number;
  /** The newest message's body, cut to BODY_PREVIEW characters. */
  body: string;
  msgId: string;
  ts: number;
  /** Where a click takes the user: the browser client with the conversation open. */
  url: string;
}

export const BODY_PREVIEW = 200;
/** Notifications waiting for their window to end, at most (past it new ones are dropped). */
export const MAX_WAITING = 50_000;
const TTL_SEC = 24 * 3600;

interface Waiting {
  user: string;
  conv: string;
  count: number;
  last: ChatMessage;
  timer: ReturnType<typeof setTimeout>;
}

/** The push service's topic for a conversation: replaces an undelivered earlier push of it. */
export function topicOf(conv: string): string {
  return new Bun.CryptoHasher("sha256").update(conv).digest("base64url").slice(0, 32);
}

/** The conversation of `m` as `user`'s client names it. */
const convOf = (user: string, m: ChatMessage) => (m.group !== undefined ? `g:${m.group}` : `d:${m.from === user ? m.to! : m.from}`);

export function payloadOf(user: string, m: ChatMessage, count: number, groupName?: string): PushPayload {
  const conv = convOf(user, m);
  const body = m.body.length > BODY_PREVIEW ? m.body.slice(0, BODY_PREVIEW - 1) + "…" : m.body;
  return {
    type: "message",
    conv,
    from: m.from,
    ...(m.group !== undefined ? { group: m.group, ...(groupName !== undefined ? { groupName } : {}) } : { to: m.to! }),
    count,
    body,
    msgId: m.msgId,
    ts: m.ts,
    url: `/client/#${encodeURIComponent(conv)}`,
  };
}

/**
 * Web Push for users with no open connection anywhere. The gateway that accepted a message (and
 * found its recipients offline in the directory) hands it here; per (user, conversation) the first
 * message opens a window of `delayMs`, later ones only raise its count, and when it ends the user —
 * unless connected by then — gets one push per subscribed device with the newest message and the
 * count, under a per-conversation topic. A subscription the push service answers 404 or 410 is
 * deleted. Best effort: a push is never retried, and what waits is sent early on stop().
 */
export function createPushNotifier(opts: {
  sender: PushSender;
  subscriptionsOf: (users: string[]) => Promise<Map<string, PushSubscription[]>>;
  dropEndpoint: (endpoint: string) => Promise<void>;
  /** Those of `users` with an open connection on any instance now. */
  online: (users: string[]) => Promise<Set<string>>;
  groupNames: (groupIds: string[]) => Promise<Map<string, string>>;
  delayMs: number;
  log: Logger;
  metrics: Metrics;
}) {
  const sent = opts.metrics.counter("ws_push_sent_total", "Push messages accepted by a push service");
  const failed = opts.metrics.counter("ws_push_failed_total", "Push messages not accepted (unreachable, or an error status)", ["reason"]);
  const removed = opts.metrics.counter("ws_push_subscriptions_removed_total", "Subscriptions deleted because the push service answered 404 or 410");
  const skipped = opts.metrics.counter("ws_push_skipped_total", "Notifications not sent", ["reason"]);
  const windows = opts.metrics.counter("ws_push_windows_total", "Notification windows opened for an offline recipient's conversation");

  const waiting = new Map<string, Waiting>();
  const running = new Set<Promise<void>>();
  const onlineNow = createTickBatcher<string, boolean>(async (users) => {
    const on = await opts.online([...new Set(users)]);
    return users.map((u) => on.has(u));
  }, { maxInFlight: 2 });
  const subsOf = createTickBatcher<string, PushSubscription[]>(async (users) => {
    const subs = await opts.subscriptionsOf([...new Set(users)]);
    return users.map((u) => subs.get(u) ?? []);
  }, { maxInFlight: 2 });

  const fire = (key: string) => {
    const w = waiting.get(key);
    if (!w) return;
    waiting.delete(key);
    clearTimeout(w.timer);
    const p = notify(w).catch((err) => opts.log.warn("push failed", { err, user: w.user }));
    running.add(p);
    void p.finally(() => running.delete(p));
  };

  async function notify(w: Waiting) {
    if (await onlineNow.add(w.user)) return skipped.inc({ reason: "online" });
    const subs = await subsOf.add(w.user);
    if (subs.length === 0) return skipped.inc({ reason: "no_subscription" });
    const groupName = w.last.group !== undefined ? (await opts.groupNames([w.last.group]).catch(() => new Map<string, string>())).get(w.last.group) : undefined;
    const payload = JSON.stringify(payloadOf(w.user, w.last, w.count, groupName));
    const topic = topicOf(w.conv);
    await Promise.all(
      subs.map(async (sub) => {
        let status: number;
        try {
          status = await opts.sender.send(sub, payload, { topic, ttlSec: TTL_SEC, urgency: "high" });
        } catch (err) {
          opts.log.debug("push service unreachable", { err, endpoint: sub.endpoint });
          return failed.inc({ reason: "unreachable" });
        }
        if (status >= 200 && status < 300) return sent.inc();
        if (status === 404 || status === 410) {
          removed.inc();
          return opts.dropEndpoint(sub.endpoint).catch((err) => opts.log.warn("could not delete a gone subscription", { err }));
        }
        opts.log.warn("push refused", { status, endpoint: new URL(sub.endpoint).origin });
        failed.inc({ reason: String(status) });
      }),
    );
  }

  return {
    /** `m` was accepted and `users` (its recipients other than the sender) have no open connection. */
    offline(m: ChatMessage, users: string[]) {
      for (const user of users) {
        const conv = convOf(user, m);
        const key = `${user}\n${conv}`;
        const w = waiting.get(key);
        if (w) {
          w.count++;
          w.last = m;
          continue;
        }
        if (waiting.size >= MAX_WAITING) {
          skipped.inc({ reason: "overloaded" });
          continue;
        }
        windows.inc();
        waiting.set(key, { user, conv, count: 1, last: m, timer: setTimeout(() => fire(key), opts.delayMs) });
      }
    },
    /** Sends what waits now and waits (bounded) for every push under way. */
    async stop(timeoutMs = 3000) {
      for (const key of [...waiting.keys()]) fire(key);
      await Promise.race([Promise.all([...running]), Bun.sleep(timeoutMs)]);
    },
  };
}
export type PushNotifier = ReturnType<typeof createPushNotifier>;
