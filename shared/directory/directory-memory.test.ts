import { describe, expect, test } from "bun:test";
import { directoryContract } from "./directory.contract.ts";
import { CLAIM_DONE_MS, CLAIM_PENDING_MS } from "./directory.ts";
import { createMemoryDirectory } from "./directory-memory.ts";

directoryContract("memory", async () => {
  const directory = createMemoryDirectory();
  return { directory, ledger: directory, cleanup: async () => {} };
});

function clocked() {
  let t = 1_000_000;
  const directory = createMemoryDirectory({ now: () => t });
  return { directory, advance: (ms: number) => void (t += ms) };
}

describe("memory directory with a manual clock", () => {
  test("an instance is alive strictly before its TTL ends", async () => {
    const { directory, advance } = clocked();
    const a = { id: "a", url: "http://127.0.0.1:1" };
    await directory.heartbeat(a, 1000);
    await directory.setPresence("a", ["u"], []);
    advance(999);
    expect(await directory.lookup(["u"])).toEqual({ u: [a] });
    expect(await directory.heartbeat(a, 1000)).toBe(true);
    advance(1000);
    expect(await directory.lookup(["u"])).toEqual({ u: [] });
    expect(await directory.heartbeat(a, 1000)).toBe(false);
  });

  test("sweepDeadInstances forgets lapsed instances only", async () => {
    const { directory, advance } = clocked();
    await directory.heartbeat({ id: "a", url: "http://127.0.0.1:1" }, 1000);
    await directory.heartbeat({ id: "b", url: "http://127.0.0.1:2" }, 5000);
    await directory.setPresence("a", ["u", "v"], []);
    await directory.setPresence("b", ["v"], []);
    await directory.setPresence("c", ["w"], []);
    advance(2000);
    expect((await directory.sweepDeadInstances()).sort()).toEqual(["a", "c"]);
    expect(await directory.sweepDeadInstances()).toEqual([]);
    expect(await directory.lookup(["u", "v", "w"])).toEqual({ u: [], v: [{ id: "b", url: "http://127.0.0.1:2" }], w: [] });
  });

  test("pending claims expire after CLAIM_PENDING_MS, done ones after CLAIM_DONE_MS", async () => {
    const { directory, advance } = clocked();
    await directory.claim(["p", "d"]);
    await directory.complete([{ msgId: "d", ts: 42 }]);
    advance(CLAIM_PENDING_MS - 1);
    expect(await directory.claim(["p", "d"])).toEqual({ p: { state: "pending" }, d: { state: "done", ts: 42 } });
    advance(1);
    expect(await directory.claim(["p"])).toEqual({ p: { state: "new" } });
    advance(CLAIM_DONE_MS);
    expect(await directory.claim(["d"])).toEqual({ d: { state: "new" } });
  });
});
