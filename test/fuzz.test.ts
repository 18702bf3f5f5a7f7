import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import type postgres from "postgres";
import { ERROR_CODES, parseClientFrame, Cursor } from "../shared/protocol.ts";
import { mintToken, uniqueUser, type Frame, type TestClient } from "./client.ts";
import { alive, connectReady, diff, httpStatus, openSql, waitUntil, startHealthyCluster } from "./chaos.ts";
import { anyFrame, expected, overTheWire, utf8Bytes, type Expected } from "./fuzz-frames.ts";
import type { Cluster } from "../scripts/cluster.ts";

// Frame fuzzing (CONTRACT.md section 3): random and mutated frames must each get exactly one
// answer (one `error` with the right code and id for a malformed frame; ack, pong or synced for a
// valid one), the connection must stay open, and the service must stay healthy and keep storing.
// Set FUZZ_SEED to replay a run; the seed is printed.

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MAX_WIRE_BYTES = 60_000; // under the 64 KiB frame limit (a larger frame closes with 1009, tested elsewhere)

describe("parseClientFrame (unit)", () => {
  test("never throws, always answers a code from the table, and agrees with the contract oracle", () => {
    const texts = fc.oneof(
      { weight: 8, arbitrary: anyFrame("g_fuzz", "u") },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 300 }) },
      // raw lone surrogates (impossible over the wire, possible in process)
      { weight: 1, arbitrary: fc.array(fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), { maxLength: 50 }).map((a) => a.join("")) },
    );
    let valid = 0;
    fc.assert(
      fc.property(texts, (text) => {
        const r = parseClientFrame(text);
        const e = expected(text);
        if (e.kind === "valid") {
          valid++;
          expect(r).toMatchObject({ ok: true, frame: { type: e.type } });
        } else {
          if (r.ok) throw new Error(`accepted ${JSON.stringify(text).slice(0, 300)}; expected ${JSON.stringify(e)}`);
          expect(ERROR_CODES).toContain(r.code);
          expect(typeof r.message).toBe("string");
          expect({ code: r.code, id: r.id }).toEqual({ code: e.code, id: e.id });
        }
      }),
      { numRuns: 20_000, seed: SEED },
    );
    console.log(`parseClientFrame: 20000 frames (seed ${SEED}), ${valid} valid by the oracle`);
    expect(valid).toBeGreaterThan(1000);
    // Nothing polluted the prototypes.
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
  });

  test("every cursor is a safe integer, so the number the server computes from it is exact", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."0123456789"), minLength: 1, maxLength: 25 }), (s) => {
        if (Cursor.safeParse(s).success) expect(String(Number(s))).toBe(s);
      }),
      { numRuns: 5000, seed: SEED },
    );
    expect(Cursor.safeParse(String(Number.MAX_SAFE_INTEGER)).success).toBe(true);
  });
});

let cluster: Cluster;
let sql: postgres.Sql;
let groupId: string;
const users = Array.from({ length: 5 }, () => uniqueUser("fuzz"));

beforeAll(async () => {
  cluster = await startHealthyCluster({ ws: 1 });
  sql = openSql();
  const res = await fetch(`${cluster.wsUrls[0]}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${await mintToken(users[0]!, cluster.jwtSecret)}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "fuzz", members: users.slice(1) }),
  });
  expect(res.status).toBe(201);
  groupId = ((await res.json()) as { groupId: string }).groupId;
}, 60_000);
afterAll(async () => {
  await sql?.end();
  await cluster?.stop();
});

/** A marker after each fuzzed frame: an unknown type with a unique id, answered by an error carrying that id. */
const markerId = (tag: string, k: number) => `mk-${tag}-${k}`;
const marker = (tag: string, k: number) => `{"type":"fuzz-marker","id":"${markerId(tag, k)}"}`;
const ASYNC_ERROR_CODES = new Set(["forbidden", "rate_limited", "unavailable", "not_found", "too_old"]);

interface FuzzReport {
  frames: number;
  malformed: number;
  validSends: number;
  validSyncs: number;
  validPings: number;
  problems: string[];
  ackedMsgIds: Set<string>;
  client: TestClient;
}

const show = (s: string) => JSON.stringify(s.length > 120 ? `${s.slice(0, 120)}…(${s.length})` : s);

/**
 * Sends each text followed by a marker, so the answers of frame k are what arrives between the
 * answers to markers k-1 and k. Acks (and send errors with ids) arrive asynchronously and are matched
 * by id instead; `message` and `event` frames (live or sync answers; the group's creation is a
 * `member` event in every member's stream) are ignored.
 */
async function fuzzOver(url: string, user: string, texts: string[]): Promise<FuzzReport> {
  const c = await connectReady(url, user, cluster.jwtSecret);
  const start = c.frames.length;
  const wire = texts.map(overTheWire);
  const exp: Expected[] = wire.map(expected);
  /** Per client id, the replies its valid sends must get: an ack, or forbidden for a group the user is not in. */
  const sendIds = new Map<string, string[]>();
  /** (id, target) pairs a send was accepted for. */
  const accepted = new Set<string>();
  const tag = crypto.randomUUID().slice(0, 8);
  const isMarker = (f: Frame, k?: number) => f.type === "error" && typeof f.id === "string" && (k === undefined ? f.id.startsWith(`mk-${tag}-`) : f.id === markerId(tag, k));
  const count = { malformed: 0, send: 0, sync: 0, ping: 0, watch: 0, edit: 0, delete: 0 };
  const CHUNK = 100;
  for (let k = 0; k < texts.length; k += CHUNK) {
    const last = Math.min(texts.length, k + CHUNK) - 1;
    for (let j = k; j <= last; j++) {
      const e = exp[j]!;
      if (e.kind === "error") count.malformed++;
      else {
        count[e.type]++;
        if (e.type === "send") {
          const f = JSON.parse(wire[j]!) as { id: string; to?: string; group?: string };
          // A message is (sender, id, target): once a send under this id to this target was
          // accepted, every resend of it is acked (the same message); the same id to another target
          // is another message; a refused one leaves nothing behind.
          const target = `${f.id}\u0000${f.group === undefined ? `to:${f.to}` : `group:${f.group}`}`;
          const want = accepted.has(target) || f.group === undefined || f.group === groupId ? "ack" : "error:forbidden";
          if (want === "ack") accepted.add(target);
          sendIds.set(f.id, [...(sendIds.get(f.id) ?? []), want]);
        } else if (e.type === "edit" || e.type === "delete") {
          // A fuzzed msgId names no message of this user: refused, with the frame's id.
          const f = JSON.parse(wire[j]!) as { id: string };
          sendIds.set(f.id, [...(sendIds.get(f.id) ?? []), "error:not_found"]);
        }
      }
      c.send(texts[j]!);
      c.send(marker(tag, j));
    }
    await c.waitFor((f) => isMarker(f, last), `marker ${last}`, 30_000).catch((err) => {
      throw new Error(`${String(err).slice(0, 300)}; open: ${c.ws.readyState === WebSocket.OPEN}; logs:\n${[...cluster.ws[0]!.logs.slice(-5), ...cluster.persist.logs.slice(-5)].join("\n").slice(0, 3000)}`);
    });
  }
  const sendReplies = () => c.frames.slice(start).filter((f) => f.type === "ack" || (f.type === "error" && f.id !== undefined && ASYNC_ERROR_CODES.has(f.code))).length;
  const totalSends = [...sendIds.values()].reduce((a, b) => a + b.length, 0);
  await waitUntil(`${totalSends} send replies on ${user}`, () => c.ws.readyState !== WebSocket.OPEN || sendReplies() >= totalSends, 30_000, 20).catch(() => {});
  // One more round trip: anything still owed would arrive before this answer.
  c.send(marker(tag, texts.length));
  await c.waitFor((f) => isMarker(f, texts.length), "final marker").catch(() => {});

  const problems: string[] = [];
  if (c.ws.readyState !== WebSocket.OPEN) problems.push(`connection closed: ${JSON.stringify(await c.closed)}`);
  const all = c.frames.slice(start);
  // Stream frames (messages, and events such as delivery receipts of what others' devices got) come whenever they come.
  const isAsync = (f: Frame) => f.type === "ack" || f.type === "message" || f.type === "event" || f.type === "presence" || (f.type === "error" && f.id !== undefined && ASYNC_ERROR_CODES.has(f.code));
  const stream = all.filter((f) => !isAsync(f));
  // Split the synchronous answers at the markers: segment k holds the answers to frame k.
  const segments: Frame[][] = [];
  let cur: Frame[] = [];
  let nextMarker = 0;
  for (const f of stream) {
    if (isMarker(f)) {
      const k = Number(f.id.slice(f.id.lastIndexOf("-") + 1));
      if (k !== nextMarker) problems.push(`marker ${k} arrived where ${nextMarker} was due`);
      segments[k] = cur;
      cur = [];
      nextMarker = k + 1;
    } else cur.push(f);
  }
  if (cur.length) problems.push(`frames after the last marker: ${JSON.stringify(cur).slice(0, 300)}`);
  for (let k = 0; k < texts.length; k++) {
    const e = exp[k]!;
    const got = segments[k] ?? [];
    let ok: boolean;
    if (e.kind === "error") {
      const f = got[0];
      ok = got.length === 1 && f!.type === "error" && f!.code === e.code && f!.id === e.id && typeof f!.message === "string";
    } else if (e.type === "ping") ok = got.length === 1 && got[0]!.type === "pong";
    else if (e.type === "sync") ok = got.length === 1 && got[0]!.type === "synced" && Cursor.safeParse(got[0]!.cursor).success;
    else ok = got.length === 0; // a send is answered asynchronously (below); a watch by presence frames
    if (!ok) problems.push(`frame ${k} ${show(wire[k]!)}: expected ${JSON.stringify(e)}, got ${JSON.stringify(got).slice(0, 300)}`);
  }

  // Every valid send: exactly one reply, an ack (forbidden for a group the user is not in).
  const replies = new Map<string, string[]>();
  const ackedMsgIds = new Set<string>();
  for (const f of all) {
    if (f.type === "ack") ackedMsgIds.add(f.msgId);
    if (f.type === "ack" || (f.type === "error" && f.id !== undefined && ASYNC_ERROR_CODES.has(f.code))) {
      replies.set(f.id, [...(replies.get(f.id) ?? []), f.type === "ack" ? "ack" : `error:${f.code}`]);
    }
  }
  for (const [id, want] of sendIds) {
    const got = replies.get(id) ?? [];
    if (JSON.stringify([...got].sort()) !== JSON.stringify([...want].sort())) problems.push(`send ${show(id)}: expected ${want.join(",")}, got ${got.join(",") || "nothing"}`);
  }
  for (const [id, got] of replies) if (!sendIds.has(id)) problems.push(`${got.join(",")} for ${show(id)}, which was not a valid send`);
  // Every cursor the server handed out must be one it accepts back.
  for (const f of all) if ((f.type === "synced" || f.type === "message" || f.type === "event") && !Cursor.safeParse(f.cursor).success) problems.push(`unusable cursor ${show(f.cursor)} in ${f.type}`);

  return { frames: texts.length, malformed: count.malformed, validSends: count.send, validSyncs: count.sync, validPings: count.ping, problems: problems.slice(0, 20), ackedMsgIds, client: c };
}

function sampleFrames(n: number, seed: number, idPrefix: string): string[] {
  return fc.sample(anyFrame(groupId, idPrefix).filter((t) => utf8Bytes(overTheWire(t)) <= MAX_WIRE_BYTES), { numRuns: n, seed });
}

async function expectStored(msgIds: Set<string>) {
  const ids = [...msgIds];
  let rows: string[] = [];
  await waitUntil(`${ids.length} acked messages in PostgreSQL`, async () => {
    rows = (await sql<{ id: string }[]>`select id from messages where id in ${sql(ids)}`).map((r) => r.id);
    return rows.length === ids.length;
  }, 10_000).catch(() => {});
  expect(diff("stored vs acked", msgIds, rows).text).toBe("stored vs acked: 0 missing [], 0 extra []");
}

async function expectStillServing(fuzzed: TestClient) {
  expect(await httpStatus(`${cluster.wsUrls[0]}/health`)).toBe(200);
  expect(alive(cluster.ws[0]!)).toBe(true);
  const other = await connectReady(cluster.wsUrls[0]!, uniqueUser("after"), cluster.jwtSecret);
  const ack = await other.sendMessage({ to: fuzzed.user }, "still here?");
  expect(ack.type).toBe("ack");
  await fuzzed.waitFor((f) => f.type === "message" && f.msgId === ack.msgId, "a normal message after the fuzz", 5000);
  other.close();
}

describe("the gateway under fuzzed frames", () => {
  test(
    "2000 frames over one connection: exactly one answer each, connection open, service healthy, acked all stored",
    async () => {
      const texts = sampleFrames(2000, SEED, `one${SEED}`);
      const t0 = performance.now();
      const r = await fuzzOver(cluster.wsUrls[0]!, users[0]!, texts);
      console.log(
        `fuzz one connection (seed ${SEED}): ${r.frames} frames in ${Math.round(performance.now() - t0)} ms; ${r.malformed} malformed, ` +
          `${r.validSends} sends (${r.ackedMsgIds.size} acked), ${r.validSyncs} syncs, ${r.validPings} pings; problems ${r.problems.length}`,
      );
      expect(r.problems).toEqual([]);
      expect(r.malformed).toBeGreaterThan(1000);
      await expectStored(r.ackedMsgIds);
      await expectStillServing(r.client);
      r.client.close();
    },
    120_000,
  );

  test(
    "4 connections fuzzed at once, 300 frames each",
    async () => {
      const t0 = performance.now();
      const reports = await Promise.all(users.slice(1).map((u, i) => fuzzOver(cluster.wsUrls[0]!, u, sampleFrames(300, SEED + 1 + i, `c${i}s${SEED}`))));
      const problems = reports.flatMap((r, i) => r.problems.map((p) => `conn ${i}: ${p}`));
      console.log(
        `fuzz 4 connections (seeds ${SEED + 1}..${SEED + 4}): ${reports.reduce((a, r) => a + r.frames, 0)} frames in ${Math.round(performance.now() - t0)} ms; ` +
          `${reports.reduce((a, r) => a + r.malformed, 0)} malformed, ${reports.reduce((a, r) => a + r.ackedMsgIds.size, 0)} acked; problems ${problems.length}`,
      );
      expect(problems).toEqual([]);
      await expectStored(new Set(reports.flatMap((r) => [...r.ackedMsgIds])));
      for (const r of reports) await expectStillServing(r.client);
      for (const r of reports) r.client.close();
    },
    120_000,
  );

  test("every cursor the server hands out is one it accepts back, even after the largest `after` it accepts", async () => {
    const c = await connectReady(cluster.wsUrls[0]!, uniqueUser("cursor"), cluster.jwtSecret);
    for (const after of ["9007199254740991", "9007199254740993", "999999999999999999"]) {
      const start = c.frames.length;
      c.send({ type: "sync", after });
      const f = await c.waitFor((f) => c.frames.indexOf(f) >= start && (f.type === "synced" || f.type === "error"), "synced or error");
      if (f.type === "synced") {
        // Accepted (a cursor of the previous version): the cursor answered must be usable again,
        // and a sync from it must answer the same cursor with nothing before it.
        expect(`${after} → ${Cursor.safeParse(f.cursor).success}`).toBe(`${after} → true`);
        const again = c.frames.length;
        c.send({ type: "sync", after: f.cursor });
        const g = await c.waitFor((x) => c.frames.indexOf(x) >= again && (x.type === "synced" || x.type === "error"), "synced again");
        expect(`${f.cursor} → ${g.type} ${g.cursor}`).toBe(`${f.cursor} → synced ${f.cursor}`);
        expect(c.frames.slice(again, c.frames.indexOf(g)).filter((x) => x.type === "message")).toEqual([]);
      } else expect(`${after} → ${f.code}`).toBe(`${after} → bad_request`);
    }
    c.close();
  });

  test("text PostgreSQL cannot store (U+0000, an unpaired surrogate) is refused, and the queue keeps flowing", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connectReady(cluster.wsUrls[0]!, alice, cluster.jwtSecret);
    const poison = [
      '{"type":"send","id":"nul-body","to":"BOB","body":"a\\u0000b"}',
      '{"type":"send","id":"sur-body","to":"BOB","body":"a\\ud800b"}',
      '{"type":"send","id":"lo-body","to":"BOB","body":"\\udc00"}',
      '{"type":"send","id":"nul\\u0000id","to":"BOB","body":"ok"}',
      '{"type":"send","id":"sur\\ud800id","to":"BOB","body":"ok"}',
    ].map((t) => t.replace("BOB", bob));
    for (const t of poison) {
      a.send(t);
      const f = await a.next((f) => f.type === "ack" || f.type === "error", "an answer");
      expect(`${t} → ${f.type} ${f.code ?? ""}`).toBe(`${t} → error bad_request`);
    }
    // A well-formed astral character is fine, and so is everything after it.
    const emoji = await a.sendMessage({ to: bob }, "😀 ok");
    const after = await a.sendMessage({ to: bob }, "after");
    expect([emoji.type, after.type]).toEqual(["ack", "ack"]);
    await expectStored(new Set([emoji.msgId, after.msgId]));
    a.close();
  });
});
