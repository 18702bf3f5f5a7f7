import { describe, expect, test } from "bun:test";
import type { UserToken } from "./auth.ts";
import type { Revocations } from "./revocations.ts";
import { createMemoryRevocations } from "./revocations-memory.ts";
import { createTokenGate } from "./token-gate.ts";

const tok = (user: string, ver = 0, id = crypto.randomUUID()): UserToken => ({ user, ver, id, expMs: null, sid: null });

/** Memory revocations that count their reads and can be made to fail. */
function counted() {
  const inner = createMemoryRevocations();
  const calls = { version: 0, isRevoked: 0 };
  let down = false;
  const r: Revocations = {
    ...inner,
    version: (u) => (calls.version++, down ? Promise.reject(new Error("down")) : inner.version(u)),
    isRevoked: (id) => (calls.isRevoked++, down ? Promise.reject(new Error("down")) : inner.isRevoked(id)),
  };
  return { r, inner, calls, setDown: (d: boolean) => void (down = d) };
}

function clocked(cacheMs = 1000) {
  let t = 1_000_000;
  const c = counted();
  const gate = createTokenGate({ revocations: c.r, cacheMs, now: () => t });
  return { ...c, gate, advance: (ms: number) => void (t += ms) };
}

describe("token gate", () => {
  test("a token is valid while its ver equals the user's version and it is not denied", async () => {
    const { gate, inner } = clocked(0);
    await gate.start();
    const minted = tok("alice"); // no ver: 0
    expect(await gate.valid(minted)).toBe(true);
    expect(await gate.valid(tok("alice", 1))).toBe(false); // ahead of the store (e.g. its data was lost)
    await inner.bump("alice");
    expect(await gate.valid(minted)).toBe(false);
    const fresh = tok("alice", 1);
    expect(await gate.valid(fresh)).toBe(true);
    await inner.revokeToken("alice", fresh.id, null);
    expect(await gate.valid(fresh)).toBe(false);
    expect(await gate.valid(tok("alice", 1))).toBe(true);
  });

  test("answers within cacheMs come from the cache: no round trip per check", async () => {
    const { gate, calls, advance } = clocked(1000);
    const t = tok("bob");
    for (let i = 0; i < 50; i++) expect(await gate.valid(t)).toBe(true);
    expect(calls).toEqual({ version: 1, isRevoked: 1 });
    advance(1000);
    expect(await gate.valid(t)).toBe(true);
    expect(calls).toEqual({ version: 2, isRevoked: 2 });
  });

  test("concurrent checks of one user share one read", async () => {
    const { gate, calls } = clocked(1000);
    await Promise.all(Array.from({ length: 20 }, () => gate.valid(tok("carol"))));
    expect(calls.version).toBe(1);
  });

  test("a broadcast revocation overrides the cache at once", async () => {
    const { gate, inner, calls } = clocked(60_000);
    await gate.start();
    const t = tok("dave");
    const other = tok("dave");
    expect(await gate.valid(t)).toBe(true);
    expect(await gate.valid(other)).toBe(true);
    await inner.revokeToken("dave", t.id, null);
    expect(gate.knownRevoked(t)).toBe(true);
    expect(await gate.valid(t)).toBe(false);
    expect(await gate.valid(other)).toBe(true);
    await inner.bump("dave");
    expect(gate.knownRevoked(other)).toBe(true);
    expect(await gate.valid(other)).toBe(false);
    expect(calls.version).toBe(1);
  });

  test("without the broadcast a revocation is seen once the cache entry is older than cacheMs", async () => {
    const { gate, inner, advance } = clocked(1000); // never started: hears no events
    const t = tok("erin");
    expect(await gate.valid(t)).toBe(true);
    await inner.bump("erin");
    expect(await gate.valid(t)).toBe(true); // cached
    advance(1000);
    expect(await gate.valid(t)).toBe(false);
  });

  test("a token newer than the cached version (issued after a bump not heard of yet) is checked against the store", async () => {
    const { gate, inner, calls, setDown } = clocked(60_000); // never started: hears no events
    expect(await gate.valid(tok("gina"))).toBe(true); // caches version 0
    await inner.bump("gina"); // on another instance; its broadcast has not arrived here
    const issued = tok("gina", 1);
    expect(gate.knownRevoked(issued)).toBe(false); // before the check too: newer than the cache is not revoked
    expect(await gate.valid(issued)).toBe(true);
    expect(calls.version).toBe(2);
    expect(await gate.valid(tok("gina", 0))).toBe(false); // and the cache learnt the new version
    expect(await gate.valid(tok("gina", 2))).toBe(false); // ahead of the store: still refused
    await inner.bump("gina");
    setDown(true);
    expect(await gate.valid(tok("gina", 2)).catch((e) => e)).toBeInstanceOf(Error); // unknown, not refused
  });

  test("store down: a stale cached answer is used; with none the check fails", async () => {
    const { gate, setDown, advance } = clocked(1000);
    const t = tok("frank");
    expect(await gate.valid(t)).toBe(true);
    advance(5000);
    setDown(true);
    expect(await gate.valid(t)).toBe(true);
    expect(await gate.valid(tok("nobody-cached")).catch((e) => e)).toBeInstanceOf(Error);
  });

  test("the cache is bounded", async () => {
    const c = counted();
    const gate = createTokenGate({ revocations: c.r, cacheMs: 60_000, maxEntries: 10 });
    for (let i = 0; i < 100; i++) await gate.valid(tok(`u${i}`));
    c.calls.version = 0;
    await gate.valid(tok("u0"));
    expect(c.calls.version).toBe(1); // evicted, read again
  });
});
