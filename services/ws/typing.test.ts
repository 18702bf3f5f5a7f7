import { describe, expect, test } from "bun:test";
import { createMetrics } from "../../shared/metrics.ts";
import type { Conn } from "./connections.ts";
import type { Ephemeral } from "./router.ts";
import { createTyping, TYPING_INTERVAL_MS, TYPING_TTL_MS } from "./typing.ts";

// typing.ts with a recording router and a clock the test moves.

function setup(groups: Record<string, string[]> = {}, opts: { membersDown?: boolean } = {}) {
  const signals: Ephemeral[] = [];
  let t = 1_000;
  const typing = createTyping({
    router: { signal: async (e) => void signals.push(e) },
    groupMembers: async (ids) => {
      if (opts.membersDown) throw new Error("database down");
      return new Map(ids.map((g) => [g, groups[g] ?? []]));
    },
    metrics: createMetrics("test"),
    now: () => t,
  });
  const conn = (user: string) => {
    const sent: any[] = [];
    const ws = { data: { user, open: true }, send: (s: string) => sent.push(JSON.parse(s)) } as unknown as Conn;
    return { ws, sent };
  };
  return { typing, signals, conn, advance: (ms: number) => (t += ms) };
}

describe("typing", () => {
  test("direct: to the other party only, with how long to show it", async () => {
    const s = setup();
    const { ws } = s.conn("ann");
    await s.typing(ws, { type: "typing", to: "bob" });
    expect(s.signals).toEqual([{ users: ["bob"], frame: { type: "typing", from: "ann", to: "bob", ttlMs: TYPING_TTL_MS } }]);
    // to oneself: nobody to tell
    await s.typing(ws, { type: "typing", to: "ann" });
    expect(s.signals).toHaveLength(1);
  });

  test("group: to the other members; a non-member is answered forbidden; membership unavailable drops it", async () => {
    const s = setup({ g1: ["ann", "bob", "cat"] });
    const ann = s.conn("ann");
    await s.typing(ann.ws, { type: "typing", group: "g1" });
    expect(s.signals).toEqual([{ users: ["bob", "cat"], frame: { type: "typing", from: "ann", group: "g1", ttlMs: TYPING_TTL_MS } }]);
    const eve = s.conn("eve");
    await s.typing(eve.ws, { type: "typing", group: "g1" });
    await s.typing(eve.ws, { type: "typing", group: "nope" });
    expect(eve.sent.map((f) => f.code)).toEqual(["forbidden", "forbidden"]);
    expect(s.signals).toHaveLength(1);

    const down = setup({ g1: ["ann", "bob"] }, { membersDown: true });
    const a = down.conn("ann");
    await down.typing(a.ws, { type: "typing", group: "g1" });
    expect(down.signals).toEqual([]);
    expect(a.sent).toEqual([]);
  });

  test("rate limit: one per conversation per connection per interval; others conversations and connections are separate", async () => {
    const s = setup({ g1: ["ann", "bob"] });
    const one = s.conn("ann");
    const two = s.conn("ann");
    const targets = () => s.signals.map((e) => ("to" in e.frame ? `to:${e.frame.to}` : `group:${e.frame.group}`));
    await s.typing(one.ws, { type: "typing", to: "bob" });
    await s.typing(one.ws, { type: "typing", to: "bob" }); // dropped
    await s.typing(one.ws, { type: "typing", to: "cat" }); // another conversation
    await s.typing(one.ws, { type: "typing", group: "g1" });
    await s.typing(one.ws, { type: "typing", group: "g1" }); // dropped
    await s.typing(two.ws, { type: "typing", to: "bob" }); // another connection of ann
    expect(targets()).toEqual(["to:bob", "to:cat", "group:g1", "to:bob"]);
    s.advance(TYPING_INTERVAL_MS - 1);
    await s.typing(one.ws, { type: "typing", to: "bob" }); // still dropped
    expect(s.signals).toHaveLength(4);
    s.advance(1);
    await s.typing(one.ws, { type: "typing", to: "bob" });
    await s.typing(one.ws, { type: "typing", group: "g1" });
    expect(targets().slice(4)).toEqual(["to:bob", "group:g1"]);
    // dropped frames get no answer
    expect([...one.sent, ...two.sent]).toEqual([]);
  });
});
