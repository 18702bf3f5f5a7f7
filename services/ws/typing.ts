import type { Metrics } from "../../shared/metrics.ts";
import type { TypingEvent, TypingFrame } from "../../shared/protocol.ts";
import { createTickBatcher } from "../../shared/tick.ts";
import type { Conn, ConnData } from "./connections.ts";
import { sendFrame } from "./frames.ts";
import { createRateLimiter } from "./rate-limit.ts";
import type { Router } from "./router.ts";

/** At most one typing frame per conversation per connection per TYPING_INTERVAL_MS; the rest are dropped silently. */
export const TYPING_INTERVAL_MS = 2000;
/** How long a recipient shows "… is typing" unless a newer typing frame (or a message) comes. */
export const TYPING_TTL_MS = 5000;

/**
 * Typing indicators: ephemeral (no position, never stored, not replayed by sync), best effort.
 * A direct one goes to every connection of the other party, a group's to every connection of
 * the other members; never to the typist's own devices. A non-member of the group is answered
 * `forbidden`; while membership cannot be read the frame is dropped.
 */
export function createTyping(opts: {
  router: Pick<Router, "signal">;
  /** Members of each group (empty array for an unknown group). */
  groupMembers: (groupIds: string[]) => Promise<Map<string, string[]>>;
  metrics: Metrics;
  now?: () => number;
}) {
  const relayed = opts.metrics.counter("ws_typing_total", "Typing frames", ["outcome"]);
  const limits = new WeakMap<ConnData, ReturnType<typeof createRateLimiter>>();
  const members = createTickBatcher<string, string[]>(async (groups) => {
    const m = await opts.groupMembers([...new Set(groups)]);
    return groups.map((g) => m.get(g) ?? []);
  }, { maxInFlight: 1 });

  return async function typing(ws: Conn, f: TypingFrame): Promise<void> {
    let limit = limits.get(ws.data);
    if (!limit) limits.set(ws.data, (limit = createRateLimiter(1000 / TYPING_INTERVAL_MS, 1, opts.now)));
    if (!limit.take("group" in f ? `g:${f.group}` : `d:${f.to}`)) return relayed.inc({ outcome: "rate_limited" });
    const from = ws.data.user;
    if ("to" in f) {
      if (f.to !== from) await opts.router.signal({ users: [f.to], frame: { type: "typing", from, to: f.to, ttlMs: TYPING_TTL_MS } });
      return relayed.inc({ outcome: "relayed" });
    }
    const ms = await members.add(f.group).catch(() => null);
    if (ms === null) return relayed.inc({ outcome: "unavailable" });
    if (!ms.includes(from)) {
      relayed.inc({ outcome: "forbidden" });
      if (ws.data.open) sendFrame(ws, { type: "error", code: "forbidden", message: "you are not a member of this group" });
      return;
    }
    const frame: TypingEvent = { type: "typing", from, group: f.group, ttlMs: TYPING_TTL_MS };
    await opts.router.signal({ users: ms.filter((u) => u !== from), frame });
    relayed.inc({ outcome: "relayed" });
  };
}
export type Typing = ReturnType<typeof createTyping>;
