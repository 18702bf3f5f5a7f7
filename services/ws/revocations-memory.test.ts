import { expect, test } from "bun:test";
import { revocationsContract } from "./revocations.contract.ts";
import { createMemoryRevocations } from "./revocations-memory.ts";

revocationsContract("memory", async () => {
  const r = createMemoryRevocations();
  return { a: r, b: r, cleanup: async () => {} };
});

test("memory revocations: a denied token is forgotten at its expiry (manual clock)", async () => {
  let t = 1000;
  const r = createMemoryRevocations({ now: () => t });
  await r.revokeToken("u", "id", 2000);
  t = 1999;
  expect(await r.isRevoked("id")).toBe(true);
  t = 2000;
  expect(await r.isRevoked("id")).toBe(false);
});
