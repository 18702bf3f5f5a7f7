import { describe, expect, test } from "bun:test";
import { uniqueUser, type Frame, type TestClient } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

// Group membership changes (docs/api.md, "Groups: roles and membership changes") on real processes:
// discover, two ws instances and persist over Redis, RabbitMQ and PostgreSQL. Users are minted.

const fx = useCluster({ ws: 2 });
const sql = () => fx.sql();
const { A, B, connect } = fx;

async function api(user: string, method: string, path: string, body?: unknown, base = A()): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${await fx.token(user)}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function createGroup(creator: string, members: string[]): Promise<string> {
  const r = await api(creator, "POST", "/api/groups", { name: "Team", members });
  expect(r.status).toBe(201);
  return r.body.groupId;
}
const add = (by: string, g: string, user: string, base = A()) => api(by, "POST", `/api/groups/${g}/members`, { userId: user }, base);
const remove = (by: string, g: string, user: string, base = A()) => api(by, "DELETE", `/api/groups/${g}/members/${user}`, undefined, base);
const setRole = (by: string, g: string, user: string, role: unknown, base = A()) => api(by, "PUT", `/api/groups/${g}/members/${user}/role`, { role }, base);
const groupOf = async (user: string, g: string) => ((await api(user, "GET", "/api/groups")).body.groups as any[]).find((x) => x.groupId === g);

const groupFrame = (g: string, action: string, user: string) => (f: Frame) => f.type === "group" && f.groupId === g && f.change.action === action && f.change.user === user;
/** The group frame about (action, user) this client got, waited for (it is sent before the route answers, to other instances too). */
const told = (c: TestClient, g: string, action: string, user: string) => c.waitFor(groupFrame(g, action, user), `group frame ${action} ${user}`);

describe("membership changes reach every member's connections at once", () => {
  test("add, leave and remove: each member's connections on both instances get the new member list; a removed member is told", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const g = await createGroup(alice, [bob]);
    const a = await connect(A(), alice);
    const b1 = await connect(B(), bob);
    const b2 = await connect(A(), bob); // a second device of bob, on the other instance
    const c = await connect(B(), carol);

    expect((await add(bob, g, carol, B())).status).toBe(204);
    for (const cl of [a, b1, b2, c]) {
      const f = await told(cl, g, "added", carol);
      expect(f.change).toEqual({ action: "added", user: carol, by: bob });
      expect(f.version).toBe(1);
      expect(f.group).toMatchObject({ groupId: g, name: "Team", owner: alice, admins: [], creator: alice, version: 1 });
      expect(f.group.members.slice().sort()).toEqual([alice, bob, carol].sort());
    }

    expect((await remove(alice, g, carol)).status).toBe(204);
    for (const cl of [a, b1, b2]) {
      const f = await told(cl, g, "removed", carol);
      expect(f.change).toEqual({ action: "removed", user: carol, by: alice });
      expect(f.group.members.slice().sort()).toEqual([alice, bob].sort());
    }
    const gone = await told(c, g, "removed", carol);
    expect(gone.group).toBeNull();
    expect(gone.version).toBe(2);

    expect((await remove(bob, g, bob, B())).status).toBe(204);
    expect((await told(a, g, "left", bob)).group.members).toEqual([alice]);
    for (const cl of [b1, b2]) expect((await told(cl, g, "left", bob)).group).toBeNull();
    // carol, no longer a member, was not told about bob.
    expect(c.frames.some(groupFrame(g, "left", bob))).toBe(false);
    // Each connection got each frame once, on either instance (a pushed frame is not repeated).
    for (const cl of [a, b1, b2]) expect(cl.frames.filter(groupFrame(g, "added", carol))).toHaveLength(1);
  });

  test("a group created with members is pushed to each of them (it shows at once)", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const b = await connect(B(), bob);
    const g = await createGroup(alice, [bob]);
    const f = await told(b, g, "created", alice);
    expect(f.group.members.slice().sort()).toEqual([alice, bob].sort());
  });

  test("changes made at once on two instances: each frame carries the group as its change left it, with a distinct version; the newest lists everyone", async () => {
    const [alice, ...others] = [uniqueUser("alice"), ...Array.from({ length: 6 }, (_, i) => uniqueUser(`m${i}`))];
    const g = await createGroup(alice, []);
    const a = await connect(A(), alice);
    const rs = await Promise.all(others.map((u, i) => add(alice, g, u, i % 2 ? A() : B())));
    expect(rs.map((r) => r.status)).toEqual(others.map(() => 204));
    const frames = await Promise.all(others.map((u) => told(a, g, "added", u)));
    expect(frames.map((f) => f.version).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const f of frames) expect(f.group.members).toHaveLength(f.version + 1);
    const newest = frames.find((f) => f.version === 6)!;
    expect(newest.group.members.slice().sort()).toEqual([alice, ...others].sort());
    expect((await groupOf(alice, g)).version).toBe(6);
    // A change that changes nothing keeps the version.
    expect((await add(alice, g, others[0]!)).status).toBe(204);
    expect((await groupOf(alice, g)).version).toBe(6);
  });
});

describe("roles", () => {
  test("when the owner leaves, the longest-standing member becomes the owner and may remove members", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const g = await createGroup(alice, [bob]);
    expect((await add(bob, g, carol)).status).toBe(204);
    const b = await connect(B(), bob);
    expect((await remove(alice, g, alice)).status).toBe(204);
    const f = await told(b, g, "role", bob);
    expect(f.change).toEqual({ action: "role", user: bob, role: "owner", by: alice });
    expect(f.group.owner).toBe(bob);
    expect((await groupOf(bob, g)).owner).toBe(bob);
    // The group is still managed: the new owner removes carol.
    expect((await remove(bob, g, carol)).status).toBe(204);
    expect((await groupOf(bob, g)).members).toEqual([bob]);
  });

  test("an admin is preferred over longer-standing members; the last member leaving leaves no owner", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const g = await createGroup(alice, [bob]);
    expect((await add(alice, g, carol)).status).toBe(204);
    expect((await setRole(alice, g, carol, "admin")).status).toBe(204);
    expect((await groupOf(bob, g)).admins).toEqual([carol]);
    expect((await remove(alice, g, alice, B())).status).toBe(204);
    const now = await groupOf(bob, g);
    expect(now.owner).toBe(carol);
    expect(now.admins).toEqual([]);
    expect((await remove(carol, g, carol)).status).toBe(204);
    expect((await groupOf(bob, g)).owner).toBe(bob);
    expect((await remove(bob, g, bob)).status).toBe(204);
    const [row] = await sql()`select count(*)::int as n from group_members where group_id = ${g}`;
    expect(row!.n).toBe(0);
  });

  test("who may remove whom, and who may change roles", async () => {
    const [owner, admin, admin2, member, member2, outsider] = ["owner", "admin", "admin2", "member", "member2", "outsider"].map((p) => uniqueUser(p));
    const g = await createGroup(owner!, [admin!, admin2!, member!, member2!]);
    expect((await setRole(owner!, g, admin!, "admin")).status).toBe(204);
    expect((await setRole(owner!, g, admin2!, "admin")).status).toBe(204);
    // Setting the role a member has is a no-op.
    expect((await setRole(owner!, g, admin2!, "admin")).status).toBe(204);
    // Only the owner changes roles.
    expect((await setRole(admin!, g, member!, "admin")).status).toBe(403);
    expect((await setRole(member!, g, member2!, "admin")).status).toBe(403);
    expect((await setRole(outsider!, g, member!, "admin")).status).toBe(403);
    expect((await setRole(owner!, g, outsider!, "admin")).status).toBe(404);
    expect((await setRole(owner!, g, owner!, "member")).status).toBe(400);
    // A plain member removes nobody but themself; an admin removes plain members only.
    expect((await remove(member!, g, member2!)).status).toBe(403);
    expect((await remove(admin!, g, owner!)).status).toBe(403);
    expect((await remove(admin!, g, admin2!)).status).toBe(403);
    expect((await remove(admin!, g, member2!)).status).toBe(204);
    expect((await remove(admin!, g, outsider!)).status).toBe(404);
    // The owner removes an admin.
    expect((await remove(owner!, g, admin2!)).status).toBe(204);
    // Handing ownership on: the old owner becomes an admin.
    expect((await setRole(owner!, g, member!, "owner")).status).toBe(204);
    const after = await groupOf(owner!, g);
    expect(after.owner).toBe(member);
    expect(after.admins.slice().sort()).toEqual([admin!, owner!].sort());
    expect((await setRole(owner!, g, admin!, "member")).status).toBe(403);
    expect((await setRole(member!, g, admin!, "member")).status).toBe(204);
    expect((await groupOf(owner!, g)).admins).toEqual([owner]);
    const [row] = await sql()`select count(*)::int as n from group_members where group_id = ${g} and role = 'owner'`;
    expect(row!.n).toBe(1);
  });

  test("the owner and both admins leaving at once, on two instances, leave exactly one owner", async () => {
    const users = Array.from({ length: 5 }, (_, i) => uniqueUser(`m${i}`));
    const g = await createGroup(users[0]!, users.slice(1));
    for (const u of users.slice(1, 3)) expect((await setRole(users[0]!, g, u, "admin")).status).toBe(204);
    // The owner and both admins leave at once, on both instances.
    const rs = await Promise.all([remove(users[0]!, g, users[0]!, A()), remove(users[1]!, g, users[1]!, B()), remove(users[2]!, g, users[2]!, A())]);
    expect(rs.map((r) => r.status)).toEqual([204, 204, 204]);
    const rows = await sql()`select user_id, role from group_members where group_id = ${g} order by user_id`;
    expect(rows.map((r) => r.user_id)).toEqual(users.slice(3).sort());
    expect(rows.filter((r) => r.role === "owner")).toHaveLength(1);
  });
});

describe("a new member sees the group's history", () => {
  test("the latest messages are put into their stream in order: live, in history and in sync; stored once", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const g = await createGroup(alice, [bob]);
    const a = await connect(A(), alice);
    const acks: Frame[] = [];
    for (const body of ["one", "two", "three"]) acks.push(await a.sendMessage({ group: g }, body));
    const c = await connect(B(), carol);
    expect((await add(bob, g, carol, B())).status).toBe(204);
    // Live, before the group frame.
    const f = await told(c, g, "added", carol);
    const live = c.frames.slice(0, c.frames.indexOf(f)).filter((x) => x.type === "message");
    expect(live.map((m) => m.body)).toEqual(["one", "two", "three"]);
    expect(live.map((m) => m.msgId)).toEqual(acks.map((x) => x.msgId));
    // History (reads its own writes).
    const h = await api(carol, "GET", `/api/messages?group=${g}`, undefined, B());
    expect(h.status).toBe(200);
    const hm = h.body.messages.filter((m: Frame) => m.type === "message");
    expect(hm.map((m: Frame) => m.body)).toEqual(["one", "two", "three"]);
    expect(hm.map((m: Frame) => m.cursor)).toEqual(live.map((m) => m.cursor));
    // Then the notice that she was added.
    expect(h.body.messages.at(-1)).toMatchObject({ type: "event", kind: "member", action: "added", user: carol, from: bob, group: g });
    // Sync from the start on another device.
    const c2 = await connect(A(), carol);
    expect((await c2.sync()).messages.map((m) => m.body)).toEqual(["one", "two", "three"]);
    // Stored once; a second entry only in carol's stream.
    const ids = acks.map((x) => x.msgId);
    expect((await sql()`select id from messages where id in ${sql()(ids)}`).length).toBe(3);
    expect((await sql()`select msg_id from stream where user_id = ${carol} and msg_id in ${sql()(ids)}`).length).toBe(3);
    // New messages follow as usual.
    const next = await a.sendMessage({ group: g }, "four");
    expect((await c.waitFor((x) => x.type === "message" && x.msgId === next.msgId)).body).toBe("four");
  });

  test("a member removed and added again is not given the messages they hold twice", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const g = await createGroup(alice, [bob]);
    const a = await connect(A(), alice);
    const first = await a.sendMessage({ group: g }, "before");
    expect((await remove(alice, g, bob)).status).toBe(204);
    const missed = await a.sendMessage({ group: g }, "while away");
    const b = await connect(B(), bob);
    expect((await add(alice, g, bob)).status).toBe(204);
    await told(b, g, "added", bob);
    const h = await api(bob, "GET", `/api/messages?group=${g}`);
    expect(h.body.messages.filter((m: Frame) => m.type === "message").map((m: Frame) => m.msgId)).toEqual([first.msgId, missed.msgId]);
    const rows = await sql()`select msg_id from stream where user_id = ${bob} and conv = ${"g:" + g} and kind = 'message'`;
    expect(rows.map((r) => r.msg_id).sort()).toEqual([first.msgId, missed.msgId].sort());
  });

  test("adding a member again changes nothing: no frame, no history", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const g = await createGroup(alice, [bob]);
    const a = await connect(A(), alice);
    await a.sendMessage({ group: g }, "hello");
    expect((await add(alice, g, bob)).status).toBe(204);
    const marker = await add(alice, g, uniqueUser("dave"));
    expect(marker.status).toBe(204);
    await a.waitFor((f) => f.type === "group" && f.change.action === "added", "the marker's frame");
    expect(a.frames.filter((f) => f.type === "group" && f.change.user === bob)).toHaveLength(0);
    const [row] = await sql()`select count(*)::int as n from stream where user_id = ${bob} and conv = ${"g:" + g} and kind = 'message'`;
    expect(row!.n).toBe(1);
  });
});

describe("membership notices travel in the streams", () => {
  const notice = (f: Frame) => f.type === "event" && f.kind === "member";
  const summary = (fs: Frame[]) => fs.filter((f) => f.type === "message" || notice(f)).map((f) => (f.type === "message" ? `msg:${f.body}` : `${f.from}:${f.action}:${f.user}${f.role ? `:${f.role}` : ""}`));

  test("each change reaches the members at the time and a removed member, ordered with the messages: live, in sync and in history", async () => {
    const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
    const b = await connect(B(), bob);
    const c = await connect(A(), carol);
    const g = await createGroup(alice, [bob]);
    const a = await connect(A(), alice);
    await a.sendMessage({ group: g }, "hi");
    expect((await add(alice, g, carol, B())).status).toBe(204);
    expect((await remove(alice, g, bob)).status).toBe(204);
    expect((await remove(alice, g, alice, B())).status).toBe(204);
    await told(c, g, "role", carol);
    await told(b, g, "removed", bob);

    const forBob = [`${alice}:created:${alice}`, "msg:hi", `${alice}:added:${carol}`, `${alice}:removed:${bob}`];
    const forCarol = ["msg:hi", `${alice}:added:${carol}`, `${alice}:removed:${bob}`, `${alice}:left:${alice}`, `${alice}:role:${carol}:owner`];
    // Live (every event frame arrives before the group frame of the same change).
    expect(summary(b.frames)).toEqual(forBob);
    expect(summary(c.frames)).toEqual(forCarol);
    const ev = c.frames.find((f) => notice(f) && f.action === "role")!;
    expect(ev).toMatchObject({ type: "event", kind: "member", from: alice, group: g, action: "role", user: carol, role: "owner" });
    expect(typeof ev.msgId).toBe("string");
    expect(Object.keys(ev).at(-1)).toBe("cursor");
    // Cursors increase through messages and events alike.
    const cursors = c.frames.filter((f) => f.cursor !== undefined).map((f) => f.cursor.split(".").map(BigInt) as [bigint, bigint]);
    for (let i = 1; i < cursors.length; i++) {
      const [[e0, p0], [e1, p1]] = [cursors[i - 1]!, cursors[i]!];
      expect(e1 > e0 || (e1 === e0 && p1 === p0 + 1n)).toBe(true);
    }
    // Sync on another device, and history for a member; 403 for bob, who keeps his stream.
    const b2 = await connect(A(), bob);
    b2.send({ type: "sync" });
    const synced = await b2.waitFor((f) => f.type === "synced");
    expect(summary(b2.frames.slice(0, b2.frames.indexOf(synced)))).toEqual(forBob);
    const h = await api(carol, "GET", `/api/messages?group=${g}`);
    expect(summary(h.body.messages)).toEqual(forCarol);
    expect((await api(bob, "GET", `/api/messages?group=${g}`)).status).toBe(403);
    // Stored once each, as kind "member".
    const [row] = await sql()`select count(*)::int as n from messages where group_id = ${g} and kind = 'member'`;
    expect(row!.n).toBe(5);
  });

  test("a membership notice cannot be sent by a client", async () => {
    const [alice] = [uniqueUser("alice")];
    const g = await createGroup(alice, []);
    const a = await connect(A(), alice);
    a.send({ type: "member", id: "m1", group: g, action: "added", user: "mallory" });
    const e = await a.waitFor((f) => f.type === "error" && f.id === "m1");
    expect(e.code).toBe("bad_request");
    // Only the group's creation is noted (history reads its own writes).
    const h = await api(alice, "GET", `/api/messages?group=${g}`);
    expect(h.body.messages.map((f: Frame) => `${f.kind}:${f.action}`)).toEqual(["member:created"]);
  });
});

describe("malformed requests", () => {
  test.each([
    ["{}", 400],
    ['{"role":"king"}', 400],
    ['{"role":"admin","extra":1}', 400],
    ['{"role":42}', 400],
    ["not json", 400],
    ["[]", 400],
  ])("PUT role %s → %d, nothing changes", async (body, status) => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const g = await createGroup(alice, [bob]);
    const r = await api(alice, "PUT", `/api/groups/${g}/members/${bob}/role`, body);
    expect(r.status).toBe(status);
    expect(typeof r.body.error).toBe("string");
    expect((await groupOf(bob, g)).admins).toEqual([]);
  });

  test("bad ids in the path: 400 for a user id, 404 for a group id; 401 without a token", async () => {
    const alice = uniqueUser("alice");
    const g = await createGroup(alice, []);
    expect((await api(alice, "PUT", `/api/groups/${g}/members/bad%20id/role`, { role: "admin" })).status).toBe(400);
    expect((await api(alice, "DELETE", `/api/groups/${g}/members/bad%20id`)).status).toBe(400);
    expect((await api(alice, "PUT", `/api/groups/no%20group/members/${alice}/role`, { role: "admin" })).status).toBe(404);
    expect((await api(alice, "PUT", `/api/groups/g_doesnotexist/members/${alice}/role`, { role: "admin" })).status).toBe(404);
    const res = await fetch(`${A()}/api/groups/${g}/members/${alice}/role`, { method: "PUT", body: '{"role":"admin"}', headers: { "content-type": "application/json" } });
    expect(res.status).toBe(401);
  });

  test("/internal/push needs the internal secret and a well-formed body", async () => {
    const url = `${A()}/internal/push`;
    const auth = { authorization: `Bearer ${fx.cluster.internalSecret}`, "content-type": "application/json" };
    expect((await fetch(url, { method: "POST", body: "{}" })).status).toBe(401);
    expect((await fetch(url, { method: "POST", headers: { authorization: `Bearer ${await fx.token("alice")}` }, body: "{}" })).status).toBe(401);
    for (const body of ["", "{}", '{"users":"a","frame":{"type":"group"}}', '{"users":[1],"frame":{"type":"group"}}', '{"users":["a"]}', '{"users":["a"],"frame":{}}']) {
      expect((await fetch(url, { method: "POST", headers: auth, body })).status).toBe(400);
    }
    const ok = await fetch(url, { method: "POST", headers: auth, body: '{"users":["nobody-here"],"frame":{"type":"group"}}' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ missing: 1 });
  });
});
