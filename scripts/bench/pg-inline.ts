/**
 * Prices one storage design against the one persist writes, side by side (issue 9's "no slower than
 * before"): a direct message's two stream positions kept in its `messages` row (indexes per user's
 * stream and per user's conversation, partial on rows that carry positions) instead of two `stream`
 * rows. Two databases on one PostgreSQL of its own, both migrated; batches of 1,000 direct messages
 * alternate between them; CPU of each database's backend from /proc.
 *
 *   bun run scripts/bench/pg-inline.ts [rounds]     (default 30 rounds, one batch in each database per round)
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import { startInfra } from "../infra.ts";
import { migrateDatabase, openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
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
  await admin.db.execute(sql.raw("create database inline"));
  await admin.close();
  const inlineUrl = infra.postgres.url.replace(/\/chat$/, "/inline");
  await migrateDatabase(infra.postgres.url);
  await migrateDatabase(inlineUrl);
  const a = openPostgres(infra.postgres.url, { max: 1 });
  const b = openPostgres(inlineUrl, { max: 1 });
  await b.db.execute(sql.raw(`alter table messages add s_epoch bigint, add s_pos bigint, add r_epoch bigint, add r_pos bigint;
    create unique index messages_sender_pos on messages (sender, s_epoch, s_pos) where s_pos is not null;
    create unique index messages_recipient_pos on messages (recipient, r_epoch, r_pos) where r_pos is not null;
    create index messages_sender_conv on messages (sender, conv, s_epoch, s_pos) where s_pos is not null;
    create index messages_recipient_conv on messages (recipient, conv, r_epoch, r_pos) where r_pos is not null`));
  const cpuOf = (pid: number) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  const inline = (ms: ChatMessage[], es: StreamEntry[]) =>
    b.db.execute(sql`insert into messages (id, client_id, sender, recipient, conv, body, ts, s_epoch, s_pos, r_epoch, r_pos)
      select m.id, m.client_id, m.sender, m.recipient, m.conv, m.body, m.ts, m.s_epoch, m.s_pos, m.r_epoch, m.r_pos
      from json_to_recordset(${JSON.stringify(ms.map((m, i) => ({ id: m.msgId, client_id: m.id, sender: m.from, recipient: m.to, conv: conversationKey(m), body: m.body, ts: m.ts, s_epoch: 1, s_pos: es[2 * i]!.position.pos, r_epoch: 1, r_pos: es[2 * i + 1]!.position.pos })))}::json)
        as m(id text, client_id text, sender text, recipient text, conv text, body text, ts bigint, s_epoch bigint, s_pos bigint, r_epoch bigint, r_pos bigint)
      order by m.id on conflict (id) do nothing`);
  const pid = async (h: typeof a) => ((await h.db.execute(sql`select pg_backend_pid() as p`)) as unknown as [{ p: number }])[0].p;
  const pa = await pid(a);
  const pb = await pid(b);
  const body = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";
  let n = 0;
  const batch = () => {
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
    return { ms, es };
  };
  const spent = { a: 0, b: 0, wa: 0, wb: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const side of r % 2 ? (["b", "a"] as const) : (["a", "b"] as const)) {
      const { ms, es } = batch();
      const p = side === "a" ? pa : pb;
      const c0 = cpuOf(p);
      const t0 = performance.now();
      await (side === "a" ? insertBatch(a.db, ms, es) : inline(ms, es));
      spent[side] += cpuOf(p) - c0;
      spent[side === "a" ? "wa" : "wb"] += (performance.now() - t0) / 1000;
    }
  }
  const per = (x: number) => ((x * 1e6) / (rounds * SIZE)).toFixed(1);
  console.log(`| design | backend CPU µs per message | wall µs per message |\n| --- | --- | --- |`);
  console.log(`| as persist writes (messages row + two stream rows) | ${per(spent.a)} | ${per(spent.wa)} |`);
  console.log(`| positions inline in the messages row (4 partial indexes) | ${per(spent.b)} | ${per(spent.wb)} |`);
  await a.close();
  await b.close();
} finally {
  await infra.stop();
}
