import { describe, expect, test } from "bun:test";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createMemoryQueue } from "../../shared/queue/queue-memory.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import { createMemoryAllocator } from "../../shared/stream/allocator-memory.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import { formatPosition, type Position } from "../../shared/stream/position.ts";
import type { Conn } from "./connections.ts";
import { createPipeline, deriveMsgId, SendError, type Accepted } from "./pipeline.ts";
import type { Router } from "./router.ts";

type Routed = { m: ChatMessage; positions: Record<string, Position> };

/**
 * A pipeline on the embedded queue and a memory allocator (or the given ones); membership answers
 * after `membersDelayMs`, or as `groupMembers` says.
 */
function setup(
  groups: Record<string, string[]>,
  o: { membersDelayMs?: number; queue?: MessageQueue; allocator?: StreamAllocator; groupMembers?: (ids: string[]) => Promise<Map<string, string[]>>; acceptEvent?: (e: ChatMessage) => Promise<string[]>; callsInFlight?: number } = {},
) {
  const queue = o.queue ?? createMemoryQueue();
  const allocator = o.allocator ?? createMemoryAllocator();
  const routed: Routed[] = [];
  const router = { locate: async () => ({}), route: async (m: ChatMessage, positions: Record<string, Position>) => void routed.push({ m, positions }) } as unknown as Router;
  const pipeline = createPipeline({
    queue,
    allocator,
    router,
    groupMembers:
      o.groupMembers ??
      (async (ids) => {
        await Bun.sleep(o.membersDelayMs ?? 20);
        return new Map(ids.map((g) => [g, groups[g] ?? []]));
      }),
    acceptEvent: o.acceptEvent ?? (async () => []),
    log: silentLogger,
    metrics: createMetrics("test"),
    callsInFlight: o.callsInFlight,
  });
  return { pipeline, routed, allocator, queue };
}

const msg = (from: string, id: string, target: { to: string } | { group: string }, body = "hi"): ChatMessage => ({
  msgId: deriveMsgId(from, id, target),
  id,
  from,
  ...target,
  body,
  ts: Date.now(),
});

const outcome = (p: Promise<Accepted>) => p.then((a) => `ack ${a.ts} ${a.cursor}`, (e) => (e instanceof SendError ? `error:${e.code}` : `throw ${e}`));

/** A connection as the pipeline sees it: only its per-connection order. */
const fakeConn = () => ({ data: { order: Promise.resolve() } }) as unknown as Conn;

/** The sender's cursor for its `n`th allocated message. */
const cursorAt = async (allocator: StreamAllocator, user: string, n: number) => formatPosition({ epoch: (await allocator.tops([user]))[user]!.epoch, pos: n });

/** Lets setImmediate-scheduled work (tick batchers) run: sends after it go out in another batch. */
const nextTick = () => new Promise<void>((r) => setImmediate(r));

describe("the send pipeline", () => {
  test("a resend while the first attempt runs gets the same ack (first ts, same cursor), and the message is routed once", async () => {
    const { pipeline, routed, allocator } = setup({ g: ["alice", "bob"] });
    const first = msg("alice", "c1", { group: "g" });
    const [a, b] = await Promise.all([outcome(pipeline.send(first)), outcome(pipeline.send({ ...first, ts: first.ts + 5 }))]);
    expect(a).toBe(`ack ${first.ts} ${await cursorAt(allocator, "alice", 1)}`);
    expect(b).toBe(a);
    expect(routed.map((r) => r.m.msgId)).toEqual([first.msgId]);
    expect(Object.keys(routed[0]!.positions).sort()).toEqual(["alice", "bob"]);
    // The same client id for another target is another message: here one to a group alice is not in.
    expect(await outcome(pipeline.send(msg("alice", "c1", { group: "other" })))).toBe("error:forbidden");
    expect(await outcome(pipeline.send({ ...first, ts: first.ts + 10 }))).toBe(a);
    expect(routed.length).toBe(1);
    expect((await allocator.tops(["alice"])).alice!.pos).toBe(1);
  });

  test("a resend through another gateway (same allocator) is answered with the first ts and cursor, and not routed again", async () => {
    const allocator = createMemoryAllocator();
    const one = setup({}, { allocator });
    const two = setup({}, { allocator });
    const first = msg("alice", "c9", { to: "bob" });
    const a = await outcome(one.pipeline.send(first));
    expect(a).toBe(`ack ${first.ts} ${await cursorAt(allocator, "alice", 1)}`);
    const b = await outcome(two.pipeline.send({ ...first, ts: first.ts + 1000 }));
    expect(b).toBe(a);
    expect(one.routed.map((r) => r.m.msgId)).toEqual([first.msgId]);
    expect(two.routed).toEqual([]);
    const tops = await allocator.tops(["alice", "bob"]);
    expect([tops.alice!.pos, tops.bob!.pos]).toEqual([1, 1]);
  });

  test("a send under the id of a refused attempt still running is answered on its own", async () => {
    const { pipeline, routed, allocator } = setup({ g: ["bob"] });
    const refused = msg("alice", "c2", { group: "g" });
    const valid = msg("alice", "c2", { to: "bob" }, "second");
    valid.ts = refused.ts + 7;
    const [a, b] = await Promise.all([outcome(pipeline.send(refused)), outcome(pipeline.send(valid))]);
    expect(a).toBe("error:forbidden");
    expect(b).toBe(`ack ${valid.ts} ${await cursorAt(allocator, "alice", 1)}`);
    expect(routed.map((r) => r.m.body)).toEqual(["second"]);
  });

  test("two refused attempts under one id are each refused", async () => {
    const { pipeline, routed, allocator } = setup({ g: ["bob"] });
    const refused = msg("alice", "c3", { group: "g" });
    expect(await Promise.all([outcome(pipeline.send(refused)), outcome(pipeline.send(refused))])).toEqual(["error:forbidden", "error:forbidden"]);
    expect(routed).toEqual([]);
    expect((await allocator.tops(["alice"])).alice!.pos).toBe(0); // nothing allocated
  });

  test("sends from one connection are allocated in send order even when their publishes confirm in reverse", async () => {
    // A queue whose publish calls confirm last first, once three are pending.
    const pending: Array<() => void> = [];
    const published: string[][] = [];
    const reversing: MessageQueue = {
      publish: (ms) => {
        published.push(ms.map((m) => m.body));
        return new Promise<void>((resolve) => {
          pending.push(resolve);
          if (pending.length === 3)
            void (async () => {
              for (const r of pending.splice(0).reverse()) {
                r();
                await Bun.sleep(15);
              }
            })();
        });
      },
      consume: async () => ({ stop: async () => {} }),
      ready: () => true,
      close: async () => {},
    };
    // three publish calls in flight (a gateway keeps one: the order must not depend on that)
    const { pipeline, routed, allocator } = setup({}, { queue: reversing, callsInFlight: 3 });
    const ws = fakeConn();
    const acks: Array<Promise<string>> = [];
    for (const [i, to] of ["bob", "carol", "bob"].entries()) {
      acks.push(outcome(pipeline.send(msg("alice", `o${i}`, { to }, `s${i}`), ws)));
      await nextTick(); // each send in its own publish call
    }
    const got = await Promise.all(acks);
    expect(published).toEqual([["s0"], ["s1"], ["s2"]]);
    const epoch = (await allocator.tops(["alice"])).alice!.epoch;
    expect(got.map((a) => a.split(" ")[2])).toEqual([1, 2, 3].map((pos) => formatPosition({ epoch, pos })));
    expect(routed.map((r) => `${r.m.body}@${r.positions.alice!.pos}`)).toEqual(["s0@1", "s1@2", "s2@3"]);
    expect(routed.map((r) => r.positions.bob?.pos)).toEqual([1, undefined, 2]);
  });

  test("while a publish or an allocation call is out, later sends wait and go in the next call together", async () => {
    /** Sends one message from alice, then one from each of five others in turns of their own. */
    const burst = async (pipeline: ReturnType<typeof setup>["pipeline"]) => {
      const acks = [outcome(pipeline.send(msg("alice", "c0", { to: "bob" })))];
      for (const from of ["u1", "u2", "u3", "u4", "u5"]) {
        await nextTick();
        acks.push(outcome(pipeline.send(msg(from, "c0", { to: "bob" }))));
      }
      await nextTick();
      return acks;
    };
    /** `f`, with its first call held until release(); the number of items of every call. */
    const holdingFirst = <T, R>(f: (items: T[]) => Promise<R>) => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const sizes: number[] = [];
      const call = async (items: T[]) => {
        sizes.push(items.length);
        if (sizes.length === 1) await gate;
        return f(items);
      };
      return { call, sizes, release };
    };

    // the broker has not confirmed the first publish yet
    const memory = createMemoryQueue();
    const publish = holdingFirst((ms: ChatMessage[]) => memory.publish(ms));
    const first = setup({}, { queue: { ...memory, publish: publish.call } });
    const acks = await burst(first.pipeline);
    expect(publish.sizes).toEqual([1]);
    publish.release();
    expect((await Promise.all(acks)).every((a) => a.startsWith("ack "))).toBe(true);
    expect(publish.sizes).toEqual([1, 5]);

    // Redis has not answered the first allocation yet
    const memoryAllocator = createMemoryAllocator();
    const allocate = holdingFirst((reqs: Parameters<StreamAllocator["allocate"]>[0]) => memoryAllocator.allocate(reqs));
    const allocator: StreamAllocator = { ...memoryAllocator, allocate: allocate.call };
    const second = setup({}, { allocator });
    const acks2 = await burst(second.pipeline);
    expect(allocate.sizes).toEqual([1]);
    allocate.release();
    expect((await Promise.all(acks2)).every((x) => x.startsWith("ack "))).toBe(true);
    expect(allocate.sizes).toEqual([1, 5]);
  });

  test("group and direct sends from one connection keep their order when membership lookups answer out of order", async () => {
    // The first lookup answers last: slow for g1, fast for g2.
    let calls = 0;
    const lookups: string[][] = [];
    const groupMembers = async (ids: string[]) => {
      lookups.push(ids);
      await Bun.sleep(calls++ === 0 ? 80 : 1);
      return new Map(ids.map((g) => [g, ["alice", g === "g1" ? "bob" : "carol"]]));
    };
    const { pipeline, routed, allocator } = setup({}, { groupMembers });
    const ws = fakeConn();
    const sends = [msg("alice", "p0", { group: "g1" }, "g1"), msg("alice", "p1", { group: "g2" }, "g2"), msg("alice", "p2", { to: "bob" }, "direct")];
    const acks: Array<Promise<string>> = [];
    for (const m of sends) {
      acks.push(outcome(pipeline.send(m, ws)));
      await nextTick();
    }
    const got = await Promise.all(acks);
    expect(lookups.flat()).toEqual(["g1", "g2"]);
    const epoch = (await allocator.tops(["alice"])).alice!.epoch;
    expect(got.map((a) => a.split(" ")[2])).toEqual([1, 2, 3].map((pos) => formatPosition({ epoch, pos })));
    expect(routed.map((r) => `${r.m.body}@${r.positions.alice!.pos}`)).toEqual(["g1@1", "g2@2", "direct@3"]);
    expect(routed.map((r) => Object.keys(r.positions).sort().join(","))).toEqual(["alice,bob", "alice,carol", "alice,bob"]);
    expect(routed.map((r) => r.m.rcpt)).toEqual([
      ["alice", "bob"],
      ["alice", "carol"],
      ["alice", "bob"],
    ]);
  });

  test("a failed send of a connection does not hold up its later sends", async () => {
    const { pipeline, routed } = setup({ g: ["bob"] }, { membersDelayMs: 50 });
    const ws = fakeConn();
    const refused = outcome(pipeline.send(msg("alice", "f0", { group: "g" }), ws));
    await nextTick();
    const later = outcome(pipeline.send(msg("alice", "f1", { to: "bob" }, "later"), ws));
    expect(await refused).toBe("error:forbidden");
    expect(await later).toStartWith("ack ");
    expect(routed.map((r) => r.m.body)).toEqual(["later"]);
  });
});

test("a client id reused for another target is another message; for the same target it is the same one", () => {
  expect(deriveMsgId("a", "1", { to: "b" })).toBe(deriveMsgId("a", "1", { to: "b" }));
  expect(deriveMsgId("a", "1", { to: "b" })).not.toBe(deriveMsgId("a", "1", { to: "c" }));
  expect(deriveMsgId("a", "1", { to: "g" })).not.toBe(deriveMsgId("a", "1", { group: "g" }));
  expect(deriveMsgId("a", "1", { to: "b" })).not.toBe(deriveMsgId("b", "1", { to: "b" }));
});

test("a stream event takes the same path: its kind names the recipients (or refuses it), emit() derives an idempotent id", async () => {
  const accepted: ChatMessage[] = [];
  const { pipeline, routed, queue, allocator } = setup(
    {},
    {
      acceptEvent: async (e) => {
        accepted.push(e);
        if (e.ref === "nope") throw new SendError("not_found", "no such message");
        e.to = "bob";
        return ["alice", "bob", "carol"];
      },
    },
  );
  const published: ChatMessage[] = [];
  const stop = await queue.consume({ onDelivery: (d) => (published.push(...d.messages), d.ack()) }, { prefetch: 10 });
  const e = { kind: "edit", from: "alice", key: "k1", ref: "m1", body: "new text" };
  const a = await pipeline.emit(e);
  expect(await outcome(pipeline.emit(e))).toBe(`ack ${a.ts} ${a.cursor}`);
  expect(routed).toHaveLength(1);
  expect(routed[0]!.m).toMatchObject({ kind: "edit", from: "alice", to: "bob", ref: "m1", body: "new text", rcpt: ["alice", "bob", "carol"] });
  expect(Object.keys(routed[0]!.positions).sort()).toEqual(["alice", "bob", "carol"]);
  expect(await outcome(pipeline.emit({ ...e, key: "k2", ref: "nope" }))).toBe("error:not_found");
  expect((await allocator.tops(["carol"])).carol!.pos).toBe(1); // the refused one took no position
  while (published.length < 1) await nextTick();
  expect(published.map((m) => m.kind)).toEqual(["edit"]);
  await stop.stop();
});

test("message ids are those of earlier versions (stored rows and resends across versions depend on them)", () => {
  // sha256("alice\nc-1\nto:bob") and friends, base64url, first 22 characters: as computed before issue 10
  expect([deriveMsgId("alice", "c-1", { to: "bob" }), deriveMsgId("alice", "c-1", { group: "g_1" }), deriveMsgId("ü😀", "id\n2", { to: "x" })]).toEqual([
    "R5CH4Y6iX25PjwMF22v30S",
    "iXEOBMsPm1O3sWDBFh1Blo",
    "OFdu16iJxoL7XTInCiEWbz",
  ]);
});
