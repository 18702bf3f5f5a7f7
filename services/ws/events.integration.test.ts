import { describe, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser, type Frame } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

// Stream events (docs/delivery.md, "Stream events") on real processes: discover, two ws instances
// and persist over Redis, RabbitMQ and PostgreSQL. Edits and deletions are the events used here.

const fx = useCluster({ ws: 2 });
const { A, B } = fx;
const sql = () => fx.sql();

const isStream = (f: Frame) => f.type === "message" || f.type === "event";
const pos = (c: string) => c.split(".").map(Number) as [number, number];

/** The stream frames `c` holds (messages and events), checked to be contiguous positions in order. */
function streamOf(c: TestClient, from = 0): Frame[] {
  const fs = c.frames.slice(from).filter(isStream);
  for (let i = 1; i < fs.length; i++) {
    const [e0, p0] = pos(fs[i - 1]!.cursor);
    const [e1, p1] = pos(fs[i]!.cursor);
    expect(e1 === e0 ? p1 : -1).toBe(p0 + 1);
  }
  return fs;
}
/** Messages, edits and deletions; receipts (read, delivered) share the stream but are tested in receipts.integration.test.ts. */
const summary = (fs: Frame[]) =>
  fs.filter((f) => f.kind !== "read" && f.kind !== "delivered").map((f) => (f.type === "message" ? `message ${f.body}` : `${f.kind} ${f.ref}${f.body ? " " + f.body : ""}`));

async function request(c: TestClient, frame: Record<string, unknown>): Promise<Frame> {
  c.send(frame);
  return c.waitFor((f) => (f.type === "ack" || f.type === "error") && f.id === frame.id, `answer to ${frame.type} ${frame.id}`);
}
const edit = (c: TestClient, msgId: string, body: string, id: string = crypto.randomUUID()) => request(c, { type: "edit", id, msgId, body });
const del = (c: TestClient, msgId: string, id: string = crypto.randomUUID()) => request(c, { type: "delete", id, msgId });

async function history(user: string, query: string, base = A()) {
  const res = await fetch(`${base}/api/messages?${query}`, { headers: { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as { messages: Frame[]; before: string | null };
}

async function waitForRow(id: string, pred: (r: { body: string; deleted_at: string | null; edited_at: string | null }) => boolean) {
  for (let i = 0; i < 250; i++) {
    const [r] = await sql()<Array<{ body: string; deleted_at: string | null; edited_at: string | null }>>`select body, deleted_at, edited_at from messages where id = ${id}`;
    if (r && pred(r)) return r;
    await Bun.sleep(20);
  }
  throw new Error(`row ${id} never reached the expected state`);
}

describe("stream events", () => {
  test("live: edits and deletions reach every connection of the message's users on both instances, in position order among messages", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a1 = await fx.connect(A(), alice);
    const a2 = await fx.connect(B(), alice); // alice's second device, on the other instance
    const b1 = await fx.connect(B(), bob);
    const b2 = await fx.connect(A(), bob);

    const m1 = await a1.sendMessage({ to: bob }, "one");
    const m2 = await a1.sendMessage({ to: bob }, "two");
    const e1 = await edit(a1, m1.msgId, "one, edited");
    expect(e1).toMatchObject({ type: "ack" });
    expect(typeof e1.msgId).toBe("string");
    expect(e1.cursor).toBeDefined();
    const m3 = await a1.sendMessage({ to: bob }, "three");
    const d2 = await del(a1, m2.msgId);
    expect(d2.type).toBe("ack");
    const expected = ["message one", "message two", `edit ${m1.msgId} one, edited`, "message three", `delete ${m2.msgId}`];
    for (const c of [b1, b2, a2]) {
      await c.waitFor((f) => f.type === "event" && f.msgId === d2.msgId, "the deletion");
      expect(summary(streamOf(c))).toEqual(expected);
    }
    // The event frame: kind, its own msgId, the sender, the conversation, ts, ref, the kind's fields, cursor last.
    const ev = b1.frames.find((f) => f.type === "event" && f.kind === "edit")!;
    expect(Object.keys(ev)).toEqual(["type", "kind", "msgId", "from", "to", "ts", "ref", "body", "cursor"]);
    expect(ev).toMatchObject({ msgId: e1.msgId, from: alice, to: bob, ts: e1.ts, ref: m1.msgId, body: "one, edited" });
    const dv = b1.frames.find((f) => f.type === "event" && f.kind === "delete")!;
    expect(Object.keys(dv)).toEqual(["type", "kind", "msgId", "from", "to", "ts", "ref", "cursor"]);
    // The sending connection gets acks for what it sent, not the items themselves (bob's `delivered`
    // receipts may reach it: they are alice's stream too, sent whenever bob's gateway's timer fires).
    expect(summary(a1.frames.filter(isStream))).toEqual([]);
    // The acks' cursors are alice's own stream's positions: her other device received the same
    // items at those cursors, with nothing but receipts between the third message and the deletion.
    const own = streamOf(a2);
    const [i3, iD] = [own.findIndex((f) => f.msgId === m3.msgId), own.findIndex((f) => f.msgId === d2.msgId)];
    expect(own[i3]!.cursor).toBe(m3.cursor);
    expect(own[iD]!.cursor).toBe(d2.cursor);
    expect(own.slice(i3 + 1, iD).filter((f) => f.kind !== "delivered" && f.kind !== "read")).toEqual([]);

    // Storage: the message's current state; the deleted body gone, from the event rows too.
    const r1 = await waitForRow(m1.msgId, (r) => r.edited_at !== null);
    expect(r1.body).toBe("one, edited");
    expect(Number(r1.edited_at)).toBe(e1.ts);
    expect((await waitForRow(m2.msgId, (r) => r.deleted_at !== null)).body).toBe("");
  });

  test("sync after reconnect returns the events after the cursor, and messages in their current state", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    let b = await fx.connect(B(), bob);
    const m1 = await a.sendMessage({ to: bob }, "first");
    const m2 = await a.sendMessage({ to: bob }, "second");
    const last = await b.waitFor((f) => f.type === "message" && f.msgId === m2.msgId, "second");
    b.close();
    await b.closed;

    // While bob is away: an edit of the first, a new message, an edit and then a deletion of the second.
    const e1 = await edit(a, m1.msgId, "first, edited");
    const m3 = await a.sendMessage({ to: bob }, "third");
    const e2 = await edit(a, m2.msgId, "second, edited");
    const d2 = await del(a, m2.msgId);
    for (const r of [e1, m3, e2, d2]) expect(r.type).toBe("ack");
    // (Once stored: a sync reading storage while the deletion is being written may send the edit with its text first.)
    await waitForRow(m2.msgId, (r) => r.deleted_at !== null);

    b = await fx.connect(A(), bob); // the other instance this time
    const start = b.frames.length;
    const { cursor } = await b.sync(last.cursor);
    const answer = streamOf(b, start);
    expect(summary(answer)).toEqual([`edit ${m1.msgId} first, edited`, "message third", `edit ${m2.msgId}`, `delete ${m2.msgId}`]);
    // The edit of a message deleted since has lost its text in storage: it comes as a tombstone.
    expect(answer[2]).toMatchObject({ body: "", deletedAt: d2.ts });
    expect(cursor).toBe(answer[3]!.cursor);
    expect(answer[0]!.cursor).toBe(`${pos(last.cursor)[0]}.${pos(last.cursor)[1] + 1}`);

    // A sync from the start: the messages in their current state, then the events, in stream order.
    const s0 = b.frames.length;
    await b.sync();
    const all = streamOf(b, s0);
    expect(all.map((f) => f.type + ":" + (f.kind ?? f.body))).toEqual(["message:first, edited", "message:", "event:edit", "message:third", "event:edit", "event:delete"]);
    expect(all[0]).toMatchObject({ msgId: m1.msgId, editedAt: e1.ts });
    expect(all[1]).toMatchObject({ msgId: m2.msgId, body: "", deletedAt: d2.ts });
    expect(all[1]!.editedAt).toBeUndefined(); // a deletion wins: edited state is not shown
    // Resuming from the last event's cursor gets nothing again.
    const again = await b.sync(cursor);
    expect(again.messages).toEqual([]);
    expect(again.cursor).toBe(cursor);
  });

  test("history shows each message's current state (edited text and editedAt, or a tombstone) and no edit or delete events", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const m1 = await a.sendMessage({ to: bob }, "keep");
    const m2 = await a.sendMessage({ to: bob }, "change me");
    const m3 = await a.sendMessage({ to: bob }, "remove me");
    const e2 = await edit(a, m2.msgId, "changed");
    const d3 = await del(a, m3.msgId);
    // Read your writes, on the other instance, for either user.
    for (const [user, q] of [[alice, `with=${bob}`], [bob, `with=${alice}`]] as const) {
      const h = await history(user, q, B());
      expect(h.messages.map((f) => [f.type, f.msgId, f.body])).toEqual([
        ["message", m1.msgId, "keep"],
        ["message", m2.msgId, "changed"],
        ["message", m3.msgId, ""],
      ]);
      expect(h.messages[0]!.editedAt).toBeUndefined();
      expect(h.messages[1]!.editedAt).toBe(e2.ts);
      expect(h.messages[2]!.deletedAt).toBe(d3.ts);
      expect(Object.keys(h.messages[1]!)).toEqual(["type", "msgId", "id", "from", "to", "body", "ts", "editedAt", "cursor"]);
    }
    // Paging counts messages only (events take positions but are not history rows).
    const p1 = await history(alice, `with=${bob}&limit=2`);
    expect(p1.messages.map((f) => f.msgId)).toEqual([m2.msgId, m3.msgId]);
    const p2 = await history(alice, `with=${bob}&limit=2&before=${p1.before}`);
    expect(p2.messages.map((f) => f.msgId)).toEqual([m1.msgId]);
    expect(p2.before).toBeNull();
  });

  test("a group message's edit goes to every member holding it, a member added later included (given it with the group's history)", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const token = await mintToken(alice, fx.cluster.jwtSecret);
    const api = (path: string, body: unknown) => fetch(`${A()}${path}`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    const g = (await (await api("/api/groups", { name: "edits", members: [bob] })).json()) as { groupId: string };
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const c = await fx.connect(A(), carol);
    const m = await a.sendMessage({ group: g.groupId }, "before carol");
    expect((await api(`/api/groups/${g.groupId}/members`, { userId: carol })).status).toBe(204);
    const e = await edit(a, m.msgId, "edited after carol joined");
    expect(e.type).toBe("ack");
    const ev = await b.waitFor((f) => f.type === "event" && f.msgId === e.msgId, "the edit");
    expect(ev).toMatchObject({ kind: "edit", group: g.groupId, ref: m.msgId, body: "edited after carol joined" });
    // carol was given the message when she was added (docs/api.md "History for a new member"), so its edit reaches her too.
    const ce = await c.waitFor((f) => f.type === "event" && f.msgId === e.msgId, "the edit at carol");
    expect(ce).toMatchObject({ kind: "edit", ref: m.msgId, body: "edited after carol joined" });
    const after = await a.sendMessage({ group: g.groupId }, "with carol");
    await c.waitFor((f) => f.type === "message" && f.msgId === after.msgId, "the later message");
    // Sync replays her stream: the message she was given, the notice of her joining, the edit, the next message.
    const start = c.frames.length;
    await c.sync();
    const replay = c.frames.slice(start).filter((f) => f.type === "message" || f.type === "event");
    expect(replay.map((f) => (f.type === "message" ? f.msgId : `${f.kind}:${f.ref ?? f.action}`))).toEqual([m.msgId, "member:added", `edit:${m.msgId}`, after.msgId]);
    // A sender who left the group can no longer change their messages there.
    const leave = await fetch(`${A()}/api/groups/${g.groupId}/members/${alice}`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    expect(leave.status).toBe(204);
    expect(await edit(a, m.msgId, "from outside")).toMatchObject({ type: "error", code: "forbidden" });
    expect(await del(a, after.msgId)).toMatchObject({ type: "error", code: "forbidden" });
  });

  test("errors: not yours (forbidden), unknown or deleted (not_found), malformed (bad_request / too_large), each with the frame's id; nothing is delivered", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const m = await a.sendMessage({ to: bob }, "mine");
    await b.waitFor((f) => f.type === "message" && f.msgId === m.msgId, "mine");

    expect(await edit(b, m.msgId, "hijack", "x1")).toMatchObject({ type: "error", id: "x1", code: "forbidden" });
    expect(await del(b, m.msgId, "x2")).toMatchObject({ type: "error", id: "x2", code: "forbidden" });
    expect(await edit(a, "no-such-message", "?", "x3")).toMatchObject({ type: "error", id: "x3", code: "not_found" });
    const bad = [
      [{ type: "edit", id: "y1", msgId: m.msgId }, "bad_request"],
      [{ type: "edit", id: "y2", msgId: m.msgId, body: "" }, "bad_request"],
      [{ type: "edit", id: "y3", msgId: 7, body: "x" }, "bad_request"],
      [{ type: "edit", id: "y4", msgId: m.msgId, body: "x".repeat(4097) }, "too_large"],
      [{ type: "delete", id: "y5" }, "bad_request"],
      [{ type: "delete", id: "y6", msgId: m.msgId, body: "x" }, "bad_request"],
      [{ type: "edit", id: "y7", msgId: "x".repeat(65), body: "x" }, "bad_request"],
    ] as const;
    for (const [frame, code] of bad) expect(await request(a, frame)).toMatchObject({ type: "error", id: frame.id, code });
    // Still open, and the message unchanged.
    const d = await del(a, m.msgId, "z1");
    expect(d.type).toBe("ack");
    expect(await edit(a, m.msgId, "too late", "z2")).toMatchObject({ type: "error", id: "z2", code: "not_found" });
    expect(await del(a, m.msgId, "z3")).toMatchObject({ type: "error", id: "z3", code: "not_found" });
    // Retrying the deletion with its id is idempotent: acked again, delivered once.
    const again = await del(a, m.msgId, "z1");
    expect(again).toMatchObject({ type: "ack", msgId: d.msgId, ts: d.ts });
    await b.waitFor((f) => f.type === "event" && f.msgId === d.msgId, "the deletion");
    const marker = await a.sendMessage({ to: bob }, "marker");
    await b.waitFor((f) => f.msgId === marker.msgId, "marker");
    expect(summary(streamOf(b))).toEqual(["message mine", `delete ${m.msgId}`, "message marker"]);
  });

  test("an edit right after the send, on another instance, is accepted (the message is awaited in storage)", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a1 = await fx.connect(A(), alice);
    const a2 = await fx.connect(B(), alice);
    const b = await fx.connect(B(), bob);
    for (let i = 0; i < 5; i++) {
      const m = await a1.sendMessage({ to: bob }, `quick ${i}`);
      const e = await edit(a2, m.msgId, `quick ${i} edited`);
      expect(e.type).toBe("ack");
      await b.waitFor((f) => f.type === "event" && f.msgId === e.msgId, "the edit");
    }
    expect(summary(streamOf(b)).filter((s) => s.startsWith("edit"))).toHaveLength(5);
  });

  test("over HTTP: PATCH and DELETE /api/messages/:msgId make the same events (idempotent with an id); errors with status and code", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const m = await a.sendMessage({ to: bob }, "via http");
    const call = async (user: string, method: string, path: string, body?: unknown, base = B()) => {
      const headers: Record<string, string> = { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` };
      if (body !== undefined) headers["content-type"] = "application/json";
      const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
      return { status: res.status, body: (await res.json().catch(() => null)) as any };
    };
    const path = `/api/messages/${m.msgId}`;
    const edited = await call(alice, "PATCH", path, { body: "edited over http", id: "h1" });
    expect(edited.status).toBe(200);
    expect(Object.keys(edited.body).sort()).toEqual(["cursor", "msgId", "ts"]);
    // Every connection of both users gets the frame (no connection made this change).
    for (const c of [a, b]) expect(await c.waitFor((f) => f.type === "event" && f.msgId === edited.body.msgId, "the edit")).toMatchObject({ kind: "edit", ref: m.msgId, body: "edited over http" });
    expect((await call(alice, "PATCH", path, { body: "edited over http", id: "h1" }, A())).body).toEqual(edited.body);

    const bad: Array<[string, string, unknown, number, string]> = [
      [alice, path, {}, 400, "bad_request"],
      [alice, path, { body: "" }, 400, "bad_request"],
      [alice, path, { body: "x", extra: 1 }, 400, "bad_request"],
      [alice, path, { body: "x".repeat(4097) }, 400, "bad_request"],
      [alice, path, "not json", 400, "bad_request"],
      [alice, `/api/messages/${"x".repeat(65)}`, { body: "x" }, 400, "bad_request"],
      [bob, path, { body: "hijack" }, 403, "forbidden"],
      [alice, "/api/messages/nope", { body: "x" }, 404, "not_found"],
    ];
    for (const [user, p, body, status, code] of bad) {
      const r = await call(user, "PATCH", p, body);
      expect([p.slice(-10), r.status]).toEqual([p.slice(-10), status]);
      expect(typeof r.body.error).toBe("string");
      // (a 400 from the body's validator says what is wrong in `error` only, as every /api route does)
      if (status !== 400) expect(r.body.code).toBe(code);
    }
    expect((await fetch(`${B()}${path}`, { method: "PATCH", body: JSON.stringify({ body: "x" }) })).status).toBe(401);
    expect((await call(bob, "DELETE", path)).status).toBe(403);
    expect((await call(alice, "DELETE", `${path}?id=${"x".repeat(65)}`)).status).toBe(400);

    const deleted = await call(alice, "DELETE", `${path}?id=d1`);
    expect(deleted.status).toBe(200);
    await b.waitFor((f) => f.type === "event" && f.msgId === deleted.body.msgId, "the deletion");
    expect((await call(alice, "DELETE", `${path}?id=d1`)).body).toEqual(deleted.body);
    expect(await call(alice, "DELETE", `${path}?id=d2`)).toMatchObject({ status: 404, body: { code: "not_found" } });
    expect(await call(alice, "PATCH", path, { body: "after" })).toMatchObject({ status: 404, body: { code: "not_found" } });
    const h = await history(bob, `with=${alice}`);
    expect(h.messages.map((f) => [f.body, f.deletedAt])).toEqual([["", deleted.body.ts]]);
  });
});
