import { expect, test } from "bun:test";
import { createRateLimiter } from "./rate-limit.ts";

test("a bucket allows its burst, then refills at the rate", () => {
  let t = 0;
  const rl = createRateLimiter(10, 3, () => t);
  expect([rl.take("a"), rl.take("a"), rl.take("a"), rl.take("a")]).toEqual([true, true, true, false]);
  expect(rl.take("b")).toBe(true);
  t += 100;
  expect(rl.take("a")).toBe(true);
  expect(rl.take("a")).toBe(false);
  t += 10_000;
  expect([rl.take("a"), rl.take("a"), rl.take("a"), rl.take("a")]).toEqual([true, true, true, false]);
});
