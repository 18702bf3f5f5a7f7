import { sql } from "drizzle-orm";
import type { Position } from "../stream/position.ts";
import { executePrepared, type Db } from "./index.ts";
import { rowsOf, selectEntries, toMessage, type Row, type StreamMessage } from "./messages.ts";

/**
 * Which stored messages search may return. A deleted message keeps its row with an empty body
 * (a tombstone): this is the one place that leaves deleted messages out of search.
 */
const SEARCHABLE = sql`m.kind = 'message' and m.deleted_at is null and m.body <> ''`;

/**
 * One page of `user`'s messages matching the web-search query `q` (websearch_to_tsquery: words,
 * "quoted phrases", `or`, `-word`), newest first, older than `before` in `user`'s stream.
 *
 * What a user may search is what history shows them: the messages of their own stream (their
 * direct conversations, and group messages sent while they were a member), except those of a group
 * they are no longer a member of (history answers 403 there).
 */
export async function searchMessages(db: Db, user: string, q: string, before: Position | undefined, limit: number): Promise<{ messages: StreamMessage[]; more: boolean }> {
  const b = before ?? { epoch: Number.MAX_SAFE_INTEGER, pos: Number.MAX_SAFE_INTEGER };
  const rows = rowsOf<Row>(
    await executePrepared(db, sql`${selectEntries(user)}
      and (s.epoch, s.pos) < (${b.epoch}, ${b.pos})
        and m.search @@ websearch_to_tsquery('simple', ${q}) and ${SEARCHABLE}
        and (m.group_id is null or exists (select 1 from group_members gm where gm.group_id = m.group_id and gm.user_id = ${user}))
      order by s.epoch desc, s.pos desc limit ${limit + 1}`),
  );
  return { messages: rows.slice(0, limit).map(toMessage), more: rows.length > limit };
}
