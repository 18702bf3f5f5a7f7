/**
 * What one message costs PostgreSQL to store, apart from everything else: starts a PostgreSQL of its
 * own (scripts/infra.ts), migrates it, and inserts direct messages the way persist does (one
 * statement per batch of 1,000; since migration 0009 a direct message's two stream entries are
 * columns of its row), reading the CPU of the database backend that ran the statements from /proc.
 * Then the same without the full-text index and without stream_user_conv (which, since 0009, no
 * direct message uses: that variant now shows only the run-to-run drift), and the previous design
 * (message row + two stream rows) with `unnest` arrays instead of `json_to_recordset`;
 * scripts/bench/pg-inline.ts compares the current design with the previous one side by side. Two variants price storage designs this version does not use (issue 9's
 * "no slower than before"): the message row alone (what the commit-sequence version wrote), and one
 * row per direct message carrying both users' positions (a table of its own, `dm`, with an index
 * per user's stream and one per conversation for history).
 *
 *   bun run scripts/bench/pg-insert.ts [batches]     (default 60 batches of 1,000 messages each)
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import { startInfra } from "../infra.ts";
import { migrateDatabase, openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
import { directMessageBatches } from "./pg-batches.ts";
import type { ChatMessage } from "../../shared/protocol.ts";

const batches = Number(process.argv[2] ?? 60);
if (!Number.isInteger(batches) || batches < 1 || batches > 10_000) {
  console.error("usage: bun run scripts/bench/pg-insert.ts [batches, 1..10000]");
  process.exit(2);
}
const SIZE = 1000;
const infra = await startInfra({ only: ["postgres"] });
try {
  await infra.postgres.start();
  await migrateDatabase(infra.postgres.url);
  const db = openPostgres(infra.postgres.url, { max: 1 });
  const cpuOf = (pid: number) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  const unnest = (ms: ChatMessage[], es: StreamEntry[]) =>
    db.db.execute(sql`with m as (
      insert into messages (id, client_id, sender, recipient, group_id, conv, body, ts)
      select * from unnest(${sql.param(ms.map((m) => m.msgId))}::text[], ${sql.param(ms.map((m) => m.id))}::text[], ${sql.param(ms.map((m) => m.from))}::text[],
        ${sql.param(ms.map((m) => m.to ?? null))}::text[], ${sql.param(ms.map(() => null))}::text[], ${sql.param(ms.map(conversationKey))}::text[],
        ${sql.param(ms.map((m) => m.body))}::text[], ${sql.param(ms.map((m) => m.ts))}::bigint[])
      on conflict (id) do nothing returning 1
    ), s as (
      insert into stream (user_id, epoch, pos, msg_id, conv)
      select * from unnest(${sql.param(es.map((e) => e.user))}::text[], ${sql.param(es.map((e) => e.position.epoch))}::bigint[], ${sql.param(es.map((e) => e.position.pos))}::bigint[],
        ${sql.param(es.map((e) => e.msgId))}::text[], ${sql.param(es.map((e) => e.conv))}::text[])
      on conflict do nothing returning 1
    ) select (select count(*) from m)::int as messages, (select count(*) from s)::int as entries`);
  const messagesOnly = (ms: ChatMessage[]) => insertBatch(db.db, ms, []);
  const oneRow = (ms: ChatMessage[], es: StreamEntry[]) =>
    db.db.execute(sql`insert into dm (id, client_id, sender, recipient, conv, body, ts, s_epoch, s_pos, r_epoch, r_pos)
      select m.id, m.client_id, m.sender, m.recipient, m.conv, m.body, m.ts, 1, m.s_pos, 1, m.r_pos
      from json_to_recordset(${JSON.stringify(ms.map((m, i) => ({ id: m.msgId, client_id: m.id, sender: m.from, recipient: m.to, conv: conversationKey(m), body: m.body, ts: m.ts, s_pos: es[2 * i]!.position.pos, r_pos: es[2 * i + 1]!.position.pos })))}::json)
        as m(id text, client_id text, sender text, recipient text, conv text, body text, ts bigint, s_pos bigint, r_pos bigint)
      on conflict (id) do nothing`);
  const DM = `create table dm (id text primary key, seq bigserial, client_id text not null, sender text not null, recipient text not null, conv text not null,
    body text not null, ts bigint not null, s_epoch bigint not null, s_pos bigint not null, r_epoch bigint not null, r_pos bigint not null,
    search tsvector generated always as (to_tsvector('simple', body)) stored);
    create unique index dm_sender_pos on dm (sender, s_epoch, s_pos); create unique index dm_recipient_pos on dm (recipient, r_epoch, r_pos);
    create index dm_conv on dm (conv, seq); create index dm_search on dm using gin (search)`;
  const variants: Array<[string, string, (ms: ChatMessage[], es: StreamEntry[]) => Promise<unknown>]> = [
    ["as persist writes (json_to_recordset)", "", (ms, es) => insertBatch(db.db, ms, es)],
    ["unnest arrays instead", "", unnest],
    ["without the full-text index (messages_search)", "drop index messages_search", (ms, es) => insertBatch(db.db, ms, es)],
    ["... and without stream_user_conv", "drop index stream_user_conv", (ms, es) => insertBatch(db.db, ms, es)],
    ["the message row alone (no stream entries; with its full-text index)", "create index messages_search on messages using gin (search)", messagesOnly],
    ["one row per direct message with both positions (dm: 2 stream indexes, 1 per conversation, full-text)", DM, oneRow],
  ];
  const next = directMessageBatches(SIZE);
  console.log(`| variant | backend CPU µs per message | wall µs per message |\n| --- | --- | --- |`);
  for (const [name, ddl, insert] of variants) {
    if (ddl) await db.db.execute(sql.raw(ddl));
    const [{ p }] = (await db.db.execute(sql`select pg_backend_pid() as p`)) as unknown as [{ p: number }];
    const c0 = cpuOf(p);
    const t0 = performance.now();
    for (let b = 0; b < batches; b++) {
      const { ms, es } = next();
      await insert(ms, es);
    }
    const per = (x: number) => ((x * 1e6) / (batches * SIZE)).toFixed(1);
    console.log(`| ${name} | ${per(cpuOf(p) - c0)} | ${per((performance.now() - t0) / 1000)} |`);
  }
  await db.close();
} finally {
  await infra.stop();
}
