/**
 * Prices how persist stores a direct message (its two stream entries in its own `messages` row,
 * docs/delivery.md "Where entries are stored") against the design before it (the message row and
 * two `stream` rows, as the previous version's insert wrote them), side by side. Two databases on
 * one PostgreSQL of its own, both migrated; batches of 1,000 direct messages alternate between
 * them; CPU of each database's backend from /proc.
 *
 *   bun run scripts/bench/pg-inline.ts [rounds]     (default 30 rounds, one batch in each database per round)
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import { startInfra } from "../infra.ts";
import { migrateDatabase, openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
import { directMessageBatches } from "./pg-batches.ts";
import type { ChatMessage } from "../../shared/protocol.ts";

const rounds = Number(process.argv[2] ?? 30);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10_000) {
  console.error("usage: bun run scripts/bench/pg-inline.ts [rounds, 1..10000]");
  process.exit(2);
}
const SIZE = 1000;
const infra = await startInfra({ only: ["postgres"] });
try {
  await infra.postgres.start();
  const admin = openPostgres(infra.postgres.url, { max: 1 });
  await admin.db.execute(sql.raw("create database previous"));
  await admin.close();
  const previousUrl = infra.postgres.url.replace(/\/chat$/, "/previous");
  await migrateDatabase(infra.postgres.url);
  await migrateDatabase(previousUrl);
  const a = openPostgres(infra.postgres.url, { max: 1 });
  const b = openPostgres(previousUrl, { max: 1 });
  const cpuOf = (pid: number) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  // the previous version's statement: the message row, and one stream row per entry
  const twoRows = (ms: ChatMessage[], es: StreamEntry[]) =>
    b.db.execute(sql`with m as (
      insert into messages (id, client_id, sender, recipient, conv, body, ts)
      select x.id, x.client_id, x.sender, x.recipient, x.conv, x.body, x.ts
      from json_to_recordset(${JSON.stringify(ms.map((m) => ({ id: m.msgId, client_id: m.id, sender: m.from, recipient: m.to, conv: conversationKey(m), body: m.body, ts: m.ts })))}::json)
        as x(id text, client_id text, sender text, recipient text, conv text, body text, ts bigint)
      order by x.id on conflict (id) do nothing returning 1
    ), s as (
      insert into stream (user_id, epoch, pos, msg_id, conv, kind)
      select y.user_id, y.epoch, y.pos, y.msg_id, y.conv, 'message'
      from json_to_recordset(${JSON.stringify(es.map((e) => ({ user_id: e.user, epoch: e.position.epoch, pos: e.position.pos, msg_id: e.msgId, conv: e.conv })))}::json)
        as y(user_id text, epoch bigint, pos bigint, msg_id text, conv text)
      order by y.user_id, y.epoch, y.pos on conflict do nothing returning 1
    ) select (select count(*) from m)::int as messages, (select count(*) from s)::int as entries`);
  const pid = async (h: typeof a) => ((await h.db.execute(sql`select pg_backend_pid() as p`)) as unknown as [{ p: number }])[0].p;
  const pa = await pid(a);
  const pb = await pid(b);
  const batch = directMessageBatches(SIZE);
  const spent = { a: 0, b: 0, wa: 0, wb: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const side of r % 2 ? (["b", "a"] as const) : (["a", "b"] as const)) {
      const { ms, es } = batch();
      const p = side === "a" ? pa : pb;
      const c0 = cpuOf(p);
      const t0 = performance.now();
      await (side === "a" ? insertBatch(a.db, ms, es) : twoRows(ms, es));
      spent[side] += cpuOf(p) - c0;
      spent[side === "a" ? "wa" : "wb"] += (performance.now() - t0) / 1000;
    }
  }
  const per = (x: number) => ((x * 1e6) / (rounds * SIZE)).toFixed(1);
  console.log(`| design | backend CPU µs per message | wall µs per message |\n| --- | --- | --- |`);
  console.log(`| as persist writes (entries in the messages row) | ${per(spent.a)} | ${per(spent.wa)} |`);
  console.log(`| the previous design (messages row + two stream rows) | ${per(spent.b)} | ${per(spent.wb)} |`);
  await a.close();
  await b.close();
} finally {
  await infra.stop();
}
