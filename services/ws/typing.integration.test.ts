import { describe, expect, test } from "bun:test";
import { uniqueUser, type Frame, type TestClient } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";
import { TYPING_TTL_MS } from "./typing.ts";

// Typing indicators on real processes: two gateways, discover, persist, Redis, RabbitMQ, PostgreSQL.

const fx = useCluster({ ws: 2 });
const { A, B, connect } = fx;

const typingFrom = (user: string) => (f: Frame) => f.type === "typing" && f.from === user;
const typings = (c: TestClient) => c.frames.filter((f) => f.type === "typing");

/** Returns once a message from `sender` (sent after its earlier frames) reached `c`. */
async function flushTo(c: TestClient, sender: TestClient) {
  const ack = await sender.sendMessage({ to: c.user === sender.user ? sender.user : c.user }, "marker");
  expect(ack.type).toBe("ack");
  await c.waitFor((f) => f.type === "message" && f.msgId === ack.msgId, "marker");
}

describe("typing indicators", () => {
  test("direct: every device of the other party on either instance gets it, with ttlMs; the typist's own devices do not; nothing is stored", async () => {
    const [ann, bob] = [uniqueUser("ann"), uniqueUser("bob")];
    const ann1 = await connect(A(), ann);
    const ann2 = await connect(B(), ann);
    const bob1 = await connect(A(), bob);
    const bob2 = await connect(B(), bob);
    const before = await bob1.sync();

    ann1.send({ type: "typing", to: bob });
    const want = { type: "typing", from: ann, to: bob, ttlMs: TYPING_TTL_MS };
    expect(await bob1.waitFor(typingFrom(ann), "typing on A")).toEqual(want);
    expect(await bob2.waitFor(typingFrom(ann), "typing on B")).toEqual(want);

    // ann's other device gets her later message, but not her typing
    await flushTo(ann2, ann1);
    expect(typings(ann2)).toEqual([]);
    expect(typings(ann1)).toEqual([]);
    // never stored: bob's stream grew by the marker only, and sync replays no typing
    await flushTo(bob2, ann1);
    const after = await bob1.sync(before.cursor);
    expect(after.messages.map((m) => m.body)).toEqual(["marker"]);
  });

  test("group: the other members on both instances get it; a non-member is answered forbidden", async () => {
    const [ann, bob, cat, eve] = [uniqueUser("ann"), uniqueUser("bob"), uniqueUser("cat"), uniqueUser("eve")];
    const g = await fx.createGroup(ann, [bob, cat]);
    const annA = await connect(A(), ann);
    const annB = await connect(B(), ann);
    const bobB = await connect(B(), bob);
    const catA = await connect(A(), cat);
    const eveB = await connect(B(), eve);

    annA.send({ type: "typing", group: g });
    const want = { type: "typing", from: ann, group: g, ttlMs: TYPING_TTL_MS };
    expect(await bobB.waitFor(typingFrom(ann), "bob")).toEqual(want);
    expect(await catA.waitFor(typingFrom(ann), "cat")).toEqual(want);

    eveB.send({ type: "typing", group: g });
    const err = await eveB.waitFor((f) => f.type === "error", "forbidden");
    expect(err).toMatchObject({ code: "forbidden" });
    expect(err.id).toBeUndefined();
    // a group message from ann reaches her other device; her typing and eve's did not
    const ack = await annA.sendMessage({ group: g }, "after typing");
    for (const c of [annB, bobB, catA]) await c.waitFor((f) => f.type === "message" && f.msgId === ack.msgId, "group message");
    expect(typings(annB)).toEqual([]);
    expect(typings(bobB).map((f) => f.from)).toEqual([ann]);
    expect(typings(catA).map((f) => f.from)).toEqual([ann]);
  });

  test("rate limit: a second typing for the same conversation within 2 s is dropped without an answer; another conversation is not", async () => {
    const [ann, bob] = [uniqueUser("ann"), uniqueUser("bob")];
    const ann1 = await connect(A(), ann);
    const bob1 = await connect(B(), bob);
    // The group after both are connected: creating it routes its event to bob, and had bob been
    // offline then, A would hold that location until the directory's change feed told it otherwise
    // (a typing frame meanwhile is dropped: best effort, and a race this test is not about).
    const g = await fx.createGroup(ann, [bob]);
    ann1.send({ type: "typing", to: bob });
    ann1.send({ type: "typing", to: bob });
    ann1.send({ type: "typing", to: bob });
    ann1.send({ type: "typing", group: g });
    // the group's frame was handled after the direct ones (it waits for a membership lookup besides)
    await bob1.waitFor((f) => f.type === "typing" && f.group === g, "group typing");
    await flushTo(bob1, ann1);
    expect(typings(bob1).map((f) => f.to ?? f.group)).toEqual([bob, g]);
    ann1.send({ type: "ping" });
    await ann1.next((f) => f.type === "pong");
    expect(ann1.frames.filter((f) => f.type === "error")).toEqual([]);
  });

  test("malformed typing frames get bad_request and the connection stays open", async () => {
    const ann = await connect(A(), uniqueUser("ann"));
    const bad = [
      { type: "typing" },
      { type: "typing", to: "bob", group: "g" },
      { type: "typing", to: "not a user" },
      { type: "typing", group: "" },
      { type: "typing", to: "bob", extra: 1 },
      { type: "typing", to: 42 },
    ];
    for (const f of bad) {
      const start = ann.frames.length;
      ann.send(f);
      const e = await ann.waitFor((x) => ann.frames.indexOf(x) >= start && x.type === "error", JSON.stringify(f));
      expect(e.code).toBe("bad_request");
      expect(e.message.length).toBeGreaterThan(0);
    }
    ann.send({ type: "ping" });
    await ann.next((f) => f.type === "pong");
  });

  test("/internal/deliver: ephemeral frames reach the named users' connections; malformed ones are refused with 400", async () => {
    const bob = uniqueUser("bob");
    const bobA = await connect(A(), bob);
    const post = (body: unknown) =>
      fetch(`${A()}/internal/deliver`, {
        method: "POST",
        headers: { authorization: `Bearer ${fx.cluster.internalSecret}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const frame = { type: "typing", from: "ann", to: bob, ttlMs: 5000 };
    for (const ephemeral of [{}, [{ users: [bob] }], [{ users: ["no way"], frame }], [{ users: [bob], frame: { ...frame, type: "message" } }], [{ users: [bob], frame: { ...frame, ttlMs: -1 } }]]) {
      const res = await post({ deliveries: [], ephemeral });
      expect(res.status).toBe(400);
    }
    const ok = await post({ deliveries: [], ephemeral: [{ users: [bob], frame }] });
    expect(ok.status).toBe(200);
    expect(await bobA.waitFor((f) => f.type === "typing", "forwarded typing")).toEqual(frame);
    expect(typings(bobA)).toHaveLength(1);
  });
});
