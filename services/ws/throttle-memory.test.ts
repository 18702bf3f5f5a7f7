import { describe, expect, test } from "bun:test";
import { throttleContract } from "./throttle.contract.ts";
import { createMemoryThrottle } from "./throttle-memory.ts";

throttleContract("memory", async () => createMemoryThrottle());

describe("memory throttle with a manual clock", () => {
  const rule = { max: 2, windowMs: 1000, lockMs: 100, maxLockMs: 400 };
  function clocked(maxKeys?: number) {
    let t = 1_000_000;
    return { throttle: createMemoryThrottle({ now: () => t, maxKeys }), advance: (ms: number) => void (t += ms) };
  }

  test("a lock lasts exactly lockMs; the count is forgotten a window after the lock", async () => {
    const { throttle, advance } = clocked();
    await throttle.hit("k", rule);
    expect(await throttle.hit("k", rule)).toBe(100);
    advance(99);
    expect(await throttle.lockedFor(["k"])).toBe(1);
    advance(1);
    expect(await throttle.lockedFor(["k"])).toBe(0);
    expect(await throttle.hit("k", rule)).toBe(200); // still counted: the lock grows
    advance(200 + 1000);
    expect(await throttle.hit("k", rule)).toBe(0); // forgotten
  });

  test("hits spread over more than a window never lock", async () => {
    const { throttle, advance } = clocked();
    expect(await throttle.hit("k", rule)).toBe(0);
    advance(1000);
    expect(await throttle.hit("k", rule)).toBe(0);
  });

  test("memory stays bounded under a spray of keys", async () => {
    const { throttle } = clocked(100);
    for (let i = 0; i < 1000; i++) await throttle.hit(`k${i}`, rule);
    expect(throttle.size()).toBeLessThanOrEqual(100);
  });
});
