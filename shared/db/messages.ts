import { sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import { LEGACY_EPOCH, type Position } from "../stream/position.ts";
import type { Db } from "./index.ts";

/** A message as read from one user's stream: with its position there. */
export interface StreamMessage extends ChatMessage {
  position: Position;
}

/** One stream entry to write: `msgId` enters `user`'s stream at `position`. */
export interface StreamEntry {
  user: string;
  position: Position;
  msgId: string;
  conv: string;
  /** The record's kind: "message", or an event's kind. */
  kind?: string;
}

export function conversationKey(m: { from: string; to?: string; group?: string }): string {
  if (m.group !== undefined) return `g:${m.group}`;
  const a = m.from;
  const b = m.to!;
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/**
 * Writes a batch of messages (and events) and their stream entries in one statement, idempotent on
 * the message id and on (user, epoch, pos): a redelivered batch writes nothing twice. No lock: any
 * number of writers may run at once, since positions were decided before. With `after` (what
 * events do besides being inserted: an edit updates its message) the insert and `after` run in one
 * transaction. Returns how many records were new.
 */
export async function insertBatch(db: Db, batch: ChatMessage[], entries: StreamEntry[], after?: (tx: Db) => Promise<void>): Promise<number> {
  if (batch.length === 0 && entries.length === 0) return 0;
  if (!after) return insertRows(db, batch, entries);
  return db.transaction(async (tx) => {
    const n = await insertRows(tx as unknown as Db, batch, entries);
    await after(tx as unknown as Db);
    return n;
  });
}

async function insertRows(db: Db, batch: ChatMessage[], entries: StreamEntry[]): Promise<number> {
  // An absent key is NULL to json_to_recordset: undefined fields are left out of the JSON (shorter).
  const rows = batch.map((m) => ({
    id: m.msgId,
    client_id: m.id,
    sender: m.from,
    recipient: m.to,
    group_id: m.group,
    conv: conversationKey(m),
    body: m.body,
    ts: m.ts,
    kind: m.kind ?? "message",
    ref: m.ref,
    data: m.data,
  }));
  const stream = entries.map((e) => ({ user_id: e.user, epoch: e.position.epoch, pos: e.position.pos, msg_id: e.msgId, conv: e.conv, kind: e.kind ?? "message" }));
  const result = await db.execute(sql`
    with m as (
      insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts, kind, ref, data)
      select x.id, x.client_id, x.sender, x.recipient, x.group_id, x.conv, x.body, x.ts, x.kind, x.ref, x.data
      from json_to_recordset(${JSON.stringify(rows)}::json)
        as x(id text, client_id text, sender text, recipient text, group_id text, conv text, body text, ts bigint, kind text, ref text, data jsonb)
      order by x.id
      on conflict (id) do nothing
      returning 1
    ), s as (
      insert into stream (user_id, epoch, pos, msg_id, conv, kind)
      select y.user_id, y.epoch, y.pos, y.msg_id, y.conv, y.kind
      from json_to_recordset(${JSON.stringify(stream)}::json)
        as y(user_id text, epoch bigint, pos bigint, msg_id text, conv text, kind text)
      order by y.user_id, y.epoch, y.pos
      on conflict do nothing
      returning 1
    )
    select (select count(*) from m)::int as messages, (select count(*) from s)::int as entries`);
  return Number(firstRow<{ messages: number }>(result)?.messages ?? 0);
}

export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}
const firstRow = <T>(result: unknown): T | undefined => rowsOf<T>(result)[0];

type RecordRow = {
  msg_id: string;
  client_id: string;
  sender: string;
  recipient: string | null;
  group_id: string | null;
  body: string;
  ts: string | number;
  kind: string;
  ref: string | null;
  data: unknown;
  edited_at: string | number | null;
  deleted_at: string | number | null;
};
export type Row = RecordRow & { epoch: string | number; pos: string | number };

function toRecord(r: RecordRow): ChatMessage {
  const m: ChatMessage = { msgId: r.msg_id, id: r.client_id, from: r.sender, body: r.body, ts: Number(r.ts) };
  if (r.group_id !== null) m.group = r.group_id;
  else if (r.recipient !== null) m.to = r.recipient;
  if (r.kind !== "message") m.kind = r.kind;
  if (r.ref !== null) m.ref = r.ref;
  if (r.data !== null && r.data !== undefined) m.data = (typeof r.data === "string" ? JSON.parse(r.data) : r.data) as Record<string, unknown>;
  if (r.edited_at !== null && r.deleted_at === null) m.editedAt = Number(r.edited_at);
  if (r.deleted_at !== null) m.deletedAt = Number(r.deleted_at);
  return m;
}

export const toMessage = (r: Row): StreamMessage => Object.assign(toRecord(r), { position: { epoch: Number(r.epoch), pos: Number(r.pos) } });

const RECORD_COLUMNS = sql`m.client_id, m.sender, m.recipient, m.group_id, m.body, m.ts, m.kind, m.ref, m.data, m.edited_at, m.deleted_at`;
export const SELECT_ENTRY = sql`select s.epoch, s.pos, s.msg_id, ${RECORD_COLUMNS}
  from stream s join messages m on m.id = s.msg_id`;

/** The stored records (messages or events) with these ids, by id. */
export async function readRecords(db: Db, ids: string[]): Promise<Map<string, ChatMessage>> {
  const rows = rowsOf<RecordRow>(
    await db.execute(sql`select m.id as msg_id, ${RECORD_COLUMNS} from messages m
      where m.id in (select value from json_array_elements_text(${JSON.stringify(ids)}::json))`),
  );
  return new Map(rows.map((r) => [r.msg_id, toRecord(r)]));
}

/**
 * Every user whose stream a stored message entered (a group's members at the time of its send).
 * Direct messages need no lookup; group entries alone are indexed by msg_id (a partial index: the
 * stream's busiest writes, a direct message's two entries, do not pay for it).
 */
export async function recipientsOf(db: Db, m: ChatMessage): Promise<string[]> {
  if (m.group === undefined) return m.to === undefined || m.to === m.from ? [m.from] : [m.from, m.to];
  const rows = rowsOf<{ user_id: string }>(await db.execute(sql`select distinct user_id from stream where msg_id = ${m.msgId} and conv like 'g:%'`));
  return rows.map((r) => r.user_id);
}

/**
 * One page of `user`'s stream with after < position <= upTo, oldest first. An entry whose message
 * row is not written yet is left out (its writer commits both in one statement, so this does not
 * happen for entries written by persist).
 */
export async function readStream(db: Db, user: string, after: Position, upTo: Position, limit: number): Promise<StreamMessage[]> {
  const rows = await db.execute(sql`${SELECT_ENTRY}
    where s.user_id = ${user} and (s.epoch, s.pos) > (${after.epoch}, ${after.pos}) and (s.epoch, s.pos) <= (${upTo.epoch}, ${upTo.pos})
    order by s.epoch, s.pos limit ${limit}`);
  return rowsOf<Row>(rows).map(toMessage);
}

/**
 * A page of one conversation as `user` sees it (their stream), newest page first, rows oldest
 * first: the entries whose kind is one of `kinds` (default: messages only).
 */
export async function readConversation(db: Db, user: string, conv: string, before: Position | undefined, limit: number, kinds: readonly string[] = ["message"]): Promise<{ messages: StreamMessage[]; more: boolean }> {
  const b = before ?? { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
  const rows = rowsOf<Row>(
    await db.execute(sql`${SELECT_ENTRY}
      where s.user_id = ${user} and s.conv = ${conv} and (s.epoch, s.pos) < (${b.epoch}, ${b.pos})
        and s.kind in (select value from json_array_elements_text(${JSON.stringify(kinds)}::json))
      order by s.epoch desc, s.pos desc limit ${limit + 1}`),
  );
  const more = rows.length > limit;
  return { messages: rows.slice(0, limit).reverse().map(toMessage), more };
}

/** How many entries `user`'s stream holds in epoch `epoch` with from < pos <= to. */
export async function countEntries(db: Db, user: string, epoch: number, from: number, to: number): Promise<number> {
  const r = await db.execute(sql`select count(*)::int as n from stream where user_id = ${user} and epoch = ${epoch} and pos > ${from} and pos <= ${to}`);
  return Number(firstRow<{ n: number }>(r)?.n ?? 0);
}

/** The position of the latest entry of `user`'s stream, or null when it has none. */
export async function latestPosition(db: Db, user: string): Promise<Position | null> {
  const r = firstRow<{ epoch: string; pos: string }>(await db.execute(sql`select epoch, pos from stream where user_id = ${user} order by epoch desc, pos desc limit 1`));
  return r ? { epoch: Number(r.epoch), pos: Number(r.pos) } : null;
}

/** Whether `user`'s stream holds any entry of `epoch`. */
export async function hasEntries(db: Db, user: string, epoch: number): Promise<boolean> {
  const r = await db.execute(sql`select exists (select 1 from stream where user_id = ${user} and epoch = ${epoch}) as e`);
  return Boolean(firstRow<{ e: boolean }>(r)?.e);
}

/** Maps a cursor of the previous version (a commit sequence) onto the user's legacy epoch. */
export async function legacyPosition(db: Db, user: string, seq: number): Promise<Position> {
  const r = await db.execute(sql`select coalesce(max(s.pos), 0)::bigint as pos from stream s join messages m on m.id = s.msg_id
    where s.user_id = ${user} and s.epoch = ${LEGACY_EPOCH} and m.seq <= ${seq}`);
  return { epoch: LEGACY_EPOCH, pos: Number(firstRow<{ pos: number }>(r)?.pos ?? 0) };
}

/**
 * The history a new group member is given: the latest `limit` messages of `from`'s stream in `conv`
 * (not deleted; no events) that `to`'s stream does not hold yet, oldest first.
 */
export async function historyToShare(db: Db, from: string, to: string, conv: string, limit: number): Promise<StreamMessage[]> {
  const rows = rowsOf<Row>(
    await db.execute(sql`${SELECT_ENTRY}
      where s.user_id = ${from} and s.conv = ${conv} and s.kind = 'message' and m.deleted_at is null
        and not exists (select 1 from stream t where t.user_id = ${to} and t.conv = ${conv} and t.msg_id = s.msg_id)
      order by s.epoch desc, s.pos desc limit ${limit}`),
  );
  return rows.reverse().map(toMessage);
}
