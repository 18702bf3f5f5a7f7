import type { Hono } from "hono";
import { z } from "zod";
import type { Db } from "../../shared/db/index.ts";
import { conversationKey } from "../../shared/db/messages.ts";
import { conversationsPage, groupCounts, receiptsOf, type Marker, type ParticipantReceipts } from "../../shared/db/receipts.ts";
import { GroupId, messageFrame, UserId } from "../../shared/protocol.ts";
import { comparePositions, formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";
import type { ApiEnv } from "./accounts.ts";
import * as store from "./store.ts";
import { query } from "./validation.ts";

const PositionCursor = z.string().regex(/^(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})$/, "not a cursor of the form <epoch>.<pos>");
const ConversationsQuery = z.strictObject({
  before: PositionCursor.optional(),
  limit: z.coerce.number().int().min(1).optional(),
});
const ReceiptsQuery = z
  .strictObject({ with: UserId.optional(), group: GroupId.optional() })
  .refine((q) => (q.with === undefined) !== (q.group === undefined), "give exactly one of with= or group=");

const atOrAfter = (marker: Marker | null, m: Marker) => marker !== null && (marker.ts > m.ts || (marker.ts === m.ts && marker.msgId >= m.msgId));

/**
 * GET /api/conversations (the caller's conversation list) and GET /api/receipts (the other
 * participants' markers in one conversation). docs/api.md, "Conversations and receipts".
 */
export function receiptRoutes(app: Hono<ApiEnv>, opts: { db: Db; awaitWritten: (user: string) => Promise<void> }) {
  const { db } = opts;

  app.get("/api/conversations", query(ConversationsQuery), async (c) => {
    const me = c.get("user");
    const q = c.req.valid("query");
    const limit = Math.min(q.limit ?? 50, 200);
    // Reads its own writes, like history: every message acked before the request is listed.
    await opts.awaitWritten(me);
    const page = await conversationsPage(db, me, q.before ? (parseCursor(q.before) as Position) : undefined, limit);
    const conversations = await Promise.all(
      page.rows.map(async (r) => {
        const last = { msgId: r.last.msgId, ts: r.last.ts };
        const base = {
          lastMessage: messageFrame(r.last, formatPosition(r.position)),
          unread: r.unread,
          read: r.read ? { cursor: formatPosition(r.read.position), msgId: r.read.msgId } : null,
        };
        if (r.last.group !== undefined) {
          const counts = await groupCounts(db, r.last.group, r.last.from, last);
          return { group: r.last.group, name: r.groupName ?? r.last.group, ...base, lastMessageReceipts: counts };
        }
        const [a, b] = r.conv.slice(2).split(":") as [string, string];
        const peer = a === me ? b : a;
        const receipts: Record<string, ParticipantReceipts> = peer === me ? {} : await receiptsOf(db, r.conv, [peer]);
        // The last message as seen by the participant who did not send it.
        let seen = { read: false, delivered: false };
        if (peer !== me && r.last.from === me) seen = { read: atOrAfter(receipts[peer]!.read, last), delivered: atOrAfter(receipts[peer]!.delivered, last) };
        else if (peer !== me) seen = { read: r.read !== null && comparePositions(r.read.position, r.position) >= 0, delivered: true };
        return {
          with: peer,
          ...base,
          receipts,
          lastMessageReceipts: { readBy: seen.read ? 1 : 0, deliveredTo: seen.delivered ? 1 : 0, of: peer === me ? 0 : 1 },
        };
      }),
    );
    return c.json({ conversations, before: page.more ? formatPosition(page.rows[page.rows.length - 1]!.position) : null });
  });

  app.get("/api/receipts", query(ReceiptsQuery), async (c) => {
    const me = c.get("user");
    const q = c.req.valid("query");
    let users: string[];
    if (q.group !== undefined) {
      const g = await store.groupInfo(db, q.group);
      if (!g || !g.members.includes(me)) return c.json({ error: "you are not a member of this group" }, 403);
      users = g.members.filter((u) => u !== me);
    } else users = q.with === me ? [] : [q.with!];
    const conv = conversationKey(q.group !== undefined ? { from: me, group: q.group } : { from: me, to: q.with! });
    return c.json({ receipts: await receiptsOf(db, conv, users) });
  });
}
