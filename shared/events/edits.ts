import { sql } from "drizzle-orm";
import { readRecords, recipientsOf } from "../db/messages.ts";
import type { Db } from "../db/index.ts";
import { SendError, type ChatMessage } from "../protocol.ts";
import type { EventContext, EventKind } from "./kind.ts";

/**
 * Edit and delete one's own message (issue 13, item 3). `ref` is the message's msgId; an edit's
 * `body` is the new text. Both go to every user whose stream the message entered. Storage keeps
 * the current state on the message's row: the latest edit's text and `edited_at` (latest by `ts`),
 * or, once deleted, an empty body and `deleted_at` (a deletion is final: it wins over every edit,
 * whichever is written first, and blanks the texts of the message's edits too).
 */

/** Checks that `e.ref` is the sender's own message, still there and within the window; returns its recipients. */
async function acceptChange(e: ChatMessage, ctx: EventContext, verb: string): Promise<string[]> {
  if (e.ref === undefined) throw new SendError("bad_request", "msgId is required");
  // Storage first holds everything the sender's stream was given (read-your-writes): the message
  // itself when it was just sent, and a deletion (or edit) of it acked before this one.
  await ctx.awaitWritten(e.from).catch(() => {
    throw new SendError("unavailable", "storage is behind; retry");
  });
  const rows = await readRecords(ctx.db, [e.ref, e.msgId]);
  const target = rows.get(e.ref);
  if (!target || target.kind !== undefined) throw new SendError("not_found", "no such message");
  if (target.from !== e.from) throw new SendError("forbidden", `you can only ${verb} your own messages`);
  if (target.group !== undefined) {
    const members = (await ctx.groupMembers([target.group])).get(target.group) ?? [];
    if (!members.includes(e.from)) throw new SendError("forbidden", "you are no longer a member of this group");
    e.group = target.group;
  } else e.to = target.to;
  // A retry of an event already stored is accepted again (it is acked as before and delivered once).
  if (!rows.has(e.msgId)) {
    if (target.deletedAt !== undefined) throw new SendError("not_found", "the message was deleted");
    if (ctx.now() - target.ts >= ctx.editWindowMs) throw new SendError("too_old", `messages can only be ${verb}ed within ${Math.round(ctx.editWindowMs / 1000)} s of being sent`);
  }
  return recipientsOf(ctx.db, target);
}

const json = (v: unknown) => JSON.stringify(v);

export const editKind: EventKind = {
  kind: "edit",
  inHistory: false,
  accept: (e, ctx) => acceptChange(e, ctx, "edit"),
  // An edit read back after its message was deleted has lost its text too.
  frame: (e) => (e.deletedAt !== undefined ? { body: "", deletedAt: e.deletedAt } : { body: e.body }),
  async persist(tx: Db, events: ChatMessage[]) {
    const latest = new Map<string, ChatMessage>();
    for (const e of events) {
      const had = latest.get(e.ref!);
      if (!had || e.ts > had.ts) latest.set(e.ref!, e);
    }
    const rows = [...latest.values()].map((e) => ({ ref: e.ref, body: e.body, ts: e.ts }));
    // Lock the messages first: a deletion written at the same time by another persist either
    // commits before (then the blanking below sees it) or waits for this transaction (then its
    // own blanking sees these edits).
    await tx.execute(sql`select id from messages where id in (select value from json_array_elements_text(${json([...latest.keys()])}::json)) order by id for update`);
    await tx.execute(sql`update messages t set body = x.body, edited_at = x.ts
      from json_to_recordset(${json(rows)}::json) as x(ref text, body text, ts bigint)
      where t.id = x.ref and t.kind = 'message' and t.deleted_at is null and (t.edited_at is null or t.edited_at < x.ts)`);
    // Edits written after their message's deletion lose their text at once.
    await tx.execute(sql`update messages e set body = '', deleted_at = t.deleted_at
      from messages t
      where e.id in (select value from json_array_elements_text(${json(events.map((x) => x.msgId))}::json))
        and t.id = e.ref and t.deleted_at is not null and e.deleted_at is null`);
  },
};

export const deleteKind: EventKind = {
  kind: "delete",
  inHistory: false,
  accept: (e, ctx) => acceptChange(e, ctx, "delete"),
  frame: () => ({}),
  async persist(tx: Db, events: ChatMessage[]) {
    const rows = json(events.map((e) => ({ ref: e.ref, ts: e.ts })));
    await tx.execute(sql`update messages m set body = '', deleted_at = coalesce(m.deleted_at, x.ts)
      from json_to_recordset(${rows}::json) as x(ref text, ts bigint)
      where m.id = x.ref and m.kind = 'message'`);
    await tx.execute(sql`update messages m set body = '', deleted_at = coalesce(m.deleted_at, x.ts)
      from json_to_recordset(${rows}::json) as x(ref text, ts bigint)
      where m.ref = x.ref and m.kind = 'edit'`);
  },
};
