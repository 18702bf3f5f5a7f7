import { describe, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser, type Frame } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

// Groups (CONTRACT.md sections 3 and 4) on real processes: discover, two ws instances and persist
// over Redis, RabbitMQ and PostgreSQL. Users are minted (no registration needed).

const fx = useCluster({ ws: 2 });
const sql = () => fx.sql();

const A = fx.A;
const B = fx.B;

interface Group {
  groupId: string;
  name: string;
  members: string[];
  creator?: string;
}

const connect = fx.connect;

/** Calls the API as `user` (a minted token) and returns the status and the parsed body. */
async function api(user: string, method: string, path: string, body?: unknown, base = A()): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function createGroup(creator: string, name: string, members: string[], base = A()): Promise<Group> {
  const r = await api(creator, "POST", "/api/groups", { name, members }, base);
  expect(r.status).toBe(201);
  return r.body as Group;
}

const groupsOf = async (user: string, base = A()): Promise<Group[]> => {
  const r = await api(user, "GET", "/api/groups", undefined, base);
  expect(r.status).toBe(200);
  return r.body.groups as Group[];
};
const membersOf = async (user: string, groupId: string) => (await groupsOf(user)).find((g) => g.groupId === groupId)?.members.slice().sort();
const sorted = (xs: string[]) => xs.slice().sort();
const messageFor = (msgId: string) => (f: Frame) => f.type === "message" && f.msgId === msgId;

async function waitForRows(ids: string[], deadlineMs = 5000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const rows = await sql()<Array<{ id: string }>>`select id from messages where id in ${sql()(ids)}`;
    if (rows.length >= ids.length || Date.now() > until) return rows;
    await Bun.sleep(20);
  }
}

/**
 * Proves `c` did NOT get `msgId` live: `sender` (already acked the message) then sends a direct
 * marker to `c`; once the marker is there, the earlier message would have been too.
 */
async function expectNotDelivered(c: TestClient, sender: TestClient, msgId: string) {
  await flushTo(c, sender);
  expect(c.frames.filter(messageFor(msgId))).toHaveLength(0);
}

/** Returns once a direct marker from `sender` (sent after whatever it sent before) reached `c`. */
async function flushTo(c: TestClient, sender: TestClient) {
  const marker = await sender.sendMessage({ to: c.user }, "marker");
  expect(marker.type).toBe("ack");
  await c.waitFor(messageFor(marker.msgId), "marker");
}

describe("group management", () => {
  test("create: 201 {groupId, name, members}, the creator is a member, members deduplicated", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const r = await api(alice, "POST", "/api/groups", { name: "  Book club  ", members: [bob, carol, bob, alice] });
    expect(r.status).toBe(201);
    const g = r.body as Group;
    expect(typeof g.groupId).toBe("string");
    expect(g.groupId).toMatch(/^[A-Za-z0-9_.-]{1,64}$/);
    expect(g.name).toBe("Book club");
    expect(sorted(g.members)).toEqual(sorted([alice, bob, carol]));
    expect(g.creator).toBe(alice);
    // Alone, and with members omitted.
    const solo = await api(alice, "POST", "/api/groups", { name: "Notes to self" });
    expect(solo.status).toBe(201);
    expect(solo.body.members).toEqual([alice]);
    // Each group gets its own id.
    expect(solo.body.groupId).not.toBe(g.groupId);
  });

  test("list: only the caller's groups, on either instance, with their members", async () => {
    const [alice, bob, carol, dave] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("dave")];
    const g1 = await createGroup(alice, "Alice and Bob", [bob]);
    const g2 = await createGroup(carol, "Carol alone", []);
    const g3 = await createGroup(bob, "Bob and Carol", [carol], B());
    const ids = (gs: Group[]) => sorted(gs.map((g) => g.groupId));
    expect(ids(await groupsOf(alice))).toEqual([g1.groupId]);
    expect(ids(await groupsOf(bob, B()))).toEqual(sorted([g1.groupId, g3.groupId]));
    expect(ids(await groupsOf(carol))).toEqual(sorted([g2.groupId, g3.groupId]));
    expect(await groupsOf(dave)).toEqual([]);
    const listed = (await groupsOf(bob)).find((g) => g.groupId === g1.groupId)!;
    expect(listed).toMatchObject({ groupId: g1.groupId, name: "Alice and Bob", creator: alice });
    expect(sorted(listed.members)).toEqual(sorted([alice, bob]));
  });

  test("add: any member may add (204, idempotent); a non-member gets 403; an unknown group 404", async () => {
    const [alice, bob, carol, dave, eve] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("dave"), uniqueUser("eve")];
    const g = await createGroup(alice, "Adders", [bob]);
    const path = `/api/groups/${g.groupId}/members`;
    expect((await api(bob, "POST", path, { userId: carol }, B())).status).toBe(204);
    expect((await api(alice, "POST", path, { userId: carol })).status).toBe(204);
    expect(await membersOf(carol, g.groupId)).toEqual(sorted([alice, bob, carol]));

    const denied = await api(eve, "POST", path, { userId: eve });
    expect(denied.status).toBe(403);
    expect(typeof denied.body.error).toBe("string");
    expect((await api(dave, "POST", path, { userId: eve })).status).toBe(403);
    expect(await membersOf(alice, g.groupId)).toEqual(sorted([alice, bob, carol]));

    for (const unknown of ["g_doesnotexist", "not%20an%20id"]) {
      expect((await api(alice, "POST", `/api/groups/${unknown}/members`, { userId: bob })).status).toBe(404);
    }
  });

  test("remove: self leave, the creator removes others, nobody else removes others", async () => {
    const [alice, bob, carol, dave, eve] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("dave"), uniqueUser("eve")];
    const g = await createGroup(alice, "Removers", [bob, carol, dave]);
    const del = (who: string, target: string, base = A()) => api(who, "DELETE", `/api/groups/${g.groupId}/members/${target}`, undefined, base);

    // A member who is not the creator may not remove someone else; nor may an outsider.
    const forbidden = await del(bob, carol, B());
    expect(forbidden.status).toBe(403);
    expect(typeof forbidden.body.error).toBe("string");
    expect((await del(eve, carol)).status).toBe(403);
    expect(await membersOf(alice, g.groupId)).toEqual(sorted([alice, bob, carol, dave]));

    // Self leave.
    expect((await del(bob, bob, B())).status).toBe(204);
    expect((await groupsOf(bob)).map((x) => x.groupId)).not.toContain(g.groupId);
    expect(await membersOf(alice, g.groupId)).toEqual(sorted([alice, carol, dave]));

    // The creator removes another member.
    expect((await del(alice, carol)).status).toBe(204);
    expect((await groupsOf(carol)).map((x) => x.groupId)).not.toContain(g.groupId);
    expect(await membersOf(dave, g.groupId)).toEqual(sorted([alice, dave]));

    // A former member has no say any more; removing a non-member is 404; an unknown group 404.
    expect((await del(bob, dave)).status).toBe(403);
    expect((await del(alice, carol)).status).toBe(404);
    expect((await api(alice, "DELETE", `/api/groups/g_doesnotexist/members/${alice}`)).status).toBe(404);

    // The creator may leave too; the group lives on for the others.
    expect((await del(alice, alice)).status).toBe(204);
    expect(await membersOf(dave, g.groupId)).toEqual([dave]);
  });

  const invalid: Array<[string, string, string, string]> = [
    ["create", "POST", "/api/groups", '{"name":"x","members":['],
    ["create", "POST", "/api/groups", "[]"],
    ["create", "POST", "/api/groups", '"a group"'],
    ["create", "POST", "/api/groups", "null"],
    ["create", "POST", "/api/groups", ""],
    ["create", "POST", "/api/groups", '{"members":[]}'],
    ["create", "POST", "/api/groups", '{"name":"","members":[]}'],
    ["create", "POST", "/api/groups", '{"name":"   ","members":[]}'],
    ["create", "POST", "/api/groups", JSON.stringify({ name: "n".repeat(101), members: [] })],
    ["create", "POST", "/api/groups", '{"name":42,"members":[]}'],
    ["create", "POST", "/api/groups", '{"name":"x","members":"bob"}'],
    ["create", "POST", "/api/groups", '{"name":"x","members":["bad id"]}'],
    ["create", "POST", "/api/groups", '{"name":"x","members":[42]}'],
    ["create", "POST", "/api/groups", JSON.stringify({ name: "x", members: ["y".repeat(65)] })],
    ["add", "POST", "/api/groups/GROUP/members", '{"userId":'],
    ["add", "POST", "/api/groups/GROUP/members", "{}"],
    ["add", "POST", "/api/groups/GROUP/members", "[]"],
    ["add", "POST", "/api/groups/GROUP/members", ""],
    ["add", "POST", "/api/groups/GROUP/members", '{"userId":"bad id"}'],
    ["add", "POST", "/api/groups/GROUP/members", '{"userId":""}'],
    ["add", "POST", "/api/groups/GROUP/members", '{"userId":["bob"]}'],
    ["history", "GET", "/api/messages?group=bad%20id", ""],
    ["history", "GET", "/api/messages?group=GROUP&limit=0", ""],
    ["history", "GET", "/api/messages?group=GROUP&before=soon", ""],
  ];
  test.each(invalid)("400 for a malformed %s request: %s %s %s", async (_, method, rawPath, body) => {
    const alice = uniqueUser("alice");
    const g = await createGroup(alice, "Valid", []);
    const r = await api(alice, method, rawPath.replace("GROUP", g.groupId), method === "GET" ? undefined : body);
    expect(r.status).toBe(400);
    expect(typeof r.body.error).toBe("string");
    expect(await membersOf(alice, g.groupId)).toEqual([alice]);
  });
});

describe("group messages", () => {
  test("a group of three on two instances: every member's every connection gets it, the sender gets the ack, PostgreSQL stores it once", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const g = await createGroup(alice, "Three", [bob, carol]);
    const a1 = await connect(A(), alice);
    const a2 = await connect(B(), alice);
    const b1 = await connect(B(), bob);
    const b2 = await connect(A(), bob);
    const c1 = await connect(A(), carol);

    const ack = await a1.sendMessage({ group: g.groupId }, "hello all", "g1");
    expect(ack).toMatchObject({ type: "ack", id: "g1" });
    expect(typeof ack.msgId).toBe("string");
    for (const c of [a2, b1, b2, c1]) {
      const m = await c.waitFor(messageFor(ack.msgId), `group message at ${c.user}`);
      expect(m).toMatchObject({ type: "message", msgId: ack.msgId, id: "g1", from: alice, group: g.groupId, body: "hello all", ts: ack.ts });
      expect(m.to).toBeUndefined();
      expect(typeof m.cursor).toBe("string");
    }

    // Replies from the other instance reach everyone else, including the first sender.
    const reply = await b1.sendMessage({ group: g.groupId }, "hi from B");
    expect(reply.type).toBe("ack");
    for (const c of [a1, a2, b2, c1]) await c.waitFor(messageFor(reply.msgId), `reply at ${c.user}`);
    // Senders got acks, not their own message: b1's reply reached a1 after a1's ack, so a1's own
    // message would have been there by now.
    expect(a1.frames.filter(messageFor(ack.msgId))).toHaveLength(0);
    await expectNotDelivered(b1, c1, reply.msgId);

    // One row per message, not one per member.
    const rows = await waitForRows([ack.msgId, reply.msgId]);
    expect(rows).toHaveLength(2);
    const stored = await sql()<Array<{ id: string; body: string; group_id: string }>>`select id, body, group_id from messages where group_id = ${g.groupId} and kind = 'message' order by body`;
    expect(stored.map((r) => [r.id, r.body])).toEqual([
      [ack.msgId, "hello all"],
      [reply.msgId, "hi from B"],
    ]);

    // A resend of the same id is acked again with the same msgId and stored once.
    const again = await a2.sendMessage({ group: g.groupId }, "hello all", "g1");
    expect(again).toMatchObject({ type: "ack", msgId: ack.msgId, ts: ack.ts });
    await flushTo(c1, a1);
    expect(c1.frames.filter(messageFor(ack.msgId))).toHaveLength(1);
    expect((await sql()`select id from messages where id = ${ack.msgId}`).length).toBe(1);
  });

  test("a group message reaches an offline member through sync", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const g = await createGroup(alice, "Later", [bob]);
    const a = await connect(A(), alice);
    const ack = await a.sendMessage({ group: g.groupId }, "read this later");
    expect(ack.type).toBe("ack");
    const b = await connect(B(), bob);
    const { messages } = await b.sync();
    expect(messages.map((m) => m.msgId)).toEqual([ack.msgId]);
    expect(messages[0]).toMatchObject({ from: alice, group: g.groupId, body: "read this later" });
  });

  test("a send from a non-member is forbidden, with the id, and nothing is delivered or stored", async () => {
    const [alice, bob, mallory] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("mallory")];
    const g = await createGroup(alice, "Private", [bob]);
    const b = await connect(B(), bob);
    const m = await connect(A(), mallory);
    const r = await m.sendMessage({ group: g.groupId }, "let me in", "intrude-1");
    expect(r).toMatchObject({ type: "error", id: "intrude-1", code: "forbidden" });
    expect(typeof r.message).toBe("string");
    // The connection stays usable.
    m.send({ type: "ping" });
    await m.next((f) => f.type === "pong", "pong after forbidden");
    const a = await connect(A(), alice);
    const ok = await a.sendMessage({ group: g.groupId }, "members only");
    await b.waitFor(messageFor(ok.msgId));
    expect(b.messages().filter((f) => f.body === "let me in")).toHaveLength(0);
    await waitForRows([ok.msgId]);
    expect((await sql()`select id from messages where group_id = ${g.groupId} and body = 'let me in'`).length).toBe(0);
    // Nor may the outsider read the group's history.
    expect((await api(mallory, "GET", `/api/messages?group=${g.groupId}`)).status).toBe(403);
  });

  test("a removed member stops receiving, cannot read history nor send; a member added later receives", async () => {
    const [alice, bob, carol, dave] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("dave")];
    const g = await createGroup(alice, "Churn", [bob, carol]);
    const a = await connect(A(), alice);
    const b = await connect(B(), bob);
    const c = await connect(A(), carol);
    const d = await connect(B(), dave);

    const before = await a.sendMessage({ group: g.groupId }, "before the removal");
    await Promise.all([b, c].map((x) => x.waitFor(messageFor(before.msgId))));
    expect((await api(carol, "GET", `/api/messages?group=${g.groupId}`)).status).toBe(200);

    // The creator removes carol.
    expect((await api(alice, "DELETE", `/api/groups/${g.groupId}/members/${carol}`)).status).toBe(204);
    const after = await a.sendMessage({ group: g.groupId }, "after the removal");
    expect(after.type).toBe("ack");
    await b.waitFor(messageFor(after.msgId));
    await expectNotDelivered(c, a, after.msgId);
    const history = await api(carol, "GET", `/api/messages?group=${g.groupId}`, undefined, B());
    expect(history.status).toBe(403);
    expect(typeof history.body.error).toBe("string");
    const denied = await c.sendMessage({ group: g.groupId }, "can I still talk?", "carol-late");
    expect(denied).toMatchObject({ type: "error", id: "carol-late", code: "forbidden" });
    // Her sync does not bring what was sent after she left.
    expect((await c.sync()).messages.map((m) => m.msgId)).not.toContain(after.msgId);

    // Bob (a member, not the creator) adds dave, who then receives new messages live.
    expect(d.frames.filter(messageFor(after.msgId))).toHaveLength(0);
    expect((await api(bob, "POST", `/api/groups/${g.groupId}/members`, { userId: dave }, B())).status).toBe(204);
    const welcome = await b.sendMessage({ group: g.groupId }, "welcome dave");
    expect(welcome.type).toBe("ack");
    const got = await d.waitFor(messageFor(welcome.msgId), "welcome at dave");
    expect(got).toMatchObject({ from: bob, group: g.groupId, body: "welcome dave" });
    await a.waitFor(messageFor(welcome.msgId));
    await expectNotDelivered(c, a, welcome.msgId);
    // Dave may now send and read history.
    const daves = await d.sendMessage({ group: g.groupId }, "thanks");
    expect(daves.type).toBe("ack");
    await Promise.all([a, b].map((x) => x.waitFor(messageFor(daves.msgId))));
    await waitForRows([daves.msgId]);
    const h = await api(dave, "GET", `/api/messages?group=${g.groupId}`);
    expect(h.status).toBe(200);
    expect(h.body.messages.map((m: Frame) => m.body)).toContain("thanks");
  });

  test("history pages like direct history, for every member on either instance; 403 for others", async () => {
    const [alice, bob, carol, outsider] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol"), uniqueUser("out")];
    const g = await createGroup(alice, "Pages", [bob, carol]);
    const a = await connect(A(), alice);
    const b = await connect(B(), bob);
    const acks: Frame[] = [];
    for (let i = 0; i < 7; i++) acks.push(await (i % 2 ? b : a).sendMessage({ group: g.groupId }, `p${i}`));
    expect(acks.every((f) => f.type === "ack")).toBe(true);
    await waitForRows(acks.map((f) => f.msgId));

    const get = async (user: string, q: string, base: string) => {
      const r = await api(user, "GET", `/api/messages?group=${g.groupId}${q}`, undefined, base);
      expect(r.status).toBe(200);
      return r.body as { messages: Frame[]; before: string | null };
    };
    for (const [user, base] of [[carol, A()], [alice, B()]] as const) {
      const p1 = await get(user, "&limit=3", base);
      expect(p1.messages.map((m) => m.body)).toEqual(["p4", "p5", "p6"]);
      expect(p1.before).not.toBeNull();
      const p2 = await get(user, `&limit=3&before=${encodeURIComponent(p1.before!)}`, base);
      expect(p2.messages.map((m) => m.body)).toEqual(["p1", "p2", "p3"]);
      // The oldest page starts with the notice of the group's creation (a `member` event).
      const p3 = await get(user, `&limit=3&before=${encodeURIComponent(p2.before!)}`, base);
      expect(p3.messages.map((m) => m.body ?? `${m.kind}:${m.action}`)).toEqual(["member:created", "p0"]);
      expect(p3.before).toBeNull();
      expect(p3.messages[1]).toMatchObject({ type: "message", msgId: acks[0]!.msgId, from: alice, group: g.groupId, body: "p0" });
      expect(p3.messages[1]!.to).toBeUndefined();
      const all = await get(user, "", base);
      expect(all.messages.filter((m) => m.type === "message").map((m) => m.msgId)).toEqual(acks.map((f) => f.msgId));
      expect(all.before).toBeNull();
      // A limit over 200 counts as 200.
      expect((await get(user, "&limit=100000", base)).messages).toHaveLength(8); // 7 messages and the creation notice
    }
    for (const gid of [g.groupId, "g_doesnotexist"]) {
      const r = await api(outsider, "GET", `/api/messages?group=${gid}`);
      expect(r.status).toBe(403);
      expect(typeof r.body.error).toBe("string");
    }
  });
});
