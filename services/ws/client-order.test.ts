import { describe, expect, test } from "bun:test";
// @ts-expect-error: a plain ES module of the browser client
import { compareCursors, compareMessages, maxCursor, parseCursor } from "./client/order.js";

type M = { name: string; cursor?: string; anchor?: string; seq?: number };
const order = (ms: M[]) => [...ms].sort(compareMessages).map((m) => m.name);

describe("cursors", () => {
  test("parse the epoch.pos form and the legacy plain integer (epoch 0)", () => {
    expect(parseCursor("3.17")).toEqual([3n, 17n]);
    expect(parseCursor("42")).toEqual([0n, 42n]);
    expect(parseCursor("0")).toEqual([0n, 0n]);
    for (const bad of ["", "a", "1.", ".1", "1.2.3", "-1", "1e3", undefined, null, 5]) expect(parseCursor(bad)).toBeNull();
  });

  test("compare numerically, not as text", () => {
    expect(compareCursors("0.9", "0.10")).toBeLessThan(0);
    expect(compareCursors("9", "10")).toBeLessThan(0);
    expect(compareCursors("1.1", "0.999999999999999999999")).toBeGreaterThan(0);
    expect(compareCursors("2.5", "2.5")).toBe(0);
    expect(compareCursors("12345678901234567890.1", "12345678901234567890.2")).toBeLessThan(0);
  });

  test("a legacy cursor is epoch 0: below any later epoch, equal to 0.n", () => {
    expect(compareCursors("1000", "1.0")).toBeLessThan(0);
    expect(compareCursors("7", "0.7")).toBe(0);
    expect(compareCursors("8", "0.7")).toBeGreaterThan(0);
  });

  test("an invalid cursor is lowest; maxCursor prefers a valid one", () => {
    expect(compareCursors("x", "0")).toBeLessThan(0);
    expect(maxCursor("x", "0.1")).toBe("0.1");
    expect(maxCursor("0.2", "0.10")).toBe("0.10");
    expect(maxCursor(null, null)).toBeNull();
  });
});

describe("message order", () => {
  test("by position, whatever the timestamps or arrival", () => {
    expect(order([
      { name: "c", cursor: "0.30", seq: 1 },
      { name: "a", cursor: "0.10", seq: 2 },
      { name: "b", cursor: "0.20", seq: 3 },
    ])).toEqual(["a", "b", "c"]);
  });

  test("mixed epochs: a later epoch sorts after every earlier one", () => {
    expect(order([
      { name: "e2", cursor: "2.1", seq: 1 },
      { name: "e1", cursor: "1.900", seq: 2 },
      { name: "legacy", cursor: "5000", seq: 3 },
      { name: "e1b", cursor: "1.1000", seq: 4 },
    ])).toEqual(["legacy", "e1", "e1b", "e2"]);
  });

  test("ties on a position keep the order of arrival", () => {
    expect(order([
      { name: "second", cursor: "7", seq: 5 },
      { name: "first", cursor: "0.7", seq: 4 },
      { name: "third", cursor: "7", seq: 9 },
    ])).toEqual(["first", "second", "third"]);
  });

  test("pending messages come after every positioned one, in the order typed", () => {
    expect(order([
      { name: "typed-2", seq: 11 },
      { name: "old", cursor: "1.1", seq: 1 },
      { name: "typed-1", seq: 10 },
      { name: "arrived-later", cursor: "1.2", seq: 12 },
      { name: "typed-3", seq: 13 },
    ])).toEqual(["old", "arrived-later", "typed-1", "typed-2", "typed-3"]);
  });

  test("an acked own message sits at its anchor: after what was known at the ack, before what came later", () => {
    expect(order([
      { name: "reply", cursor: "1.5", seq: 3 },
      { name: "mine", anchor: "1.4", seq: 2 },
      { name: "before", cursor: "1.4", seq: 1 },
      { name: "same-legacy-later", cursor: "1.4", seq: 4 },
    ])).toEqual(["before", "mine", "same-legacy-later", "reply"]);
  });

  test("its own cursor, once known, wins over the anchor", () => {
    expect(order([
      { name: "mine", cursor: "1.9", anchor: "1.1", seq: 1 },
      { name: "other", cursor: "1.5", seq: 2 },
    ])).toEqual(["other", "mine"]);
  });

  test("the order is total and consistent (antisymmetric) on a shuffled mix", () => {
    const ms: M[] = [
      { name: "a", cursor: "3", seq: 1 },
      { name: "b", cursor: "0.4", seq: 2 },
      { name: "c", anchor: "0.4", seq: 3 },
      { name: "d", cursor: "1.0", seq: 4 },
      { name: "e", seq: 5 },
      { name: "f", seq: 6 },
    ];
    const want = ["a", "b", "c", "d", "e", "f"];
    for (let i = 0; i < 20; i++) {
      const shuffled = [...ms].sort(() => Math.random() - 0.5);
      expect(order(shuffled)).toEqual(want);
    }
    for (const x of ms) for (const y of ms) expect(Math.sign(compareMessages(x, y)) + Math.sign(compareMessages(y, x))).toBe(0);
  });
});
