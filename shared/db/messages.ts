import { and, asc, desc, eq, gt, inArray, lt, lte, max, ne, or, sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import type { Db } from "./index.ts";
import { groupMembers, messages } from "./schema.ts";

/** Any 64-bit key; every writer of `messages` takes it so commit order equals `seq` order. */
const MESSAGES_WRITE_LOCK = 0x63686174;

export interface StoredMessage extends ChatMessage {
  seq: number;
}

export function conversationKey(m: { from: string; to?: string; group?: string }): string {
  if (m.group !== undefined) return `g:${m.group}`;
  const a = m.from;
  const b = m.to!;
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/**
 * Inserts a batch in one statement, idempotent on the message id. The advisory lock serialises
 * writers, so a transaction that draws larger `seq` values always commits after every transaction
 * that drew smaller ones: readers see committed rows as a prefix of `seq`.
 * Returns how many rows were new.
 */
export async function insertMessages(db: Db, batch: ChatMessage[]): Promise<number> {
  if (batch.length === 0) return 0;
  const rows = batch.map((m) => ({
    id: m.msgId,
    client_id: m.id,
    sender: m.from,
    recipient: m.to ?? null,
    group_id: m.group ?? null,
    conv: conversationKey(m),
    body: m.body,
    ts: m.ts,
  }));
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${MESSAGES_WRITE_LOCK})`);
    const inserted = await tx.execute(sql`
      insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts)
      select x.id, x.client_id, x.sender, x.recipient, x.group_id, x.conv, x.body, x.ts
      from json_to_recordset(${JSON.stringify(rows)}::json)
        as x(id text, client_id text, sender text, recipient text, group_id text, conv text, body text, ts bigint)
      on conflict (id) do nothing
      returning 1`);
    return rowCount(inserted);
  });
}

function rowCount(result: unknown): number {
  if (Array.isArray(result)) return result.length;
  const r = result as { rows?: unknown[]; affectedRows?: number };
  return r.rows?.length ?? r.affectedRows ?? 0;
}

const columns = {
  seq: messages.seq,
  msgId: messages.id,
  id: messages.clientId,
  from: messages.sender,
  to: messages.recipient,
  group: messages.groupId,
  body: messages.body,
  ts: messages.ts,
};

type Row = { seq: number; msgId: string; id: string; from: string; to: string | null; group: string | null; body: string; ts: number };

function toStored(r: Row): StoredMessage {
  const m: StoredMessage = { seq: Number(r.seq), msgId: r.msgId, id: r.id, from: r.from, body: r.body, ts: Number(r.ts) };
  if (r.group !== null) m.group = r.group;
  else if (r.to !== null) m.to = r.to;
  return m;
}

/** The top of the committed prefix of `seq`: every message with seq <= it is visible now and forever. */
export async function committedWatermark(db: Db): Promise<number> {
  const [r] = await db.select({ w: max(messages.seq) }).from(messages);
  return Number(r?.w ?? 0);
}

/**
 * One page of the messages that involve `user` (sent by them, addressed to them, or to a group they
 * are in now) with after < seq <= upTo, oldest first.
 */
export async function readInvolving(db: Db, user: string, after: number, upTo: number, limit: number): Promise<StoredMessage[]> {
  const myGroups = db.select({ g: groupMembers.groupId }).from(groupMembers).where(eq(groupMembers.userId, user));
  const rows = await db
    .select(columns)
    .from(messages)
    .where(
      and(
        gt(messages.seq, after),
        lte(messages.seq, upTo),
        or(eq(messages.sender, user), eq(messages.recipient, user), and(ne(messages.sender, user), inArray(messages.groupId, myGroups))),
      ),
    )
    .orderBy(asc(messages.seq))
    .limit(limit);
  return rows.map(toStored);
}

/** A page of one conversation's history, newest page first, rows oldest first; `more` when older rows exist. */
export async function readHistory(db: Db, conv: string, before: number | undefined, limit: number): Promise<{ messages: StoredMessage[]; more: boolean }> {
  const rows = await db
    .select(columns)
    .from(messages)
    .where(before === undefined ? eq(messages.conv, conv) : and(eq(messages.conv, conv), lt(messages.seq, before)))
    .orderBy(desc(messages.seq))
    .limit(limit + 1);
  const more = rows.length > limit;
  return { messages: rows.slice(0, limit).reverse().map(toStored), more };
}
