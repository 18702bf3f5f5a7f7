import { sql } from "drizzle-orm";
import type { ChatMessage } from "../protocol.ts";
import type { Position } from "../stream/position.ts";
import { executePrepared, type Db } from "./index.ts";
import { ENTRIES, ofUser, rowsOf } from "./messages.ts";

/**
 * Receipts and the conversation list, read from `stream`, `messages` and `read_state`.
 *
 * Ordering across users: a reader's marker is a position in the reader's own stream (exact for
 * their unread count). Another user sees one of their messages as read (delivered) by the reader
 * when its (ts, msgId) is at or before the marker message's (ts, msgId): streams of different
 * users may order messages sent within the same few milliseconds differently, so no position
 * is shared by all of them; the server's accept time is.
 */

/** Unread counts stop at this (a conversation with more shows this number). */
export const UNREAD_CAP = 9999;

/** A marker as others see it: the message read (delivered) up to. */
export interface Marker {
  msgId: string;
  ts: number;
}

export interface StreamEntryInfo {
  kind: string;
  conv: string;
  msgId: string;
  ts: number;
  from: string;
}

/** The entry of `user`'s stream at `p` with its message's sender and ts, or null when none is stored there. */
export async function entryAt(db: Db, user: string, p: Position): Promise<StreamEntryInfo | null> {
  const [r] = rowsOf<{ kind: string; conv: string; msg_id: string; ts: string | number; sender: string }>(
    await executePrepared(db, sql`select s.kind, s.conv, s.msg_id, m.ts, m.sender from ${ENTRIES} join messages m on m.id = s.msg_id
      where ${ofUser(user)} and s.epoch = ${p.epoch} and s.pos = ${p.pos}`),
  );
  return r ? { kind: r.kind, conv: r.conv, msgId: r.msg_id, ts: Number(r.ts), from: r.sender } : null;
}

/** `user`'s read marker in `conv` (a position in their stream), or null. */
export async function readMarker(db: Db, user: string, conv: string): Promise<Position | null> {
  const [r] = rowsOf<{ e: string | null; p: string | null }>(await executePrepared(db, sql`select read_epoch as e, read_pos as p from read_state where user_id = ${user} and conv = ${conv}`));
  return r?.e != null && r.p != null ? { epoch: Number(r.e), pos: Number(r.p) } : null;
}

/**
 * Moves `user`'s read marker in `conv` forward to `p` (never back). Answers whether it moved, and
 * the marker it replaced (null: none).
 */
export async function advanceRead(db: Db, user: string, conv: string, p: Position, m: Marker): Promise<{ advanced: boolean; previous: Position | null }> {
  const [r] = rowsOf<{ e: string | null; p: string | null; n: number }>(
    await executePrepared(db, sql`
      with old as (select read_epoch, read_pos from read_state where user_id = ${user} and conv = ${conv}),
      up as (
        insert into read_state (user_id, conv, read_epoch, read_pos, read_msg_id, read_ts)
        values (${user}, ${conv}, ${p.epoch}, ${p.pos}, ${m.msgId}, ${m.ts})
        on conflict (user_id, conv) do update set read_epoch = excluded.read_epoch, read_pos = excluded.read_pos,
          read_msg_id = excluded.read_msg_id, read_ts = excluded.read_ts
        where read_state.read_epoch is null or (read_state.read_epoch, read_state.read_pos) < (excluded.read_epoch, excluded.read_pos)
        returning 1
      )
      select (select read_epoch from old) as e, (select read_pos from old) as p, (select count(*) from up)::int as n`),
  );
  const previous = r?.e != null && r.p != null ? { epoch: Number(r.e), pos: Number(r.p) } : null;
  return { advanced: Number(r?.n ?? 0) > 0, previous };
}

/** The senders other than `user` of the messages in `user`'s stream of `conv` with after < position <= upTo. */
export async function sendersBetween(db: Db, user: string, conv: string, after: Position | null, upTo: Position): Promise<string[]> {
  const a = after ?? { epoch: -1, pos: 0 };
  const rows = rowsOf<{ sender: string }>(
    await executePrepared(db, sql`select distinct m.sender from ${ENTRIES} join messages m on m.id = s.msg_id
      where ${ofUser(user)} and s.conv = ${conv} and s.kind = 'message'
        and (s.epoch, s.pos) > (${a.epoch}, ${a.pos}) and (s.epoch, s.pos) <= (${upTo.epoch}, ${upTo.pos}) and m.sender <> ${user}`),
  );
  return rows.map((r) => r.sender);
}

/** Of `rows`, those that would move their user's delivered marker in the conversation forward. */
export async function deliveredAdvances<T extends { user: string; conv: string } & Marker>(db: Db, rows: T[]): Promise<T[]> {
  if (rows.length === 0) return [];
  const data = rows.map((r) => ({ user_id: r.user, conv: r.conv }));
  const have = rowsOf<{ user_id: string; conv: string; ts: string | null; msg_id: string | null }>(
    await executePrepared(db, sql`select r.user_id, r.conv, r.delivered_ts as ts, r.delivered_msg_id as msg_id
      from json_to_recordset(${JSON.stringify(data)}::json) as x(user_id text, conv text)
      join read_state r on r.user_id = x.user_id and r.conv = x.conv`),
  );
  const current = new Map(have.map((h) => [h.user_id + "\n" + h.conv, h.ts === null ? null : { ts: Number(h.ts), msgId: h.msg_id! }]));
  return rows.filter((r) => {
    const c = current.get(r.user + "\n" + r.conv);
    return !c || r.ts > c.ts || (r.ts === c.ts && r.msgId > c.msgId);
  });
}

/**
 * Moves delivered markers forward (never back), one statement for the batch (at most one row per
 * (user, conv)). Answers the rows that moved.
 */
export async function advanceDelivered(db: Db, rows: Array<{ user: string; conv: string } & Marker>): Promise<Array<{ user: string; conv: string }>> {
  if (rows.length === 0) return [];
  const data = rows.map((r) => ({ user_id: r.user, conv: r.conv, msg_id: r.msgId, ts: r.ts }));
  const out = rowsOf<{ user_id: string; conv: string }>(
    await executePrepared(db, sql`
      insert into read_state (user_id, conv, delivered_msg_id, delivered_ts)
      select x.user_id, x.conv, x.msg_id, x.ts from json_to_recordset(${JSON.stringify(data)}::json) as x(user_id text, conv text, msg_id text, ts bigint)
      order by x.user_id, x.conv
      on conflict (user_id, conv) do update set delivered_msg_id = excluded.delivered_msg_id, delivered_ts = excluded.delivered_ts
      where read_state.delivered_ts is null or (read_state.delivered_ts, read_state.delivered_msg_id) < (excluded.delivered_ts, excluded.delivered_msg_id)
      returning user_id, conv`),
  );
  return out.map((r) => ({ user: r.user_id, conv: r.conv }));
}

export interface ParticipantReceipts {
  read: Marker | null;
  delivered: Marker | null;
}

const later = (a: Marker | null, b: Marker | null) => (!a ? b : !b ? a : a.ts > b.ts || (a.ts === b.ts && a.msgId > b.msgId) ? a : b);

/** Read and delivered markers of `users` in `conv` (delivered is at least read). */
export async function receiptsOf(db: Db, conv: string, users: string[]): Promise<Record<string, ParticipantReceipts>> {
  const out: Record<string, ParticipantReceipts> = {};
  for (const u of users) out[u] = { read: null, delivered: null };
  if (users.length === 0) return out;
  const rows = rowsOf<{ user_id: string; read_msg_id: string | null; read_ts: string | null; delivered_msg_id: string | null; delivered_ts: string | null }>(
    await executePrepared(db, sql`select user_id, read_msg_id, read_ts, delivered_msg_id, delivered_ts from read_state
      where conv = ${conv} and user_id in (select value from json_array_elements_text(${JSON.stringify(users)}::json))`),
  );
  for (const r of rows) {
    const read = r.read_msg_id !== null ? { msgId: r.read_msg_id, ts: Number(r.read_ts) } : null;
    const delivered = r.delivered_msg_id !== null ? { msgId: r.delivered_msg_id, ts: Number(r.delivered_ts) } : null;
    out[r.user_id] = { read, delivered: later(read, delivered) };
  }
  return out;
}

export interface ConversationRow {
  conv: string;
  /** Position of the last message in the caller's stream (the page key). */
  position: Position;
  last: ChatMessage;
  groupName: string | null;
  unread: number;
  /** The caller's own read marker (a position in their stream), or null. */
  read: { position: Position; msgId: string } | null;
}

type ConvRow = {
  conv: string; epoch: string; pos: string; msg_id: string; client_id: string; sender: string; recipient: string | null;
  group_id: string | null; body: string; ts: string; group_name: string | null; unread: number;
  read_epoch: string | null; read_pos: string | null; read_msg_id: string | null;
};

/**
 * The caller's conversations (every conversation with a message in their stream; groups only while
 * they are a member), ordered by the position of their last message, newest first, those before
 * `before`. Cost: one index probe per conversation of the caller (a skip scan of stream_user_conv and of messages_sender_conv and messages_recipient_conv),
 * then, for the page only, the last message and the unread messages (at most UNREAD_CAP each).
 */
export async function conversationsPage(db: Db, user: string, before: Position | undefined, limit: number): Promise<{ rows: ConversationRow[]; more: boolean }> {
  const b = before ?? { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
  const rows = rowsOf<ConvRow>(
    await executePrepared(db, sql`
      with recursive convs(conv) as (
        select min(s.conv) from ${ENTRIES} where ${ofUser(user)}
        union all
        select (select min(s.conv) from ${ENTRIES} where ${ofUser(user)} and s.conv > convs.conv) from convs where convs.conv is not null
      ),
      page as (
        select c.conv, l.epoch, l.pos, l.msg_id from convs c
        cross join lateral (
          select s.epoch, s.pos, s.msg_id from ${ENTRIES} where ${ofUser(user)} and s.conv = c.conv and s.kind = 'message'
          order by s.epoch desc, s.pos desc limit 1
        ) l
        where c.conv is not null and (l.epoch, l.pos) < (${b.epoch}, ${b.pos})
          and (c.conv like 'd:%' or exists (select 1 from group_members gm where gm.group_id = substr(c.conv, 3) and gm.user_id = ${user}))
        order by l.epoch desc, l.pos desc
        limit ${limit + 1}
      )
      select p.conv, p.epoch, p.pos, p.msg_id, m.client_id, m.sender, m.recipient, m.group_id, m.body, m.ts, g.name as group_name,
        r.read_epoch, r.read_pos, r.read_msg_id,
        (select count(*) from (
          select 1 from ${ENTRIES} join messages um on um.id = s.msg_id
          where ${ofUser(user)} and s.conv = p.conv and s.kind = 'message' and um.sender <> ${user}
            and (s.epoch, s.pos) > (coalesce(r.read_epoch, -1), coalesce(r.read_pos, 0))
          limit ${UNREAD_CAP}
        ) u)::int as unread
      from page p
      join messages m on m.id = p.msg_id
      left join groups g on m.group_id is not null and g.id = m.group_id
      left join read_state r on r.user_id = ${user} and r.conv = p.conv
      order by p.epoch desc, p.pos desc`),
  );
  const more = rows.length > limit;
  return {
    more,
    rows: rows.slice(0, limit).map((r) => {
      const last: ChatMessage = { msgId: r.msg_id, id: r.client_id, from: r.sender, body: r.body, ts: Number(r.ts) };
      if (r.group_id !== null) last.group = r.group_id;
      else last.to = r.recipient!;
      return {
        conv: r.conv,
        position: { epoch: Number(r.epoch), pos: Number(r.pos) },
        last,
        groupName: r.group_name,
        unread: Number(r.unread),
        read: r.read_epoch !== null && r.read_msg_id !== null ? { position: { epoch: Number(r.read_epoch), pos: Number(r.read_pos) }, msgId: r.read_msg_id } : null,
      };
    }),
  };
}

/** Of `group`'s current members other than `except`, how many have read, and how many have had delivered, the message (ts, msgId). */
export async function groupCounts(db: Db, group: string, except: string, m: Marker): Promise<{ readBy: number; deliveredTo: number; of: number }> {
  const [r] = rowsOf<{ read_by: number; delivered_to: number; of: number }>(
    await executePrepared(db, sql`select
        count(*) filter (where r.read_ts is not null and (r.read_ts, r.read_msg_id) >= (${m.ts}, ${m.msgId}))::int as read_by,
        count(*) filter (where (r.read_ts is not null and (r.read_ts, r.read_msg_id) >= (${m.ts}, ${m.msgId}))
          or (r.delivered_ts is not null and (r.delivered_ts, r.delivered_msg_id) >= (${m.ts}, ${m.msgId})))::int as delivered_to,
        count(*)::int as of
      from group_members gm left join read_state r on r.user_id = gm.user_id and r.conv = ${"g:" + group}
      where gm.group_id = ${group} and gm.user_id <> ${except}`),
  );
  return { readBy: Number(r?.read_by ?? 0), deliveredTo: Number(r?.delivered_to ?? 0), of: Number(r?.of ?? 0) };
}
