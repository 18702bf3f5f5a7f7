import { describe, expect, test } from "bun:test";
import { mintToken, uniqueUser, type Frame, type TestClient } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";
import { DELIVERED_INTERVAL_MS } from "./receipts.ts";

// Receipts and the conversation list (docs/api.md, "Receipts and the conversation list") on real
// processes: discover, two ws instances and persist over Redis, RabbitMQ and PostgreSQL.

const fx = useCluster({ ws: 2 });
const A = fx.A;
const B = fx.B;

async function api(user: string, path: string, base = A()): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` } });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Polls `f` until `ok` holds for its answer (the condition, not a time, ends the wait). */
async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await Bun.sleep(50);
  }
}

async function createGroup(creator: string, name: string, members: string[]): Promise<{ groupId: string }> {
  const r = await fetch(`${A()}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${await mintToken(creator, fx.cluster.jwtSecret)}`, "content-type": "application/json" },
    body: JSON.stringify({ name, members }),
  });
  expect(r.status).toBe(201);
  return (await r.json()) as { groupId: string };
}

const messageFor = (msgId: string) => (f: Frame) => f.type === "message" && f.msgId === msgId;
const conversations = async (user: string, query = "", base = A()) => {
  const r = await api(user, `/api/conversations${query}`, base);
  expect(r.status).toBe(200);
  return r.body as { conversations: any[]; before: string | null };
};
const convWith = (list: { conversations: any[] }, key: { with?: string; group?: string }) =>
  list.conversations.find((c) => (key.with !== undefined ? c.with === key.with : c.group === key.group));

async function sendAll(c: TestClient, to: { to: string } | { group: string }, bodies: string[]): Promise<Frame[]> {
  const acks: Frame[] = [];
  for (const b of bodies) {
    const a = await c.sendMessage(to, b);
    expect(a.type).toBe("ack");
    acks.push(a);
  }
  return acks;
}

/** Reads `conv` up to the frame `f` and waits until the caller's conversation list shows it. */
async function readUpTo(c: TestClient, target: { to: string } | { group: string }, f: Frame, base = A()) {
  c.send({ type: "read", ...target, cursor: f.cursor });
  await until(() => conversations(c.user, "", base), (l) => convWith(l, "to" in target ? { with: target.to } : target)?.read?.msgId === f.msgId, "the read marker");
}

describe("conversation list", () => {
  test("direct and group conversations, newest activity first, paged, with last message, unread counts and read state", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const g = await createGroup(alice, "Book club", [bob, carol]);

    await sendAll(a, { to: bob }, ["b1", "b2", "b3"]);
    const [gAck] = await sendAll(a, { group: g.groupId }, ["g1"]);
    const [cAck] = await sendAll(a, { to: carol }, ["c1"]);
    const [own] = await sendAll(b, { to: alice }, ["from bob"]);

    // Bob: the direct chat with alice (newest: his own reply), then the group; nothing with carol.
    const lb = await conversations(bob);
    expect(lb.conversations.map((c) => c.with ?? c.group)).toEqual([alice, g.groupId]);
    const withAlice = convWith(lb, { with: alice });
    expect(withAlice.lastMessage).toMatchObject({ type: "message", msgId: own!.msgId, from: bob, to: alice, body: "from bob" });
    expect(withAlice.unread).toBe(3); // his own message does not count
    expect(withAlice.read).toBeNull();
    expect(convWith(lb, { group: g.groupId })).toMatchObject({ name: "Book club", unread: 1, lastMessage: { msgId: gAck!.msgId, group: g.groupId } });

    // Alice: carol's chat is older than bob's reply, newer than the group message.
    const la = await conversations(alice, "", B());
    expect(la.conversations.map((c) => c.with ?? c.group)).toEqual([bob, carol, g.groupId]);
    expect(convWith(la, { with: carol })).toMatchObject({ unread: 0, lastMessage: { msgId: cAck!.msgId } });
    expect(convWith(la, { with: bob }).unread).toBe(1);

    // Paging: one at a time, `before` from each page, null after the last.
    const seen: string[] = [];
    let before: string | null = null;
    for (;;) {
      const page = await conversations(alice, `?limit=1${before ? `&before=${before}` : ""}`);
      seen.push(...page.conversations.map((c) => c.with ?? c.group));
      before = page.before;
      if (!before) break;
      expect(page.conversations).toHaveLength(1);
    }
    expect(seen).toEqual([bob, carol, g.groupId]);
  });

  test("a read on one instance clears the unread count on every instance; markers only move forward", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const acks = await sendAll(a, { to: bob }, ["1", "2", "3", "4"]);
    const frames = await Promise.all(acks.map((x) => b.waitFor(messageFor(x.msgId))));
    expect(convWith(await conversations(bob), { with: alice }).unread).toBe(4);

    await readUpTo(b, { to: alice }, frames[1]!, B());
    expect(convWith(await conversations(bob, "", A()), { with: alice })).toMatchObject({ unread: 2, read: { msgId: acks[1]!.msgId, cursor: frames[1]!.cursor } });

    // Back to an older message: ignored.
    b.send({ type: "read", to: alice, cursor: frames[0]!.cursor });
    await readUpTo(b, { to: alice }, frames[3]!);
    const l = convWith(await conversations(bob, "", B()), { with: alice });
    expect(l).toMatchObject({ unread: 0, read: { msgId: acks[3]!.msgId } });
    b.send({ type: "read", to: alice, cursor: frames[2]!.cursor });
    const [more] = await sendAll(a, { to: bob }, ["5"]);
    const f5 = await b.waitFor(messageFor(more!.msgId));
    // A connection's reads are handled in order: once the next one is, the older ones were (ignored: no event).
    await readUpTo(b, { to: alice }, f5);
    const upTos = b.frames.filter((f) => f.type === "event" && f.kind === "read").map((f) => f.upTo);
    expect(upTos).toEqual([frames[1]!.cursor, frames[3]!.cursor, f5.cursor]);

    // Alice sees bob's read marker and the last message as read.
    const la = convWith(await conversations(alice), { with: bob });
    expect(la.receipts[bob].read).toEqual({ msgId: more!.msgId, ts: more!.ts });
    expect(la.lastMessageReceipts).toEqual({ readBy: 1, deliveredTo: 1, of: 1 });
    const r = await api(alice, `/api/receipts?with=${bob}`, B());
    expect(r.status).toBe(200);
    expect(r.body.receipts[bob].read).toEqual({ msgId: more!.msgId, ts: more!.ts });
  });

  test("delivered: a message that reached a device of the recipient (live or by sync) is delivered, not read", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const [offline] = await sendAll(a, { to: bob }, ["while bob is away"]);
    // Bob has no device: not delivered.
    expect((await api(alice, `/api/receipts?with=${bob}`)).body.receipts[bob]).toEqual({ read: null, delivered: null });
    const b = await fx.connect(B(), bob);
    const s = await b.sync();
    expect(s.messages.map((m) => m.msgId)).toContain(offline!.msgId);
    await until(() => api(alice, `/api/receipts?with=${bob}`), (r) => r.body.receipts[bob].delivered?.msgId === offline!.msgId, "delivered by sync");
    const [live] = await sendAll(a, { to: bob }, ["live"]);
    await until(() => api(alice, `/api/receipts?with=${bob}`, B()), (r) => r.body.receipts[bob].delivered?.msgId === live!.msgId, "delivered live");
    const l = convWith(await conversations(alice), { with: bob });
    expect(l.lastMessageReceipts).toEqual({ readBy: 0, deliveredTo: 1, of: 1 });
    expect(l.receipts[bob].read).toBeNull();
  });

  test("groups: read by N and delivered to N of the last message", async () => {
    const [alice, bob, carol, dave] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("dave")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const c = await fx.connect(A(), carol);
    const g = await createGroup(alice, "G", [bob, carol, dave]);
    const [m] = await sendAll(a, { group: g.groupId }, ["hello all"]);
    const fb = await b.waitFor(messageFor(m!.msgId));
    const fc = await c.waitFor(messageFor(m!.msgId));
    await until(() => conversations(alice), (l) => convWith(l, { group: g.groupId })?.lastMessageReceipts.deliveredTo === 2, "delivered to bob and carol");
    await readUpTo(b, { group: g.groupId }, fb, B());
    await readUpTo(c, { group: g.groupId }, fc);
    expect(convWith(await conversations(alice), { group: g.groupId }).lastMessageReceipts).toEqual({ readBy: 2, deliveredTo: 2, of: 3 });
    const r = await api(alice, `/api/receipts?group=${g.groupId}`);
    expect(r.status).toBe(200);
    expect(Object.keys(r.body.receipts).sort()).toEqual([bob, carol, dave].sort());
    expect(r.body.receipts[dave]).toEqual({ read: null, delivered: null });
    expect(r.body.receipts[bob].read.msgId).toBe(m!.msgId);
    // Not a member: 403, and the group is not in the outsider's list.
    const outsider = uniqueUser("eve");
    expect((await api(outsider, `/api/receipts?group=${g.groupId}`)).status).toBe(403);
    expect((await conversations(outsider)).conversations).toEqual([]);
  });
});

describe("malformed input", () => {
  test("read frames: bad fields get bad_request, a cursor of another conversation too, and the connection stays open", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const [m] = await sendAll(a, { to: bob }, ["x"]);
    const f = await b.waitFor(messageFor(m!.msgId));
    const bad = [
      { type: "read", to: alice },
      { type: "read", to: alice, cursor: "abc" },
      { type: "read", to: alice, cursor: "12" }, // a legacy cursor names no message
      { type: "read", to: alice, group: "g", cursor: f.cursor },
      { type: "read", cursor: f.cursor },
      { type: "read", to: "not valid!", cursor: f.cursor },
      { type: "read", to: alice, cursor: f.cursor, extra: 1 },
      { type: "read", to: carol, cursor: f.cursor }, // not this conversation's message
      { type: "read", group: "g_nope", cursor: f.cursor },
      { type: "read", to: alice, cursor: "1.999999999" }, // no such position
    ];
    for (const frame of bad) {
      const start = b.frames.length;
      b.send(frame);
      const e = await b.waitFor((x) => b.frames.indexOf(x) >= start && x.type === "error", JSON.stringify(frame));
      expect(e.code).toBe("bad_request");
      expect(e.id).toBeUndefined();
    }
    await readUpTo(b, { to: alice }, f, B());
    expect(convWith(await conversations(bob), { with: alice }).unread).toBe(0);
  });

  test("queries: limit, before and unknown parameters get 400; no token 401", async () => {
    const u = uniqueUser("q");
    for (const q of ["?limit=0", "?limit=x", "?limit=1.5", "?before=abc", "?before=12", "?before=1.-1", "?foo=1"]) {
      const r = await api(u, `/api/conversations${q}`);
      expect(`${q} ${r.status}`).toBe(`${q} 400`);
      expect(typeof r.body.error).toBe("string");
    }
    expect((await api(u, "/api/conversations?limit=100000")).status).toBe(200);
    for (const q of ["", "?with=a&group=b", "?with=bad!", "?group=", "?with=a&x=1"]) {
      const r = await api(u, `/api/receipts${q}`);
      expect(`${q} ${r.status}`).toBe(`${q} 400`);
    }
    expect((await fetch(`${A()}/api/conversations`)).status).toBe(401);
    expect((await fetch(`${A()}/api/receipts?with=a`)).status).toBe(401);
  });
});

describe("receipts as stream events", () => {
  const readEvent = (from: string, ref: string) => (f: Frame) => f.type === "event" && f.kind === "read" && f.from === from && f.ref === ref;
  const deliveredEvent = (from: string, ref: string) => (f: Frame) => f.type === "event" && f.kind === "delivered" && f.from === from && f.ref === ref;

  test("a user with two devices on two instances: a read on one reaches the other (unread cleared there) and the sender, live", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const b1 = await fx.connect(A(), bob);
    const b2 = await fx.connect(B(), bob);
    const acks = await sendAll(a, { to: bob }, ["1", "2"]);
    const f1 = await b1.waitFor(messageFor(acks[1]!.msgId));
    await b2.waitFor(messageFor(acks[1]!.msgId));
    b1.send({ type: "read", to: alice, cursor: f1.cursor });
    const onB2 = await b2.waitFor(readEvent(bob, acks[1]!.msgId), "bob's read on his other device");
    expect(onB2).toMatchObject({ type: "event", kind: "read", from: bob, to: alice, ref: acks[1]!.msgId, refTs: acks[1]!.ts, upTo: f1.cursor });
    expect(typeof onB2.cursor).toBe("string");
    const onA = await a.waitFor(readEvent(bob, acks[1]!.msgId), "bob's read at alice");
    expect(onA).toMatchObject({ from: bob, to: alice, ref: acks[1]!.msgId, refTs: acks[1]!.ts });
    // The reading device gets its own event too (it is in the reader's stream, in cursor order).
    await b1.waitFor(readEvent(bob, acks[1]!.msgId), "bob's read on the reading device");
    // The event is published before the marker is stored: the count follows right after.
    await until(() => conversations(bob, "", B()), (l) => convWith(l, { with: alice })?.unread === 0, "unread cleared");
  });

  test("delivered: alice hears when bob's device got her messages, batched (not one event per message)", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const t0 = Date.now();
    const acks: Frame[] = [];
    for (let i = 0; i < 30; i++) {
      a.send({ type: "send", id: `m${i}`, to: bob, body: `m${i}` });
    }
    for (let i = 0; i < 30; i++) acks.push(await a.waitFor((f) => f.type === "ack" && f.id === `m${i}`));
    await b.waitFor(messageFor(acks[29]!.msgId));
    // The marker is the latest message by (ts, msgId): several of the 30 share a millisecond.
    const latest = acks.reduce((x, y) => (y.ts > x.ts || (y.ts === x.ts && y.msgId > x.msgId) ? y : x));
    await a.waitFor(deliveredEvent(bob, latest.msgId), "delivered up to the last message");
    const elapsed = Date.now() - t0;
    const events = a.frames.filter((f) => f.type === "event" && f.kind === "delivered" && f.from === bob);
    // At most one per flush interval of the gateway that handed bob the frames (B), not one per message.
    expect(events.length).toBeLessThanOrEqual(Math.ceil(elapsed / DELIVERED_INTERVAL_MS) + 1);
    expect(events.length).toBeLessThan(30);
    expect(events.at(-1)).toMatchObject({ to: alice, ref: latest.msgId, refTs: latest.ts });
    // Bob gets no delivered events of his own deliveries.
    expect(b.frames.filter((f) => f.type === "event" && f.kind === "delivered")).toEqual([]);
  });

  test("sync after reconnect restores receipts: the read and delivered events that came while the sender was away", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await fx.connect(A(), alice);
    const [m] = await sendAll(a, { to: bob }, ["are you there?"]);
    const last = (await a.sync()).cursor;
    a.close();
    const b = await fx.connect(B(), bob);
    const f = (await b.sync()).messages.find(messageFor(m!.msgId))!;
    // Delivered (by bob's sync; the event is published before the marker is stored), then read.
    await until(() => api(alice, `/api/receipts?with=${bob}`, B()), (r) => r.body.receipts[bob].delivered !== null, "delivered by sync");
    b.send({ type: "read", to: alice, cursor: f.cursor });
    await b.waitFor(readEvent(bob, m!.msgId));
    const again = await fx.connect(A(), alice);
    const s = await again.sync(last);
    const events = again.frames.filter((x) => x.type === "event");
    expect(events.map((e) => `${e.kind} ${e.from} ${e.ref}`)).toEqual([`delivered ${bob} ${m!.msgId}`, `read ${bob} ${m!.msgId}`]);
    expect(events[1]).toMatchObject({ to: alice, refTs: m!.ts, upTo: f.cursor });
    expect(s.messages).toEqual([]); // only receipts came
    // Resuming from the last cursor gives nothing again.
    const s2 = await again.sync(s.cursor);
    expect(s2.messages).toEqual([]);
    expect(again.frames.filter((x) => x.type === "event").length).toBe(events.length);
  });

  test("groups: each member's read reaches the sender; read by N", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const a = await fx.connect(A(), alice);
    const b = await fx.connect(B(), bob);
    const c = await fx.connect(A(), carol);
    const g = await createGroup(alice, "G", [bob, carol]);
    const [m] = await sendAll(a, { group: g.groupId }, ["hi"]);
    const [reply] = await sendAll(b, { group: g.groupId }, ["hi alice"]);
    const fc = await c.waitFor(messageFor(reply!.msgId));
    // Carol reads both: the event goes to carol and to both senders.
    c.send({ type: "read", group: g.groupId, cursor: fc.cursor });
    for (const x of [a, b, c]) await x.waitFor(readEvent(carol, reply!.msgId), `carol's read at ${x.user}`);
    const fb = await b.waitFor(messageFor(m!.msgId));
    b.send({ type: "read", group: g.groupId, cursor: fb.cursor });
    const ev = await a.waitFor(readEvent(bob, m!.msgId));
    expect(ev).toMatchObject({ group: g.groupId, from: bob });
    // Bob's read covers only alice's message: carol gets nothing of it (a message bob sends her
    // afterwards comes after anything of his that entered her stream before).
    const [marker] = await sendAll(b, { to: carol }, ["marker"]);
    await c.waitFor(messageFor(marker!.msgId));
    expect(c.frames.filter(readEvent(bob, m!.msgId))).toEqual([]);
  });
});
