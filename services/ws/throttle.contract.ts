import { describe, expect, test } from "bun:test";
import { lockAfter, type Throttle, type ThrottleRule } from "./throttle.ts";

/** Long enough that nothing expires during a test. */
const RULE: ThrottleRule = { max: 3, windowMs: 600_000, lockMs: 10_000, maxLockMs: 40_000 };
const key = () => `k:${crypto.randomUUID()}`;

/** The behaviour every Throttle implementation must show. */
export function throttleContract(name: string, make: () => Promise<Throttle>) {
  describe(`throttle contract: ${name}`, () => {
    test("below the threshold nothing is locked; the max-th hit locks for lockMs", async () => {
      const t = await make();
      const k = key();
      expect(await t.hit(k, RULE)).toBe(0);
      expect(await t.hit(k, RULE)).toBe(0);
      expect(await t.lockedFor([k])).toBe(0);
      expect(await t.hit(k, RULE)).toBe(RULE.lockMs);
      const left = await t.lockedFor([k]);
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThanOrEqual(RULE.lockMs);
    });

    test("each further hit doubles the lock, up to maxLockMs", async () => {
      const t = await make();
      const k = key();
      const got: number[] = [];
      for (let i = 0; i < 6; i++) got.push(await t.hit(k, RULE));
      expect(got).toEqual([0, 0, 10_000, 20_000, 40_000, 40_000]);
      expect(got).toEqual([1, 2, 3, 4, 5, 6].map((n) => lockAfter(n, RULE)));
      expect(await t.lockedFor([k])).toBeGreaterThan(20_000);
    });

    test("lockedFor answers the longest lock among the keys; unknown keys are unlocked", async () => {
      const t = await make();
      const [a, b, c] = [key(), key(), key()];
      for (let i = 0; i < 3; i++) await t.hit(a, RULE);
      for (let i = 0; i < 4; i++) await t.hit(b, RULE);
      expect(await t.lockedFor([c])).toBe(0);
      expect(await t.lockedFor([])).toBe(0);
      expect(await t.lockedFor([a, c])).toBeLessThanOrEqual(10_000);
      expect(await t.lockedFor([a, b, c])).toBeGreaterThan(10_000);
    });

    test("keys are independent, whatever characters they hold", async () => {
      const t = await make();
      const base = key();
      const odd = [`${base}}{x`, `${base} spaced`, `${base}:ünï`];
      for (let i = 0; i < 3; i++) await t.hit(odd[0]!, RULE);
      expect(await t.lockedFor([odd[0]!])).toBeGreaterThan(0);
      expect(await t.lockedFor([odd[1]!, odd[2]!, base])).toBe(0);
    });

    test("reset forgets count and lock", async () => {
      const t = await make();
      const k = key();
      for (let i = 0; i < 4; i++) await t.hit(k, RULE);
      await t.reset(k);
      expect(await t.lockedFor([k])).toBe(0);
      expect(await t.hit(k, RULE)).toBe(0);
      await t.reset(key()); // unknown: harmless
    });

    test("concurrent hits are all counted", async () => {
      const t = await make();
      const k = key();
      const rule = { ...RULE, max: 20 };
      const locks = await Promise.all(Array.from({ length: 20 }, () => t.hit(k, rule)));
      expect(locks.filter((l) => l > 0)).toEqual([RULE.lockMs]);
    });

    test("forgetAfterLock: once the lock ends the count starts afresh", async () => {
      const t = await make();
      const k = key();
      const rule = { max: 2, windowMs: 60_000, lockMs: 30, maxLockMs: 30, forgetAfterLock: true };
      await t.hit(k, rule);
      expect(await t.hit(k, rule)).toBe(30);
      while ((await t.lockedFor([k])) > 0) await Bun.sleep(5); // bounded by the test timeout
      expect(await t.hit(k, rule)).toBe(0);
    });

    test("a lock ends by itself", async () => {
      const t = await make();
      const k = key();
      expect(await t.hit(k, { max: 1, windowMs: 60_000, lockMs: 30, maxLockMs: 30 })).toBe(30);
      // Wait on the condition itself (the lock's end), not a fixed time; the test timeout bounds it.
      while ((await t.lockedFor([k])) > 0) await Bun.sleep(5);
      expect(await t.lockedFor([k])).toBe(0);
    });
  });
}
