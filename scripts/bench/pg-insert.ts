/**
 * What one message costs PostgreSQL to store, apart from everything else: starts a PostgreSQL of its
 * own (scripts/infra.ts), migrates it, and inserts direct messages the way persist does (one
 * statement per batch of 1,000: the message row and its two stream entries), reading the CPU of the
 * database backend that ran the statements from /proc. Then the same without the full-text index and
 * without the per-conversation stream index, to show what each costs, and with `unnest` arrays
 * instead of `json_to_recordset`.
 *
 *   bun run scripts/bench/pg-insert.ts [batches]     (default 60 batches of 1,000 messages each)
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import { startInfra } from "../infra.ts";
import { migrateDatabase, openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
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
  const variants: Array<[string, string, (ms: ChatMessage[], es: StreamEntry[]) => Promise<unknown>]> = [
    ["as persist writes (json_to_recordset)", "", (ms, es) => insertBatch(db.db, ms, es)],
    ["unnest arrays instead", "", unnest],
    ["without the full-text index (messages_search)", "drop index messages_search", (ms, es) => insertBatch(db.db, ms, es)],
    ["... and without stream_user_conv", "drop index stream_user_conv", (ms, es) => insertBatch(db.db, ms, es)],
  ];
  const body = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";
  let n = 0;
  console.log(`| variant | backend CPU µs per message | wall µs per message |\n| --- | --- | --- |`);
  for (const [name, ddl, insert] of variants) {
    if (ddl) await db.db.execute(sql.raw(ddl));
    const [{ p }] = (await db.db.execute(sql`select pg_backend_pid() as p`)) as unknown as [{ p: number }];
    const c0 = cpuOf(p);
    const t0 = performance.now();
    for (let b = 0; b < batches; b++) {
      const ms: ChatMessage[] = [];
      const es: StreamEntry[] = [];
      for (let i = 0; i < SIZE; i++) {
        n++;
        const from = `user-${n % 1000}`;
        const to = `user-${(n + 500) % 1000}`;
        const m: ChatMessage = { msgId: `m-${n}-${crypto.randomUUID()}`, id: `c${n}`, from, to, body: `${body} ${n}`, ts: Date.now() };
        const conv = conversationKey(m);
        ms.push(m);
        es.push({ user: from, position: { epoch: 1, pos: n }, msgId: m.msgId, conv }, { user: to, position: { epoch: 1, pos: n }, msgId: m.msgId, conv });
      }
      await insert(ms, es);
    }
    const per = (x: number) => ((x * 1e6) / (batches * SIZE)).toFixed(1);
    console.log(`| ${name} | ${per(cpuOf(p) - c0)} | ${per((performance.now() - t0) / 1000)} |`);
  }
  await db.close();
} finally {
  await infra.stop();
}
