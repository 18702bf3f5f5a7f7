import { expect, test } from "bun:test";
import { createTickBatcher } from "./tick.ts";

test("calls of one turn go out in one flush, results in order", async () => {
  const flushes: number[][] = [];
  const b = createTickBatcher<number, number>(async (xs) => (flushes.push(xs), xs.map((x) => x * 2)));
  expect(await Promise.all([b.add(1), b.add(2), b.add(3)])).toEqual([2, 4, 6]);
  expect(flushes).toEqual([[1, 2, 3]]);
});

test("maxItems splits a turn", async () => {
  const flushes: number[][] = [];
  const b = createTickBatcher<number, number>(async (xs) => (flushes.push(xs), xs), { maxItems: 2 });
  await Promise.all([1, 2, 3, 4, 5].map((x) => b.add(x)));
  expect(flushes).toEqual([[1, 2], [3, 4], [5]]);
});

test("a failed flush rejects each of its items only", async () => {
  let n = 0;
  const b = createTickBatcher<number, number>(async (xs) => {
    if (n++ === 0) throw new Error("boom");
    return xs;
  });
  const first = Promise.allSettled([b.add(1), b.add(2)]);
  expect((await first).map((r) => r.status)).toEqual(["rejected", "rejected"]);
  expect(await b.add(3)).toBe(3);
});

test("with maxInFlight, items wait for a running flush and then go out together", async () => {
  const flushes: number[][] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const b = createTickBatcher<number, number>(
    async (xs) => {
      flushes.push(xs);
      if (flushes.length === 1) await gate;
      return xs;
    },
    { maxInFlight: 1 },
  );
  const p1 = b.add(1);
  await new Promise((r) => setImmediate(r));
  const later = [b.add(2), b.add(3)];
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  expect(flushes).toEqual([[1]]);
  release();
  expect(await Promise.all([p1, ...later])).toEqual([1, 2, 3]);
  expect(flushes).toEqual([[1], [2, 3]]);
});
