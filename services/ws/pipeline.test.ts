import { describe, expect, test } from "bun:test";
import { createMemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { silentLogger } from "../../shared/log.ts";
import { createMetrics } from "../../shared/metrics.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import { createMemoryQueue } from "../../shared/queue/queue-memory.ts";
import { createPipeline, deriveMsgId, SendError } from "./pipeline.ts";
import type { Router } from "./router.ts";

/** A pipeline on the embedded queue and ledger; membership answers after `membersDelayMs`. */
function setup(groups: Record<string, string[]>, membersDelayMs = 20) {
  const queue = createMemoryQueue();
  const routed: ChatMessage[] = [];
  const router = { route: async (m: ChatMessage) => void routed.push(m) } as unknown as Router;
  const pipeline = createPipeline({
    queue,
    ledger: createMemoryDirectory(),
    router,
    groupMembers: async (ids) => {
      await Bun.sleep(membersDelayMs);
      return new Map(ids.map((g) => [g, groups[g] ?? []]));
    },
    log: silentLogger,
    metrics: createMetrics("test"),
  });
  return { pipeline, routed };
}

const msg = (from: string, id: string, target: { to: string } | { group: string }, body = "hi"): ChatMessage => ({
  msgId: deriveMsgId(from, id),
  id,
  from,
  ...target,
  body,
  ts: Date.now(),
});

const outcome = (p: Promise<number>) => p.then((ts) => `ack ${ts}`, (e) => (e instanceof SendError ? `error:${e.code}` : `throw ${e}`));

describe("the send pipeline", () => {
  test("a resend while the first attempt runs gets the same ack, and the message is routed once", async () => {
    const { pipeline, routed } = setup({ g: ["alice", "bob"] });
    const first = msg("alice", "c1", { group: "g" });
    const [a, b] = await Promise.all([outcome(pipeline.send(first)), outcome(pipeline.send({ ...first, ts: first.ts + 5 }))]);
    expect(a).toBe(`ack ${first.ts}`);
    expect(b).toBe(a);
    expect(routed.map((m) => m.msgId)).toEqual([first.msgId]);
    // Later resends too, even to a group the sender is not in: it is the message already accepted.
    expect(await outcome(pipeline.send(msg("alice", "c1", { group: "other" })))).toBe(a);
    expect(routed.length).toBe(1);
  });

  test("a send under the id of a refused attempt still running is answered on its own", async () => {
    const { pipeline, routed } = setup({ g: ["bob"] });
    const refused = msg("alice", "c2", { group: "g" });
    const valid = msg("alice", "c2", { to: "bob" }, "second");
    const [a, b] = await Promise.all([outcome(pipeline.send(refused)), outcome(pipeline.send(valid))]);
    expect(a).toBe("error:forbidden");
    expect(b).toBe(`ack ${valid.ts}`);
    expect(routed.map((m) => m.body)).toEqual(["second"]);
  });

  test("two refused attempts under one id are each refused", async () => {
    const { pipeline, routed } = setup({ g: ["bob"] });
    const refused = msg("alice", "c3", { group: "g" });
    expect(await Promise.all([outcome(pipeline.send(refused)), outcome(pipeline.send(refused))])).toEqual(["error:forbidden", "error:forbidden"]);
    expect(routed).toEqual([]);
  });
});
