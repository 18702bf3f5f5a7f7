import { sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import { LEGACY_EPOCH, type Position } from "../stream/position.ts";
import { executePrepared, type Db } from "./index.ts";

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

/**
 * Whether `m`'s two stream entries (its sender's and its recipient's) are kept in its own row
 * instead of as two `stream` rows: a direct message between two users (docs/delivery.md, "Where
 * entries are stored"). Group messages, events and notes to self keep theirs in `stream`.
 */
const keepsEntriesInRow = (m: ChatMessage) => m.group === undefined && m.to !== undefined && m.to !== m.from && m.kind === undefined;

/** Where `e`, an entry of `m`, goes in `m`'s row: the sender's columns, the recipient's, or none (a `stream` row). */
function sideInRow(m: ChatMessage, e: StreamEntry): "s" | "r" | undefined {
  if (!keepsEntriesInRow(m) || (e.kind ?? "message") !== "message") return undefined;
  if (e.user === m.from) return "s";
  if (e.user === m.to) return "r";
  return undefined;
}

const STREAM_COLUMNS = sql`user_id text, epoch bigint, pos bigint, msg_id text, conv text, kind text`;
const streamJson = (es: StreamEntry[]) => JSON.stringify(es.map((e) => ({ user_id: e.user, epoch: e.position.epoch, pos: e.position.pos, msg_id: e.msgId, conv: e.conv, kind: e.kind ?? "message" })));

async function insertRows(db: Db, batch: ChatMessage[], entries: StreamEntry[]): Promise<number> {
  // Which entries go where: a direct message of this batch keeps its users' entries in its row
  // (`inRow`); every other entry goes to `stream`. An entry whose message is not in this batch is
  // checked against both places (`checked`), so a position taken either way is never taken twice.
  const inBatch = new Map<string, ChatMessage>();
  for (const m of batch) inBatch.set(m.msgId, m);
  const inRow = new Map<string, { s?: StreamEntry; r?: StreamEntry }>();
  const plain: StreamEntry[] = [];
  const checked: StreamEntry[] = [];
  for (const e of entries) {
    const m = inBatch.get(e.msgId);
    if (m === undefined) {
      checked.push(e);
      continue;
    }
    const side = sideInRow(m, e);
    let held = inRow.get(e.msgId);
    if (side !== undefined && !held) inRow.set(e.msgId, (held = {}));
    // a second entry for the same side (new positions in one batch) is a stream row
    if (side === undefined || held![side] !== undefined) plain.push(e);
    else held![side] = e;
  }
  // An absent key is NULL to json_to_recordset: undefined fields are left out of the JSON (shorter).
  const rows = batch.map((m) => {
    const held = inRow.get(m.msgId);
    return {
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
      s_epoch: held?.s?.position.epoch,
      s_pos: held?.s?.position.pos,
      r_epoch: held?.r?.position.epoch,
      r_pos: held?.r?.position.pos,
    };
  });
  const result = await executePrepared(db, sql`
    with m as (
      insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts, kind, ref, data, s_epoch, s_pos, r_epoch, r_pos)
      select x.id, x.client_id, x.sender, x.recipient, x.group_id, x.conv, x.body, x.ts, x.kind, x.ref, x.data, x.s_epoch, x.s_pos, x.r_epoch, x.r_pos
      from json_to_recordset(${JSON.stringify(rows)}::json)
        as x(id text, client_id text, sender text, recipient text, group_id text, conv text, body text, ts bigint, kind text, ref text, data jsonb,
          s_epoch bigint, s_pos bigint, r_epoch bigint, r_pos bigint)
      order by x.id
      on conflict (id) do nothing
      returning id
    ), s as (
      insert into stream (user_id, epoch, pos, msg_id, conv, kind)
      select y.user_id, y.epoch, y.pos, y.msg_id, y.conv, y.kind
      from json_to_recordset(${streamJson(plain)}::json) as y(${STREAM_COLUMNS})
      order by y.user_id, y.epoch, y.pos
      on conflict do nothing
      returning 1
    )
    select (select count(*) from m)::int as messages,
      (select count(*) from s)::int as entries,
      case when (select count(*) from m) < ${batch.length} then (select coalesce(json_agg(id), '[]'::json) from m) end as ids`);
  const r = firstRow<{ messages: number; ids: unknown }>(result);
  if (r && Number(r.messages) < batch.length && inRow.size > 0) {
    // A message already stored (a redelivery; or a concurrent writer of it, which this statement
    // waited for): the entries meant for its row go to `stream` unless its row or `stream` holds
    // them already. A new statement, so it sees that other writer's commit.
    const written = new Set<string>(typeof r.ids === "string" ? JSON.parse(r.ids) : ((r.ids ?? []) as string[]));
    for (const [id, held] of inRow) if (!written.has(id)) for (const e of [held.s, held.r]) if (e) checked.push(e);
  }
  if (checked.length > 0)
    await executePrepared(db, sql`
      insert into stream (user_id, epoch, pos, msg_id, conv, kind)
      select y.user_id, y.epoch, y.pos, y.msg_id, y.conv, y.kind
      from json_to_recordset(${streamJson(checked)}::json) as y(${STREAM_COLUMNS})
      where not exists (select 1 from messages x where x.sender = y.user_id and x.s_epoch = y.epoch and x.s_pos = y.pos and x.s_pos is not null)
        and not exists (select 1 from messages x where x.recipient = y.user_id and x.r_epoch = y.epoch and x.r_pos = y.pos and x.r_pos is not null)
      order by y.user_id, y.epoch, y.pos
      on conflict do nothing`);
  return Number(r?.messages ?? 0);
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
/**
 * Every user's stream as one relation `s` (user_id, epoch, pos, kind, msg_id, conv): `stream`'s
 * rows and the entries direct messages keep in their own rows, as sender and as recipient
 * (docs/delivery.md, "Where entries are stored"). Always read with `ofUser` in the WHERE clause.
 * The branches have no WHERE of their own, so PostgreSQL flattens them into one append relation,
 * pushes the conditions into each (where they match stream's primary key or stream_user_conv,
 * messages_sender_pos/_conv, messages_recipient_pos/_conv) and merges the index scans in (epoch,
 * pos) order: a LIMIT reads no more of a long stream than it returns.
 */
export const ENTRIES = sql`(
  select st.user_id, st.epoch, st.pos, st.kind, st.msg_id, st.conv from stream st
  union all
  select ms.sender, ms.s_epoch, ms.s_pos, ms.kind, ms.id, ms.conv from messages ms
  union all
  select mr.recipient, mr.r_epoch, mr.r_pos, mr.kind, mr.id, mr.conv from messages mr
) s`;

/** `user`'s entries in ENTRIES (a row without a position there is no entry). */
export const ofUser = (user: string) => sql`s.user_id = ${user} and s.pos is not null`;

/** The entries of `user`'s stream with their records: continue the WHERE clause with `and` on s.* and m.* columns. */
export const selectEntries = (user: string) => sql`select s.epoch, s.pos, s.msg_id, ${RECORD_COLUMNS}
  from ${ENTRIES} join messages m on m.id = s.msg_id where ${ofUser(user)}`;

/** The stored records (messages or events) with these ids, by id. */
export async function readRecords(db: Db, ids: string[]): Promise<Map<string, ChatMessage>> {
  const rows = rowsOf<RecordRow>(
    await executePrepared(db, sql`select m.id as msg_id, ${RECORD_COLUMNS} from messages m
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
  const rows = rowsOf<{ user_id: string }>(await executePrepared(db, sql`select distinct user_id from stream where msg_id = ${m.msgId} and conv like 'g:%'`));
  return rows.map((r) => r.user_id);
}

/**
 * One page of `user`'s stream with after < position <= upTo, oldest first. An entry whose message
 * row is not written yet is left out (its writer commits both in one statement, so this does not
 * happen for entries written by persist).
 */
export async function readStream(db: Db, user: string, after: Position, upTo: Position, limit: number): Promise<StreamMessage[]> {
  return rowsOf<Row>(await executePrepared(db, streamQuery(user, after, upTo, limit))).map(toMessage);
}

/** readStream's statement (its plan is checked in the contract suite: a page reads no more than it returns). */
export const streamQuery = (user: string, after: Position, upTo: Position, limit: number) => sql`${selectEntries(user)}
    and (s.epoch, s.pos) > (${after.epoch}, ${after.pos}) and (s.epoch, s.pos) <= (${upTo.epoch}, ${upTo.pos})
    order by s.epoch, s.pos limit ${limit}`;

/**
 * A page of one conversation as `user` sees it (their stream), newest page first, rows oldest
 * first: the entries whose kind is one of `kinds` (default: messages only).
 */
export async function readConversation(db: Db, user: string, conv: string, before: Position | undefined, limit: number, kinds: readonly string[] = ["message"]): Promise<{ messages: StreamMessage[]; more: boolean }> {
  const b = before ?? { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
  const rows = rowsOf<Row>(
    await executePrepared(db, sql`${selectEntries(user)}
      and s.conv = ${conv} and (s.epoch, s.pos) < (${b.epoch}, ${b.pos})
        and s.kind in (select value from json_array_elements_text(${JSON.stringify(kinds)}::json))
      order by s.epoch desc, s.pos desc limit ${limit + 1}`),
  );
  const more = rows.length > limit;
  return { messages: rows.slice(0, limit).reverse().map(toMessage), more };
}

/** How many entries `user`'s stream holds in epoch `epoch` with from < pos <= to. */
export async function countEntries(db: Db, user: string, epoch: number, from: number, to: number): Promise<number> {
  return (await countEntriesOf(db, [{ user, epoch, from, to }]))[0]!;
}

/**
 * countEntries for many ranges in one statement (answers in the order given): how many entries each
 * `user`'s stream holds in `epoch` with from < pos <= to. Each range reads its user's indexes (the
 * conditions reach every branch of ENTRIES: index-only scans).
 */
export async function countEntriesOf(db: Db, ranges: Array<{ user: string; epoch: number; from: number; to: number }>): Promise<number[]> {
  if (ranges.length === 0) return [];
  const json = JSON.stringify(ranges.map((r, i) => ({ i, u: r.user, e: r.epoch, a: r.from, b: r.to })));
  const rows = rowsOf<{ i: number; n: number }>(
    await executePrepared(db, sql`select r.i, (select count(*) from ${ENTRIES}
        where s.user_id = r.u and s.pos is not null and s.epoch = r.e and s.pos > r.a and s.pos <= r.b)::int as n
      from json_to_recordset(${json}::json) as r(i int, u text, e bigint, a bigint, b bigint)`),
  );
  const out = ranges.map(() => 0);
  for (const r of rows) out[Number(r.i)] = Number(r.n);
  return out;
}

/** The position of the latest entry of `user`'s stream, or null when it has none. */
export async function latestPosition(db: Db, user: string): Promise<Position | null> {
  const r = firstRow<{ epoch: string; pos: string }>(await executePrepared(db, latestQuery(user)));
  return r ? { epoch: Number(r.epoch), pos: Number(r.pos) } : null;
}

/** latestPosition's statement. */
export const latestQuery = (user: string) => sql`select s.epoch, s.pos from ${ENTRIES} where ${ofUser(user)} order by s.epoch desc, s.pos desc limit 1`;

/** Whether `user`'s stream holds any entry of `epoch`. */
export async function hasEntries(db: Db, user: string, epoch: number): Promise<boolean> {
  const r = await executePrepared(db, sql`select exists (select 1 from ${ENTRIES} where ${ofUser(user)} and s.epoch = ${epoch}) as e`);
  return Boolean(firstRow<{ e: boolean }>(r)?.e);
}

/** Maps a cursor of the previous version (a commit sequence) onto the user's legacy epoch. */
export async function legacyPosition(db: Db, user: string, seq: number): Promise<Position> {
  const r = await executePrepared(db, sql`select coalesce(max(s.pos), 0)::bigint as pos from stream s join messages m on m.id = s.msg_id
    where s.user_id = ${user} and s.epoch = ${LEGACY_EPOCH} and m.seq <= ${seq}`);
  return { epoch: LEGACY_EPOCH, pos: Number(firstRow<{ pos: number }>(r)?.pos ?? 0) };
}

/**
 * The history a new group member is given: the latest `limit` messages of `from`'s stream in `conv`
 * (not deleted; no events) that `to`'s stream does not hold yet, oldest first.
 */
export async function historyToShare(db: Db, from: string, to: string, conv: string, limit: number): Promise<StreamMessage[]> {
  const rows = rowsOf<Row>(
    await executePrepared(db, sql`${selectEntries(from)}
      and s.conv = ${conv} and s.kind = 'message' and m.deleted_at is null
        and not exists (select 1 from stream t where t.user_id = ${to} and t.conv = ${conv} and t.msg_id = s.msg_id)
      order by s.epoch desc, s.pos desc limit ${limit}`),
  );
  return rows.reverse().map(toMessage);
}
