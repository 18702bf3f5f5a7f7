import { describe, expect, test } from "bun:test";
import { floorsOf, type AllocResult, type StreamAllocator } from "./allocator.ts";
import { comparePositions } from "./position.ts";

export interface AllocatorFixture {
  allocator: StreamAllocator;
  /** Loses every counter, as a restart without persistence or a failover would. */
  wipe(): Promise<void>;
  cleanup(): Promise<void>;
}

/** One suite for every allocator implementation (memory, Redis). */
export function allocatorContract(name: string, make: (opts: { window?: number }) => Promise<AllocatorFixture>) {
  describe(`allocator contract: ${name}`, () => {
    const withFixture = (fn: (f: AllocatorFixture) => Promise<void>, opts: { window?: number } = {}) => async () => {
      const f = await make(opts);
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    };

    test(
      "positions per user are 1, 2, 3… in request order, each user counting on its own",
      withFixture(async ({ allocator }) => {
        const r = await allocator.allocate([
          { msgId: "m1", users: ["a", "b"] },
          { msgId: "m2", users: ["a"] },
          { msgId: "m3", users: ["b", "a", "a"] },
        ]);
        expect(r.map((x) => x.positions.a?.pos)).toEqual([1, 2, 3]);
        expect(r.map((x) => x.positions.b?.pos)).toEqual([1, undefined, 2]);
        expect(r[0]!.positions.a!.epoch).toBe(r[2]!.positions.a!.epoch);
        const later = await allocator.allocate([{ msgId: "m4", users: ["a"] }]);
        expect(later[0]!.positions.a!.pos).toBe(4);
      }),
    );

    test(
      "a user named __proto__ (a valid user id) is a user like any other: its own key, nothing inherited",
      withFixture(async ({ allocator }) => {
        const [r] = await allocator.allocate([{ msgId: "p1", users: ["__proto__", "b"] }]);
        expect(Object.keys(r!.positions).sort()).toEqual(["__proto__", "b"]);
        const users: string[] = [];
        for (const u in r!.positions) users.push(u);
        expect(users.sort()).toEqual(["__proto__", "b"]);
        expect(r!.positions["__proto__"]!.pos).toBe(1);
      }),
    );

    test(
      "allocating a (user, msgId) again returns the same position, even among new ones",
      withFixture(async ({ allocator }) => {
        const [first] = await allocator.allocate([{ msgId: "x", users: ["a", "b"] }]);
        const again = await allocator.allocate([
          { msgId: "y", users: ["a"] },
          { msgId: "x", users: ["b", "a"] },
        ]);
        expect(again[1]!.positions).toEqual(first!.positions);
        expect(again[0]!.positions.a!.pos).toBe(2);
      }),
    );

    test(
      "concurrent calls never hand out a position twice",
      withFixture(async ({ allocator }) => {
        const calls = await Promise.all(Array.from({ length: 20 }, (_, i) => allocator.allocate([{ msgId: `c${i}`, users: ["hot"] }, { msgId: `d${i}`, users: ["hot"] }])));
        const ps = calls.flat().map((x) => x.positions.hot!.pos).sort((a, b) => a - b);
        expect(ps).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      }),
    );

    test(
      "the first claim of (sender, msgId) is fresh; later ones return its ts",
      withFixture(async ({ allocator }) => {
        const [a] = await allocator.allocate([{ msgId: "k", users: ["s", "t"], claim: { sender: "s", ts: 111 } }]);
        expect(a!.claimed).toEqual({ fresh: true, ts: 111 });
        const [b, c] = await allocator.allocate([
          { msgId: "k", users: ["s", "t"], claim: { sender: "s", ts: 222 } },
          { msgId: "k", users: ["s", "t"], claim: { sender: "other", ts: 333 } },
        ]);
        expect(b!.claimed).toEqual({ fresh: false, ts: 111 });
        expect(b!.positions).toEqual(a!.positions);
        expect(c!.claimed).toEqual({ fresh: true, ts: 333 });
        // a sender outside the message's users (a server event) is claimed without a position
        expect(c!.positions.other).toBeUndefined();
        const [c2] = await allocator.allocate([{ msgId: "k", users: ["s", "t"], claim: { sender: "other", ts: 334 } }]);
        expect(c2!.claimed).toEqual({ fresh: false, ts: 333 });
        expect((await allocator.tops(["other"])).other!.pos).toBe(0);
        const [plain] = await allocator.allocate([{ msgId: "k", users: ["t"] }]);
        expect(plain!.claimed).toBeUndefined();
        // a claim after the position was allocated without one (persist was first) is fresh
        const [first] = await allocator.allocate([{ msgId: "late", users: ["s", "t"] }]);
        const [late] = await allocator.allocate([{ msgId: "late", users: ["s", "t"], claim: { sender: "s", ts: 444 } }]);
        expect(late!.positions).toEqual(first!.positions);
        expect(late!.claimed).toEqual({ fresh: true, ts: 444 });
        const [again] = await allocator.allocate([{ msgId: "late", users: ["s", "t"], claim: { sender: "s", ts: 555 } }]);
        expect(again!.claimed).toEqual({ fresh: false, ts: 444 });
      }),
    );

    test(
      "a msgId may be any storable text: separators, quotes, escapes, U+0000's neighbours, non-ASCII, 64 characters",
      withFixture(async ({ allocator }) => {
        const ids = ["a,b", 'q"uo\\te', "tab\tnew\nline", "\u0001\u001f", "ünï😀çødé", "[1,2]", "x".repeat(64), " sp ace "];
        const first = await allocator.allocate(ids.map((msgId) => ({ msgId, users: ["s", "t"], claim: { sender: "s", ts: 42 } })));
        expect(first.map((r) => r.positions.s!.pos)).toEqual(ids.map((_, i) => i + 1));
        expect(first.every((r) => r.claimed!.fresh)).toBe(true);
        await allocator.writtenUpTo(floorsOf(first));
        const again = await allocator.allocate(ids.map((msgId) => ({ msgId, users: ["t", "s"], claim: { sender: "s", ts: 43 } })));
        expect(again.map((r) => r.positions)).toEqual(first.map((r) => r.positions));
        expect(again.map((r) => r.claimed)).toEqual(ids.map(() => ({ fresh: false, ts: 42 })));
      }),
    );

    test(
      "tops is the last position handed out, and opens an epoch for a new user",
      withFixture(async ({ allocator }) => {
        const t0 = await allocator.tops(["n"]);
        expect(t0.n!.pos).toBe(0);
        const [r] = await allocator.allocate([{ msgId: "1", users: ["n"] }]);
        expect(r!.positions.n).toEqual({ epoch: t0.n!.epoch, pos: 1 });
        expect((await allocator.tops(["n", "n"])).n).toEqual({ epoch: t0.n!.epoch, pos: 1 });
      }),
    );

    test(
      "after losing its data it opens a larger epoch and never repeats a position",
      withFixture(async ({ allocator, wipe }) => {
        const before = await allocator.allocate([{ msgId: "1", users: ["w"] }, { msgId: "2", users: ["w"] }]);
        await wipe();
        const after = await allocator.allocate([{ msgId: "3", users: ["w"] }, { msgId: "1", users: ["w"] }]);
        const old = before[1]!.positions.w!;
        const neu = after[0]!.positions.w!;
        expect(neu.epoch).toBeGreaterThan(old.epoch);
        expect(neu.pos).toBe(1);
        expect(comparePositions(after[1]!.positions.w!, old)).toBe(1);
      }),
    );

    test(
      "an allocation above the floor never leaves the window, however many follow; at or below it, it may",
      withFixture(
        async ({ allocator }) => {
          const [first] = await allocator.allocate([{ msgId: "a0", users: ["u"] }]);
          await allocator.writtenUpTo(floorsOf([first!]));
          // persist has not stored "lag": the floor stays below it while everything after it is stored
          const [lagging] = await allocator.allocate([{ msgId: "lag", users: ["u"] }]);
          expect(lagging!.positions.u!.pos).toBe(2);
          let last: AllocResult[] = [];
          for (let i = 0; i < 4; i++) {
            last = await allocator.allocate(Array.from({ length: 5 }, (_, k) => ({ msgId: `x${i}-${k}`, users: ["u"] })));
            await allocator.writtenUpTo(floorsOf([first!]));
          }
          const [again] = await allocator.allocate([{ msgId: "lag", users: ["u"] }]);
          expect(again!.positions.u).toEqual(lagging!.positions.u!);
          expect((await allocator.floors(["u"])).u).toEqual(first!.positions.u!);
          // now everything up to the last is stored
          await allocator.writtenUpTo(floorsOf(last));
          expect((await allocator.floors(["u"])).u!.pos).toBe(22);
          for (let i = 0; i < 3; i++) await allocator.allocate(Array.from({ length: 5 }, (_, k) => ({ msgId: `y${i}-${k}`, users: ["u"] })));
          const [late] = await allocator.allocate([{ msgId: "lag", users: ["u"] }]);
          expect(late!.positions.u!.pos).toBeGreaterThan(37); // written and far behind: it went
        },
        { window: 3 },
      ),
    );

    test(
      "a floor only moves forward, never past the top, and only in the user's current epoch",
      withFixture(async ({ allocator, wipe }) => {
        const none = await allocator.floors(["nobody"]);
        expect(none.nobody).toEqual({ epoch: 0, pos: 0 });
        const rs = await allocator.allocate(Array.from({ length: 5 }, (_, k) => ({ msgId: `f${k}`, users: ["u"] })));
        const epoch = rs[0]!.positions.u!.epoch;
        expect((await allocator.floors(["u"])).u).toEqual({ epoch, pos: 0 });
        await allocator.writtenUpTo([{ user: "u", position: { epoch, pos: 3 } }]);
        await allocator.writtenUpTo([{ user: "u", position: { epoch, pos: 2 } }]); // back: ignored
        await allocator.writtenUpTo([{ user: "u", position: { epoch, pos: 6 } }]); // past the top (5): ignored
        await allocator.writtenUpTo([{ user: "u", position: { epoch: epoch - 1, pos: 4 } }]); // another epoch: ignored
        await allocator.writtenUpTo([{ user: "nobody", position: { epoch, pos: 1 } }]); // no state: ignored
        expect((await allocator.floors(["u", "nobody"]))).toEqual({ u: { epoch, pos: 3 }, nobody: { epoch: 0, pos: 0 } });
        // two floors of one user in one call: the higher one counts
        await allocator.writtenUpTo([{ user: "u", position: { epoch, pos: 5 } }, { user: "u", position: { epoch, pos: 4 } }]);
        expect((await allocator.floors(["u"])).u).toEqual({ epoch, pos: 5 });
        // after losing its data a user's new epoch starts at floor 0, and the old epoch's floors are ignored
        await wipe();
        const [n] = await allocator.allocate([{ msgId: "n1", users: ["u"] }]);
        await allocator.writtenUpTo([{ user: "u", position: { epoch, pos: 1 } }]);
        expect((await allocator.floors(["u"])).u).toEqual({ epoch: n!.positions.u!.epoch, pos: 0 });
      }),
    );

    test(
      "a claim is answered the same while its allocation is in the window, written or not, before and after a rotation",
      withFixture(
        async ({ allocator }) => {
          const [a] = await allocator.allocate([{ msgId: "c", users: ["s", "t"], claim: { sender: "s", ts: 7 } }]);
          await allocator.writtenUpTo(floorsOf([a!]));
          const [b] = await allocator.allocate([{ msgId: "c", users: ["s", "t"], claim: { sender: "s", ts: 8 } }]);
          expect(b!.claimed).toEqual({ fresh: false, ts: 7 });
          // two more ids for s: its window of 3 rotates, "c" is now in the older generation
          await allocator.allocate([{ msgId: "d", users: ["s"] }, { msgId: "e", users: ["s"] }]);
          const [c] = await allocator.allocate([{ msgId: "c", users: ["s", "t"], claim: { sender: "s", ts: 9 } }]);
          expect(c!.claimed).toEqual({ fresh: false, ts: 7 });
          expect(c!.positions).toEqual(a!.positions);
          // an unwritten claimed allocation is carried through any number of rotations (the floor
          // stays below it however much after it is stored)
          const [u] = await allocator.allocate([{ msgId: "u", users: ["s"], claim: { sender: "s", ts: 10 } }]);
          const below = { user: "s", position: { ...u!.positions.s!, pos: u!.positions.s!.pos - 1 } };
          for (let i = 0; i < 4; i++) {
            await allocator.allocate(Array.from({ length: 3 }, (_, k) => ({ msgId: `f${i}-${k}`, users: ["s"] })));
            await allocator.writtenUpTo([below]);
          }
          const [u2] = await allocator.allocate([{ msgId: "u", users: ["s"], claim: { sender: "s", ts: 11 } }]);
          expect(u2!.claimed).toEqual({ fresh: false, ts: 10 });
          expect(u2!.positions).toEqual(u!.positions);
        },
        { window: 3 },
      ),
    );

    test(
      "one call answers exactly as the same requests one call each: repeats and claims within a call, across rotations, floors among them",
      async () => {
        for (const window of [3, 100]) await sameInOneCall(window);
      },
    );

    async function sameInOneCall(window: number) {
      {
        // ids repeat within the call (the second claim of an id sees the first), and 9 new ids in a
        // window of 3 rotate it three times in the middle of the call
        const reqs = [
          { msgId: "p1", users: ["s", "t"] },
          { msgId: "p2", users: ["s"] },
          { msgId: "p1", users: ["s", "t"], claim: { sender: "s", ts: 5 } },
          { msgId: "p3", users: ["s", "t"], claim: { sender: "s", ts: 6 } },
          { msgId: "p4", users: ["s"] },
          { msgId: "p1", users: ["t", "s"], claim: { sender: "s", ts: 7 } },
          { msgId: "p5", users: ["s"] },
          { msgId: "p2", users: ["s"], claim: { sender: "s", ts: 8 } },
          { msgId: "p6", users: ["s", "t"] },
          { msgId: "p7", users: ["s"] },
          { msgId: "p3", users: ["s", "t"], claim: { sender: "s", ts: 9 } },
          { msgId: "p8", users: ["s"] },
          { msgId: "p9", users: ["s"] },
          { msgId: "p2", users: ["s"] },
          { msgId: "p6", users: ["t"], claim: { sender: "s", ts: 10 } },
        ];
        const together = await make({ window });
        const apart = await make({ window });
        try {
          // some earlier allocations, partly written, so that the call meets both generations
          for (const f of [together, apart]) {
            const [p2] = await f.allocator.allocate([{ msgId: "p2", users: ["s"] }, { msgId: "o1", users: ["s"] }]);
            await f.allocator.writtenUpTo(floorsOf([p2!]));
          }
          const one = await together.allocator.allocate(reqs);
          const each = [];
          for (const q of reqs) each.push((await apart.allocator.allocate([q]))[0]!);
          const strip = (rs: typeof one) => rs.map((r) => ({ positions: Object.fromEntries(Object.entries(r.positions).map(([u, p]) => [u, p.pos])), claimed: r.claimed }));
          expect(strip(one)).toEqual(strip(each));
          await together.allocator.writtenUpTo(floorsOf(one));
          await apart.allocator.writtenUpTo(floorsOf(each));
          // after the marks, both still answer the same for every id
          const check = ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "o1"].map((msgId) => ({ msgId, users: ["s"] }));
          expect(strip(await together.allocator.allocate(check))).toEqual(strip(await apart.allocator.allocate(check)));
        } finally {
          await together.cleanup();
          await apart.cleanup();
        }
      }
    }

    test(
      "idempotency holds for at least the last `window` allocations of a user (and at most twice that)",
      withFixture(
        async ({ allocator }) => {
          for (let i = 0; i < 7; i++) {
            await allocator.writtenUpTo(floorsOf(await allocator.allocate([{ msgId: `w${i}`, users: ["u"] }])));
          }
          const [recent, older, old] = await allocator.allocate([{ msgId: "w6", users: ["u"] }, { msgId: "w4", users: ["u"] }, { msgId: "w0", users: ["u"] }]);
          expect(recent!.positions.u!.pos).toBe(7);
          expect(older!.positions.u!.pos).toBe(5);
          expect(old!.positions.u!.pos).toBe(8); // w0 fell out of a window of 3: a new position
        },
        { window: 3 },
      ),
    );
  });
}
