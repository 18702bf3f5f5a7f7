import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mintToken, uniqueUser, type Frame } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";
import { startPushService, type TestPushService, type TestSubscription } from "../../test/push-service.ts";

// Web Push on real processes (discover, two ws instances, persist over Redis, RabbitMQ and
// PostgreSQL), to a local push service that verifies each push's VAPID JWT and decrypts its payload
// with the subscription's keys (test/push-service.ts). PUSH_ALLOW_HTTP admits its http: endpoints;
// the collapse window is the default (PUSH_DELAY_MS 2000).

const fx = useCluster({ ws: 2, env: { PUSH_ALLOW_HTTP: "true" } });
const A = fx.A;
const B = fx.B;
let svc: TestPushService;
beforeAll(async () => {
  svc = await startPushService(fx.cluster.vapid.publicKey);
});
afterAll(() => svc?.stop());

async function api(user: string | null, method: string, path: string, body?: unknown, base = A()): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = user === null ? {} : { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function subscribe(user: string, base = A()): Promise<TestSubscription> {
  const sub = svc.subscribe();
  const r = await api(user, "POST", "/api/push/subscriptions", sub.json, base);
  expect(r).toEqual({ status: 201, body: { endpoint: sub.json.endpoint } });
  return sub;
}

const endpointsOf = async (user: string) =>
  (await fx.sql()<Array<{ endpoint: string }>>`select endpoint from push_subscriptions where user_id = ${user}`).map((r) => r.endpoint).sort();

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, "m").exec(text);
  if (!m) throw new Error(`${name} is not in ${base}/metrics`);
  return Number(m[1]);
}

/** Sends all `bodies` at once (one connection, in order) and returns their acks. */
async function sendAll(c: Awaited<ReturnType<typeof fx.connect>>, to: { to: string } | { group: string }, bodies: string[]): Promise<Frame[]> {
  const acks = await Promise.all(bodies.map((b) => c.sendMessage(to, b)));
  for (const a of acks) expect(a.type).toBe("ack");
  return acks;
}

describe("pushes to offline users", () => {
  test("each device of an offline user gets one push for several messages (the newest, counted); a later message opens a new one", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const phone = await subscribe(bob, A());
    const laptop = await subscribe(bob, B());
    const a = await fx.connect(A(), alice);
    const acks = await sendAll(a, { to: bob }, ["one", "two", "three"]);
    await svc.until(() => phone.received.length > 0 && laptop.received.length > 0, "a push at both devices");
    const expected = { type: "message", conv: `d:${alice}`, from: alice, to: bob, count: 3, body: "three", msgId: acks[2]!.msgId, ts: acks[2]!.ts, url: `/client/#${encodeURIComponent(`d:${alice}`)}` };
    for (const dev of [phone, laptop]) {
      expect(dev.received).toHaveLength(1);
      expect(dev.received[0]!.payload).toEqual(expected);
      expect(dev.received[0]!.urgency).toBe("high");
      expect(dev.received[0]!.ttl).toBe("86400");
    }
    const topic = phone.received[0]!.topic;
    expect(topic).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
    expect(laptop.received[0]!.topic).toBe(topic);

    // The window closed with that push: the next message is pushed on its own, same topic.
    const [four] = await sendAll(a, { to: bob }, ["four"]);
    await svc.until(() => phone.received.length > 1 && laptop.received.length > 1, "a second push at both devices");
    for (const dev of [phone, laptop]) {
      expect(dev.received.map((r) => [r.payload.count, r.payload.body])).toEqual([
        [3, "three"],
        [1, "four"],
      ]);
      expect(dev.received[1]!.payload.msgId).toBe(four!.msgId);
      expect(dev.received[1]!.topic).toBe(topic);
    }
    expect(svc.rejected).toEqual([]);
  }, 30_000);

  test("users connected on either instance get no push; an offline group member gets one naming the group", async () => {
    const [alice, carol, erin, dave] = [uniqueUser("alice"), uniqueUser("carol"), uniqueUser("erin"), uniqueUser("dave")];
    const carolSub = await subscribe(carol);
    const erinSub = await subscribe(erin);
    const daveSub = await subscribe(dave);
    const g = await api(alice, "POST", "/api/groups", { name: "Weekend plans", members: [carol, dave] });
    expect(g.status).toBe(201);
    const a = await fx.connect(A(), alice);
    const c = await fx.connect(B(), carol); // another instance than the sender's
    const e = await fx.connect(A(), erin); // the sender's instance
    const windowsBefore = await metric(A(), "ws_push_windows_total");

    const direct = [...(await sendAll(a, { to: carol }, ["hi carol", "still there?"])), ...(await sendAll(a, { to: erin }, ["hi erin"]))];
    const [toGroup] = await sendAll(a, { group: g.body.groupId }, ["saturday?"]);
    for (const ack of direct.slice(0, 2).concat(toGroup!)) await c.waitFor((f) => f.type === "message" && f.msgId === ack.msgId, "live message at carol");
    await e.waitFor((f) => f.type === "message" && f.msgId === direct[2]!.msgId, "live message at erin");

    await svc.until(() => daveSub.received.length > 0, "dave's push");
    expect(daveSub.received.map((r) => r.payload)).toEqual([
      { type: "message", conv: `g:${g.body.groupId}`, from: alice, group: g.body.groupId, groupName: "Weekend plans", count: 1, body: "saturday?", msgId: toGroup!.msgId, ts: toGroup!.ts, url: `/client/#${encodeURIComponent(`g:${g.body.groupId}`)}` },
    ]);
    // Routed in send order, so a window for carol or erin would have opened before dave's.
    expect((await metric(A(), "ws_push_windows_total")) - windowsBefore).toBe(1);
    expect(carolSub.received).toEqual([]);
    expect(erinSub.received).toEqual([]);
  }, 30_000);

  test("a subscription the push service answers 410 is deleted; the user's other device keeps getting pushes", async () => {
    const [alice, frank] = [uniqueUser("alice"), uniqueUser("frank")];
    const gone = await subscribe(frank);
    gone.status = 410;
    const kept = await subscribe(frank, B());
    const a = await fx.connect(A(), alice);
    await sendAll(a, { to: frank }, ["first"]);
    await svc.until(() => gone.received.length > 0 && kept.received.length > 0, "the first push at both");
    const until = Date.now() + 10_000;
    while ((await endpointsOf(frank)).length > 1 && Date.now() < until) await Bun.sleep(20);
    expect(await endpointsOf(frank)).toEqual([kept.json.endpoint]);

    await sendAll(a, { to: frank }, ["second"]);
    await svc.until(() => kept.received.length > 1, "the second push");
    expect(kept.received.map((r) => r.payload.body)).toEqual(["first", "second"]);
    expect(gone.received.map((r) => r.payload.body)).toEqual(["first"]);
  }, 30_000);
});

describe("subscription routes", () => {
  test("GET /api/push/key: the VAPID public key on every instance; 401 without a token", async () => {
    for (const base of [A(), B()]) expect(await api(uniqueUser(), "GET", "/api/push/key", undefined, base)).toEqual({ status: 200, body: { publicKey: fx.cluster.vapid.publicKey } });
    expect((await api(null, "GET", "/api/push/key")).status).toBe(401);
    expect((await api(null, "POST", "/api/push/subscriptions", svc.subscribe().json)).status).toBe(401);
  });

  test("malformed subscriptions are 400 naming the problem and store nothing", async () => {
    const user = uniqueUser("mal");
    const good = svc.subscribe().json;
    const notOnCurve = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 0xff)]).toString("base64url");
    // A key written in standard base64: it differs from its base64url form only where it has a
    // '+' or '/' (about one key in 16 has neither, and would be the same valid text).
    let standard = "";
    while (!/[+/]/.test(standard)) standard = Buffer.from(svc.subscribe().json.keys.p256dh, "base64url").toString("base64").replace(/=+$/, "");
    const bad: Array<[string, unknown]> = [
      ["not JSON", "{endpoint:"],
      ["an array", [good]],
      ["empty", {}],
      ["no keys", { endpoint: good.endpoint }],
      ["no auth", { endpoint: good.endpoint, keys: { p256dh: good.keys.p256dh } }],
      ["endpoint a number", { ...good, endpoint: 42 }],
      ["endpoint not a URL", { ...good, endpoint: "push service" }],
      ["endpoint ftp:", { ...good, endpoint: "ftp://push.example.com/x" }],
      ["endpoint with credentials", { ...good, endpoint: "https://user:pw@push.example.com/x" }],
      ["endpoint too long", { ...good, endpoint: "https://push.example.com/" + "a".repeat(2048) }],
      ["p256dh short", { ...good, keys: { ...good.keys, p256dh: good.keys.p256dh.slice(0, 40) } }],
      ["p256dh not on the curve", { ...good, keys: { ...good.keys, p256dh: notOnCurve } }],
      ["p256dh padded", { ...good, keys: { ...good.keys, p256dh: good.keys.p256dh + "=" } }],
      ["p256dh standard base64", { ...good, keys: { ...good.keys, p256dh: standard } }],
      ["auth 15 bytes", { ...good, keys: { ...good.keys, auth: Buffer.alloc(15, 1).toString("base64url") } }],
      ["expirationTime a string", { ...good, expirationTime: "soon" }],
    ];
    for (const [what, body] of bad) {
      const r = await api(user, "POST", "/api/push/subscriptions", body);
      expect({ what, status: r.status, error: typeof r.body?.error }).toEqual({ what, status: 400, error: "string" });
    }
    expect(await endpointsOf(user)).toEqual([]);
    const r = await api(user, "POST", "/api/push/subscriptions", { ...good, keys: { ...good.keys, auth: "AAAA" } });
    expect(r.body.error).toContain("keys.auth");
  });

  test("a browser's endpoint belongs to whoever subscribed last; DELETE removes only one's own (204, else 404)", async () => {
    const [ann, ben] = [uniqueUser("ann"), uniqueUser("ben")];
    const sub = await subscribe(ann);
    expect(await endpointsOf(ann)).toEqual([sub.json.endpoint]);
    // The same browser, now signed in as ben.
    expect((await api(ben, "POST", "/api/push/subscriptions", sub.json, B())).status).toBe(201);
    expect(await endpointsOf(ann)).toEqual([]);
    expect(await endpointsOf(ben)).toEqual([sub.json.endpoint]);
    expect((await api(ann, "DELETE", "/api/push/subscriptions", { endpoint: sub.json.endpoint })).status).toBe(404);
    for (const body of [{}, { endpoint: "" }, "nope"]) expect((await api(ben, "DELETE", "/api/push/subscriptions", body)).status).toBe(400);
    expect(await api(ben, "DELETE", "/api/push/subscriptions", { endpoint: sub.json.endpoint })).toEqual({ status: 204, body: null });
    expect(await endpointsOf(ben)).toEqual([]);
    expect((await api(ben, "DELETE", "/api/push/subscriptions", { endpoint: sub.json.endpoint })).status).toBe(404);
  });

  test("a subscription ends with its sign-in: logout drops that session's, a password change all but the caller's, logout-all every one", async () => {
    const name = uniqueUser("sam");
    const password = "correct horse battery";
    const post = async (path: string, body: unknown, token?: string) => {
      const res = await fetch(`${A()}${path}`, { method: "POST", headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
      return { status: res.status, body: res.status === 204 ? null : ((await res.json()) as any) };
    };
    const reg = await post("/api/register", { username: name, password });
    expect(reg.status).toBe(201);
    const login = async () => (await post("/api/login", { username: name, password })).body.token as string;
    const [t1, t2, t3] = [reg.body.token as string, await login(), await login()];
    const subscribeWith = async (token: string) => {
      const s = svc.subscribe();
      expect((await post("/api/push/subscriptions", s.json, token)).status).toBe(201);
      return s.json.endpoint;
    };
    const [e1, e2, e3, e4] = [await subscribeWith(t1), await subscribeWith(t2), await subscribeWith(t3), await subscribeWith(t3)];
    const sorted = (xs: string[]) => xs.slice().sort();

    expect((await post("/api/logout", undefined, t1)).status).toBe(204);
    expect(await endpointsOf(name)).toEqual(sorted([e2, e3, e4]));

    const changed = await post("/api/password", { current: password, next: "battery staple horse" }, t3);
    expect(changed.status).toBe(200);
    expect(await endpointsOf(name)).toEqual(sorted([e3, e4]));
    // They belong to the session that replaced the caller's: its logout ends them.
    expect((await post("/api/logout", undefined, changed.body.token)).status).toBe(204);
    expect(await endpointsOf(name)).toEqual([]);

    const t5 = (await post("/api/login", { username: name, password: "battery staple horse" })).body.token as string;
    const t6 = (await post("/api/login", { username: name, password: "battery staple horse" })).body.token as string;
    await subscribeWith(t5);
    await subscribeWith(t6);
    expect(await endpointsOf(name)).toHaveLength(2);
    expect((await post("/api/logout-all", undefined, t6)).status).toBe(204);
    expect(await endpointsOf(name)).toEqual([]);
  });
});
