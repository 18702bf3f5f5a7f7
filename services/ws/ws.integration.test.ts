import { describe, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser, type Frame } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

const fx = useCluster({ ws: 2 });
const sql = () => fx.sql();

const A = fx.A;
const B = fx.B;

const connect = fx.connect;

const messageFor = (msgId: string) => (f: Frame) => f.type === "message" && f.msgId === msgId;

async function rowsFor(ids: string[]): Promise<Array<{ id: string; body: string }>> {
  return sql()`select id, body from messages where id in ${sql()(ids)}`;
}

async function waitForRows(ids: string[], deadlineMs = 5000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const rows = await rowsFor(ids);
    if (rows.length === ids.length || Date.now() > until) return rows;
    await Bun.sleep(20);
  }
}

describe("direct messages", () => {
  test("same instance: delivered live and acked with msgId and ts", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connect(A(), alice);
    const b = await connect(A(), bob);
    const ack = await a.sendMessage({ to: bob }, "hello bob", "c1");
    expect(ack).toMatchObject({ type: "ack", id: "c1" });
    expect(typeof ack.msgId).toBe("string");
    expect(typeof ack.ts).toBe("number");
    const m = await b.waitFor(messageFor(ack.msgId), "message");
    expect(m).toMatchObject({ type: "message", msgId: ack.msgId, id: "c1", from: alice, to: bob, body: "hello bob", ts: ack.ts });
    expect(typeof m.cursor).toBe("string");
    expect(a.messages()).toHaveLength(0);
  });

  test("cross instance, both ways", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connect(A(), alice);
    const b = await connect(B(), bob);
    const ack1 = await a.sendMessage({ to: bob }, "over there");
    expect(ack1.type).toBe("ack");
    expect(await b.waitFor(messageFor(ack1.msgId))).toMatchObject({ from: alice, to: bob, body: "over there" });
    const ack2 = await b.sendMessage({ to: alice }, "and back");
    expect(await a.waitFor(messageFor(ack2.msgId))).toMatchObject({ from: bob, to: alice, body: "and back" });
  });

  test("multi-device: every connection of the recipient and the sender's other connections get it", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a1 = await connect(A(), alice);
    const a2 = await connect(B(), alice);
    const b1 = await connect(A(), bob);
    const b2 = await connect(B(), bob);
    const ack = await a1.sendMessage({ to: bob }, "to all devices");
    await Promise.all([b1, b2, a2].map((c) => c.waitFor(messageFor(ack.msgId))));
    // The sending connection gets the ack instead of the message.
    await b1.sendMessage({ to: alice }, "sync point");
    await a1.waitFor((f) => f.type === "message" && f.body === "sync point");
    expect(a1.messages().filter((f) => f.msgId === ack.msgId)).toHaveLength(0);
  });

  test("a message to an offline user is acked, stored and waits for their sync", async () => {
    const [alice, carol] = [uniqueUser("alice"), uniqueUser("carol")];
    const a = await connect(A(), alice);
    const ack = await a.sendMessage({ to: carol }, "while you were away");
    expect(ack.type).toBe("ack");
    const c = await connect(B(), carol);
    const { messages, cursor } = await c.sync();
    expect(messages.map((m) => m.msgId)).toEqual([ack.msgId]);
    expect(messages[0]).toMatchObject({ from: alice, to: carol, body: "while you were away" });
    // Syncing again from the cursor returns nothing new.
    expect((await c.sync(cursor)).messages).toHaveLength(0);
  });

  test("idempotent resend from the same and from the other instance", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const b = await connect(A(), bob);
    const a1 = await connect(A(), alice);
    const first = await a1.sendMessage({ to: bob }, "once", "same-id");
    const again = await a1.sendMessage({ to: bob }, "once", "same-id");
    a1.close();
    const a2 = await connect(B(), alice);
    const elsewhere = await a2.sendMessage({ to: bob }, "once", "same-id");
    expect(again).toMatchObject({ type: "ack", msgId: first.msgId, ts: first.ts });
    expect(elsewhere).toMatchObject({ type: "ack", msgId: first.msgId, ts: first.ts });
    const marker = await a2.sendMessage({ to: bob }, "marker");
    await b.waitFor(messageFor(marker.msgId));
    expect(b.messages().filter((f) => f.msgId === first.msgId)).toHaveLength(1);
    const rows = await waitForRows([first.msgId]);
    expect(rows).toHaveLength(1);
  });

  test("every acked message is in PostgreSQL, once", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connect(A(), alice);
    const acks = await Promise.all(Array.from({ length: 200 }, (_, i) => a.sendMessage({ to: bob }, `n${i}`, `k${i}`)));
    expect(acks.every((f) => f.type === "ack")).toBe(true);
    const ids = acks.map((f) => f.msgId);
    const rows = await waitForRows(ids);
    expect(rows.length).toBe(200);
    expect(new Set(rows.map((r) => r.id)).size).toBe(200);
  });
});

describe("history", () => {
  test("pages newest first, each page oldest first, until before is null", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connect(A(), alice);
    const acks: Frame[] = [];
    for (let i = 0; i < 7; i++) acks.push(await a.sendMessage({ to: bob }, `h${i}`));
    await waitForRows(acks.map((f) => f.msgId));
    const token = await mintToken(bob, fx.cluster.jwtSecret);
    const get = async (q: string) => {
      const res = await fetch(`${B()}/api/messages?${q}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      return (await res.json()) as { messages: Frame[]; before: string | null };
    };
    const p1 = await get(`with=${alice}&limit=3`);
    expect(p1.messages.map((m) => m.body)).toEqual(["h4", "h5", "h6"]);
    expect(p1.before).not.toBeNull();
    const p2 = await get(`with=${alice}&limit=3&before=${p1.before}`);
    expect(p2.messages.map((m) => m.body)).toEqual(["h1", "h2", "h3"]);
    const p3 = await get(`with=${alice}&limit=3&before=${p2.before}`);
    expect(p3.messages.map((m) => m.body)).toEqual(["h0"]);
    expect(p3.before).toBeNull();
    expect(p3.messages[0]).toMatchObject({ type: "message", from: alice, to: bob, msgId: acks[0]!.msgId });
    const all = await get(`with=${alice}`);
    expect(all.messages).toHaveLength(7);
    expect(all.before).toBeNull();
  });

  test.each([
    ["no with or group", ""],
    ["both with and group", "with=a&group=g"],
    ["a bad user id", "with=bad%20user"],
    ["a bad cursor", "with=a&before=xyz"],
    ["a zero limit", "with=a&limit=0"],
    ["a non-numeric limit", "with=a&limit=ten"],
  ])("400 for %s", async (_, q) => {
    const token = await mintToken(uniqueUser(), fx.cluster.jwtSecret);
    const res = await fetch(`${A()}/api/messages?${q}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error.length).toBeGreaterThan(0);
  });
});

describe("closed doors", () => {
  test("/ws without, with a bad, and with an expired token: 401 and no upgrade", async () => {
    const user = uniqueUser();
    const expired = await mintToken(user, fx.cluster.jwtSecret, { exp: Math.floor(Date.now() / 1000) - 10 });
    const wrongKey = await mintToken(user, "another-secret-another-secret");
    const badSub = await mintToken("bad user!", fx.cluster.jwtSecret);
    for (const q of ["", "?token=", "?token=garbage", `?token=${expired}`, `?token=${wrongKey}`, `?token=${badSub}`]) {
      const res = await fetch(`${A()}/ws${q}`, { headers: { upgrade: "websocket", connection: "Upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" } });
      expect(res.status).toBe(401);
    }
  });

  test("/api without a token: 401", async () => {
    for (const path of ["/api/messages?with=a", "/api/groups", "/api/presence?users=a"]) {
      expect((await fetch(`${A()}${path}`)).status).toBe(401);
      expect((await fetch(`${A()}${path}`, { headers: { authorization: "Bearer nope" } })).status).toBe(401);
    }
  });

  test("/internal without the secret: 401, and a user token never opens it", async () => {
    const token = await mintToken(uniqueUser(), fx.cluster.jwtSecret);
    const body = JSON.stringify({ deliveries: [] });
    for (const auth of [undefined, "Bearer wrong", `Bearer ${token}`]) {
      const res = await fetch(`${A()}/internal/deliver`, { method: "POST", body, headers: auth ? { authorization: auth } : {} });
      expect(res.status).toBe(401);
    }
    const ok = await fetch(`${A()}/internal/deliver`, { method: "POST", body, headers: { authorization: `Bearer ${fx.cluster.internalSecret}`, "content-type": "application/json" } });
    expect(ok.status).toBe(200);
    for (const path of ["/v1/lookup"]) {
      expect((await fetch(`${fx.cluster.discoverUrl}${path}`, { method: "POST", body: '{"users":[]}', headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    }
  });

  test("/internal/deliver refuses malformed bodies with 400", async () => {
    const m = { msgId: "m", id: "i", from: "a", to: "b", body: "x", ts: 1 };
    const bodies = [
      "not json",
      "[]",
      JSON.stringify({}),
      JSON.stringify({ deliveries: "x" }),
      JSON.stringify({ deliveries: [{ message: m }] }),
      JSON.stringify({ deliveries: [{ message: m, users: [1] }] }),
      JSON.stringify({ deliveries: [{ message: { ...m, ts: "1" }, users: ["b"] }] }),
      JSON.stringify({ deliveries: [{ message: { ...m, group: "g" }, users: ["b"] }] }),
      JSON.stringify({ deliveries: [{ message: null, users: ["b"] }] }),
    ];
    for (const body of bodies) {
      const res = await fetch(`${A()}/internal/deliver`, { method: "POST", body, headers: { authorization: `Bearer ${fx.cluster.internalSecret}`, "content-type": "application/json" } });
      expect(res.status).toBe(400);
    }
  });

  test("/internal/link: refused without the secret; a malformed frame is answered with an error, a user not here with missing; the link stays open", async () => {
    const linkUrl = `${A().replace(/^http/, "ws")}/internal/link`;
    const open = (auth?: string) => {
      const ws = new (WebSocket as unknown as new (u: string, o: { headers: Record<string, string> }) => WebSocket)(linkUrl, { headers: auth ? { authorization: auth } : {} });
      const replies: unknown[] = [];
      ws.addEventListener("message", (e) => replies.push(JSON.parse(String(e.data))));
      const opened = new Promise<boolean>((resolve) => {
        ws.addEventListener("open", () => resolve(true));
        ws.addEventListener("close", () => resolve(false));
      });
      return { ws, replies, opened };
    };
    const token = await mintToken(uniqueUser(), fx.cluster.jwtSecret);
    for (const auth of [undefined, "Bearer wrong", `Bearer ${token}`]) expect(await open(auth).opened).toBe(false);
    const link = open(`Bearer ${fx.cluster.internalSecret}`);
    expect(await link.opened).toBe(true);
    const m = { msgId: "m", id: "i", from: "a", to: "b", body: "x", ts: 1 };
    link.ws.send("not json");
    link.ws.send(JSON.stringify({ deliveries: [{ message: { ...m, ts: "1" }, positions: { b: "1.1" } }] }));
    link.ws.send(JSON.stringify({ deliveries: [{ message: m, positions: { [uniqueUser("nobody")]: "1.1" } }] }));
    const end = Date.now() + 5000;
    while (link.replies.length < 3 && Date.now() < end) await Bun.sleep(10);
    expect(link.replies).toEqual([{ error: expect.stringContaining("expected {deliveries") }, { error: expect.stringContaining("expected {deliveries") }, { missing: 1 }]);
    expect(link.ws.readyState).toBe(WebSocket.OPEN);
    link.ws.close();
  });

  test("messages between instances travel over the links (FORWARD_OVER's default), not HTTP", async () => {
    const received = async (url: string, over: string) => Number(new RegExp(`ws_forwards_received_total\\{over="${over}"[^}]*\\} (\\d+)`).exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0);
    const before = { link: await received(B(), "link"), http: await received(B(), "http") };
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const a = await connect(A(), alice);
    const b = await connect(B(), bob);
    for (let i = 0; i < 5; i++) {
      const ack = await a.sendMessage({ to: bob }, `over the link ${i}`, `l${i}`);
      await b.waitFor(messageFor(ack.msgId), "message");
    }
    expect((await received(B(), "link")) - before.link).toBeGreaterThanOrEqual(5);
    expect((await received(B(), "http")) - before.http).toBe(0);
    a.close();
    b.close();
  });

  test("health and metrics answer on every service", async () => {
    for (const url of [...fx.cluster.wsUrls, fx.cluster.discoverUrl, fx.cluster.persistUrl]) {
      expect((await fetch(`${url}/health`)).status).toBe(200);
      const m = await fetch(`${url}/metrics`);
      expect(m.status).toBe(200);
      expect(await m.text()).toContain("# TYPE");
    }
  });
});

describe("malformed frames", () => {
  const cases: Array<[string, string, string, string | undefined]> = [
    ["not JSON", "{oops", "bad_request", undefined],
    ["a JSON array", "[]", "bad_request", undefined],
    ["an unknown type", '{"type":"shout","id":"u1"}', "bad_request", "u1"],
    ["send without body", '{"type":"send","id":"m1","to":"bob"}', "bad_request", "m1"],
    ["send with an empty body", '{"type":"send","id":"m2","to":"bob","body":""}', "bad_request", "m2"],
    ["send without a recipient", '{"type":"send","id":"m3","body":"x"}', "bad_request", "m3"],
    ["send to an invalid user id", '{"type":"send","id":"m4","to":"no spaces","body":"x"}', "bad_request", "m4"],
    ["send with a too long id", JSON.stringify({ type: "send", id: "x".repeat(65), to: "bob", body: "x" }), "bad_request", undefined],
    ["a body over 4096 characters", JSON.stringify({ type: "send", id: "m5", to: "bob", body: "y".repeat(4097) }), "too_large", "m5"],
    ["sync with a bad cursor", '{"type":"sync","after":"later"}', "bad_request", undefined],
  ];
  test.each(cases)("%s gets an error frame and the connection stays open", async (_, text, code, id) => {
    const c = await connect(A(), uniqueUser());
    const start = c.frames.length;
    c.send(text);
    const err = await c.waitFor((f) => c.frames.indexOf(f) >= start && f.type === "error", "error");
    expect(err.code).toBe(code);
    expect(err.id).toBe(id);
    expect(typeof err.message).toBe("string");
    c.send({ type: "ping" });
    await c.next((f) => f.type === "pong", "pong after error");
  });

  test("a binary frame gets bad_request", async () => {
    const c = await connect(A(), uniqueUser());
    c.ws.send(new Uint8Array([1, 2, 3]));
    expect((await c.next((f) => f.type === "error")).code).toBe("bad_request");
  });

  test("a frame over 64 KiB closes the connection with 1009", async () => {
    const c = await connect(A(), uniqueUser());
    c.send("x".repeat(64 * 1024 + 1));
    expect((await c.closed).code).toBe(1009);
  });

  test("a group send from a non-member is forbidden", async () => {
    const c = await connect(A(), uniqueUser());
    const r = await c.sendMessage({ group: "g_doesnotexist" }, "hi", "gx");
    expect(r).toMatchObject({ type: "error", id: "gx", code: "forbidden" });
  });
});
