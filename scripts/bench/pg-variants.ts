/**
 * Prices the indexes of `messages` one by one: several databases on one PostgreSQL of its own,
 * all migrated, each then altered by one variant's statements; batches of 1,000 direct messages
 * (stored as persist stores them) alternate between them; backend CPU per message from /proc. The
 * full-text index's pending list is cleaned after every batch (gin_clean_pending_list), so its
 * cost is charged to the backend instead of autovacuum.
 *
 * `bench` bodies are the load driver's (`bench <n> xxxx…`: three words); `words` are 18 words of
 * lorem ipsum, as chat text is.
 *
 *   bun run scripts/bench/pg-variants.ts [rounds] [bench|words]
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import { startInfra } from "../infra.ts";
import { migrateDatabase, openPostgres } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { directMessageBatches } from "./pg-batches.ts";

const rounds = Number(process.argv[2] ?? 20);
const words = process.argv[3] === "words";
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10_000 || !["bench", "words", undefined].includes(process.argv[3])) {
  console.error("usage: bun run scripts/bench/pg-variants.ts [rounds, 1..10000] [bench|words]");
  process.exit(2);
}
const VARIANTS: Record<string, string> = {
  current: "",
  "current schema, a bare statement (no ORDER BY, no CTE, no RETURNING)": "",
  "no search index": "drop index messages_search; alter table messages drop column search",
  "no per-conversation indexes": "drop index messages_sender_conv; drop index messages_recipient_conv",
  "current, pending list cleaned every 8 batches": "",
  "GIN on an expression, no stored column": "alter table messages drop column search; create index messages_search on messages using gin (to_tsvector('simple'::regconfig, body))",
};
const SIZE = 1000;
// the message rows alone, entries inline, as plain as the statement can be
const bare = (db: Parameters<typeof insertBatch>[0], ms: ChatMessage[], es: StreamEntry[]) => {
  const at = new Map(es.map((e) => [`${e.msgId} ${e.user}`, e.position]));
  const rows = ms.map((m) => {
    const s = at.get(`${m.msgId} ${m.from}`)!;
    const r = at.get(`${m.msgId} ${m.to}`)!;
    return { id: m.msgId, client_id: m.id, sender: m.from, recipient: m.to, conv: conversationKey(m), body: m.body, ts: m.ts, kind: "message", s_epoch: s.epoch, s_pos: s.pos, r_epoch: r.epoch, r_pos: r.pos };
  });
  return db.execute(sql`insert into messages (id, client_id, sender, recipient, conv, body, ts, kind, s_epoch, s_pos, r_epoch, r_pos)
    select x.id, x.client_id, x.sender, x.recipient, x.conv, x.body, x.ts, x.kind, x.s_epoch, x.s_pos, x.r_epoch, x.r_pos
    from json_to_recordset(${JSON.stringify(rows)}::json) as x(id text, client_id text, sender text, recipient text, conv text, body text, ts bigint, kind text, s_epoch bigint, s_pos bigint, r_epoch bigint, r_pos bigint)
    on conflict (id) do nothing`);
};
const infra = await startInfra({ only: ["postgres"] });
try {
  await infra.postgres.start();
  const names = Object.keys(VARIANTS);
  const admin = openPostgres(infra.postgres.url, { max: 1 });
  const dbs = [];
  for (const [i, name] of names.entries()) {
    const url = i === 0 ? infra.postgres.url : infra.postgres.url.replace(/\/chat$/, `/v${i}`);
    if (i > 0) await admin.db.execute(sql.raw(`create database v${i}`));
    await migrateDatabase(url);
    const h = openPostgres(url, { max: 1 });
    for (const s of VARIANTS[name]!.split(";").filter((x) => x.trim())) await h.db.execute(sql.raw(s));
    const [{ p }] = (await h.db.execute(sql`select pg_backend_pid() as p`)) as unknown as [{ p: number }];
    const hasGin = ((await h.db.execute(sql`select 1 from pg_indexes where indexname = 'messages_search'`)) as unknown[]).length > 0;
    dbs.push({ name, h, p, hasGin, cpu: 0 });
  }
  await admin.close();
  const cpuOf = (pid: number) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  const batch = directMessageBatches(SIZE);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [...dbs].reverse() : dbs;
    for (const d of order) {
      const { ms, es } = batch();
      if (!words) for (const m of ms) m.body = `bench ${r} `.padEnd(100, "x");
      const c0 = cpuOf(d.p);
      if (d.name.includes("bare statement")) await bare(d.h.db, ms, es);
      else await insertBatch(d.h.db, ms, es);
      if (d.hasGin && (!d.name.includes("every 8") || r % 8 === 7)) await d.h.db.execute(sql`select gin_clean_pending_list('messages_search')`);
      d.cpu += cpuOf(d.p) - c0;
    }
  }
  console.log(`| variant (${words ? "lorem ipsum bodies" : "bench bodies"}) | backend CPU µs per message |\n| --- | --- |`);
  for (const d of dbs) console.log(`| ${d.name} | ${((d.cpu * 1e6) / (rounds * SIZE)).toFixed(1)} |`);
  for (const d of dbs) await d.h.close();
} finally {
  await infra.stop();
}
