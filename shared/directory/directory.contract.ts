import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { Directory, InstanceInfo, Ledger } from "./directory.ts";
import { DIRECTORY_MAX_BATCH } from "./directory-http.ts";

export interface DirectoryUnderTest {
  directory: Directory;
  ledger: Ledger;
  cleanup: () => Promise<void>;
}

const TTL = 60_000;
const A: InstanceInfo = { id: "inst-a", url: "http://127.0.0.1:4001" };
const B: InstanceInfo = { id: "inst-b", url: "http://127.0.0.1:4002" };

const byId = (xs: InstanceInfo[] | undefined) => [...(xs ?? [])].sort((x, y) => x.id.localeCompare(y.id));

async function until(check: () => Promise<boolean>, what: string, deadlineMs = 5000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await Bun.sleep(25);
  }
}

/** The one behaviour every Directory + Ledger implementation must show. */
export function directoryContract(name: string, make: () => Promise<DirectoryUnderTest>) {
  describe(`directory contract: ${name}`, () => {
    let sut: DirectoryUnderTest;
    let dir: Directory;
    let ledger: Ledger;
    beforeEach(async () => {
      sut = await make();
      dir = sut.directory;
      ledger = sut.ledger;
    });
    afterEach(() => sut.cleanup());

    test("the change feed reports presence changes and removed instances, after lookup shows them", async () => {
      const events: Array<string[] | null> = [];
      const lookedUp: Array<Promise<Record<string, InstanceInfo[]>>> = [];
      const feed = dir.watch((users) => {
        events.push(users);
        if (users?.includes("alice")) lookedUp.push(dir.lookup(["alice"]));
      });
      try {
        await until(async () => feed.live(), "the feed is live");
        await dir.heartbeat(A, TTL);
        await dir.setPresence(A.id, ["alice", "bob"], []);
        await until(async () => events.some((e) => e?.includes("bob")), "bob's arrival is reported");
        expect(byId((await lookedUp[0]!).alice)).toEqual([A]);
        await dir.setPresence(A.id, [], ["bob"]);
        await until(async () => events.filter((e) => e?.includes("bob")).length === 2, "bob's departure is reported");
        await dir.removeInstance(A.id);
        await until(async () => events.filter((e) => e?.includes("alice")).length === 2, "alice's instance going away is reported");
        expect((await lookedUp[1]!).alice).toEqual([]);
      } finally {
        feed.stop();
      }
      expect(feed.live()).toBe(false);
      const before = events.length;
      await dir.heartbeat(A, TTL);
      await dir.setPresence(A.id, ["carol"], []);
      await Bun.sleep(100);
      expect(events.length).toBe(before);
    });

    test("users registered on different instances are found on theirs", async () => {
      await dir.heartbeat(A, TTL);
      await dir.heartbeat(B, TTL);
      await dir.setPresence(A.id, ["alice"], []);
      await dir.setPresence(B.id, ["bob"], []);
      expect(await dir.lookup(["alice", "bob"])).toEqual({ alice: [A], bob: [B] });
    });

    test("a user on two instances is found on both", async () => {
      await dir.heartbeat(A, TTL);
      await dir.heartbeat(B, TTL);
      await dir.setPresence(A.id, ["carol"], []);
      await dir.setPresence(B.id, ["carol"], []);
      expect(byId((await dir.lookup(["carol"])).carol)).toEqual([A, B]);
    });

    test("offline and unknown users map to [] and empty calls are harmless", async () => {
      await dir.heartbeat(A, TTL);
      await dir.setPresence(A.id, [], []);
      expect(await dir.lookup([])).toEqual({});
      expect(await dir.lookup(["nobody", "never.seen"])).toEqual({ nobody: [], "never.seen": [] });
    });

    test("setPresence offline removes the user from that instance only", async () => {
      await dir.heartbeat(A, TTL);
      await dir.heartbeat(B, TTL);
      await dir.setPresence(A.id, ["dave", "erin"], []);
      await dir.setPresence(B.id, ["dave"], []);
      await dir.setPresence(A.id, [], ["dave"]);
      expect(await dir.lookup(["dave", "erin"])).toEqual({ dave: [B], erin: [A] });
      await dir.setPresence(B.id, [], ["dave"]);
      expect(await dir.lookup(["dave"])).toEqual({ dave: [] });
    });

    test("one setPresence call can add and remove", async () => {
      await dir.heartbeat(A, TTL);
      await dir.setPresence(A.id, ["u1", "u2"], []);
      await dir.setPresence(A.id, ["u3"], ["u1"]);
      expect(await dir.lookup(["u1", "u2", "u3"])).toEqual({ u1: [], u2: [A], u3: [A] });
    });

    test("removeInstance forgets the instance and all its users", async () => {
      await dir.heartbeat(A, TTL);
      await dir.heartbeat(B, TTL);
      await dir.setPresence(A.id, ["frank", "gina"], []);
      await dir.setPresence(B.id, ["gina"], []);
      await dir.removeInstance(A.id);
      expect(await dir.lookup(["frank", "gina"])).toEqual({ frank: [], gina: [B] });
      expect(await dir.heartbeat(A, TTL)).toBe(false);
      expect(await dir.lookup(["frank"])).toEqual({ frank: [] });
    });

    test("heartbeat reports false for an unknown instance and true once known", async () => {
      expect(await dir.heartbeat(A, TTL)).toBe(false);
      expect(await dir.heartbeat(A, TTL)).toBe(true);
      expect(await dir.heartbeat(B, TTL)).toBe(false);
    });

    test("a heartbeat with a new URL moves the instance's users there", async () => {
      await dir.heartbeat(A, TTL);
      await dir.setPresence(A.id, ["hank"], []);
      const moved = { id: A.id, url: "http://127.0.0.1:4999" };
      expect(await dir.heartbeat(moved, TTL)).toBe(true);
      expect(await dir.lookup(["hank"])).toEqual({ hank: [moved] });
    });

    test("an instance whose heartbeat lapses is no longer returned, and forgets its users", async () => {
      await dir.heartbeat(A, 300);
      await dir.heartbeat(B, TTL);
      await dir.setPresence(A.id, ["ivy", "jack"], []);
      await dir.setPresence(B.id, ["jack"], []);
      expect(await dir.lookup(["ivy"])).toEqual({ ivy: [A] });
      await until(async () => (await dir.lookup(["ivy"])).ivy?.length === 0, "A's heartbeat lapses");
      expect(await dir.lookup(["jack"])).toEqual({ jack: [B] });
      expect(await dir.heartbeat(A, TTL)).toBe(false);
      expect(await dir.lookup(["ivy", "jack"])).toEqual({ ivy: [], jack: [B] });
      await dir.setPresence(A.id, ["ivy"], []);
      expect(await dir.lookup(["ivy"])).toEqual({ ivy: [A] });
    });

    test("user ids that are Object.prototype names are plain keys", async () => {
      await dir.heartbeat(A, TTL);
      await dir.setPresence(A.id, ["__proto__", "constructor"], []);
      const r = await dir.lookup(["__proto__", "constructor", "toString"]);
      expect(Object.keys(r).sort()).toEqual(["__proto__", "constructor", "toString"]);
      expect(r["__proto__"]).toEqual([A]);
      expect(r["constructor"]).toEqual([A]);
      expect(r["toString"]).toEqual([]);
    });

    test("a full batch (DIRECTORY_MAX_BATCH users) online, then offline, in one setPresence call each", async () => {
      // a gateway's full re-announce sends its users in batches of this size (directory-http.ts)
      await dir.heartbeat(A, TTL);
      const users = Array.from({ length: DIRECTORY_MAX_BATCH }, (_, i) => `many-${i}`);
      await dir.setPresence(A.id, users, []);
      const sample = [users[0]!, users[7999]!, users[8000]!, users.at(-1)!];
      expect(await dir.lookup(sample)).toEqual(Object.fromEntries(sample.map((u) => [u, [A]])));
      await dir.setPresence(A.id, [], users);
      expect(await dir.lookup(sample)).toEqual(Object.fromEntries(sample.map((u) => [u, []])));
    });

    test("large lookups: 2000 users over two instances in one call", async () => {
      await dir.heartbeat(A, TTL);
      await dir.heartbeat(B, TTL);
      const users = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
      await dir.setPresence(A.id, users.filter((_, i) => i % 2 === 0), []);
      await dir.setPresence(B.id, users.filter((_, i) => i % 3 === 0), []);
      const r = await dir.lookup([...users, "ghost"]);
      expect(Object.keys(r)).toHaveLength(2001);
      expect(r.ghost).toEqual([]);
      users.forEach((user, i) => {
        const want = [...(i % 2 === 0 ? [A] : []), ...(i % 3 === 0 ? [B] : [])];
        expect(byId(r[user])).toEqual(want);
      });
    });

    test("claims: new, then pending, done after complete, release drops only pending", async () => {
      expect(await ledger.claim([])).toEqual({});
      expect(await ledger.claim(["m1", "m2", "m2"])).toEqual({ m1: { state: "new" }, m2: { state: "new" } });
      expect(await ledger.claim(["m1", "m3"])).toEqual({ m1: { state: "pending" }, m3: { state: "new" } });
      await ledger.complete([{ msgId: "m1", ts: 1_700_000_000_123 }]);
      expect(await ledger.claim(["m1", "m2"])).toEqual({ m1: { state: "done", ts: 1_700_000_000_123 }, m2: { state: "pending" } });
      await ledger.release(["m1", "m2", "never-claimed"]);
      expect(await ledger.claim(["m1", "m2", "never-claimed"])).toEqual({
        m1: { state: "done", ts: 1_700_000_000_123 },
        m2: { state: "new" },
        "never-claimed": { state: "new" },
      });
    });

    test("claims with ids of any characters", async () => {
      const ids = ["alice:hello world", "bob/é✓", "__proto__", "x".repeat(200)];
      expect(Object.values(await ledger.claim(ids)).map((c) => c.state)).toEqual(["new", "new", "new", "new"]);
      await ledger.complete(ids.map((msgId, i) => ({ msgId, ts: i })));
      const again = await ledger.claim(ids);
      expect(ids.map((id) => again[id])).toEqual(ids.map((_, i) => ({ state: "done", ts: i })));
    });
  });
}
