import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { RevocationEvent, Revocations } from "./revocations.ts";

export interface RevocationsUnderTest {
  /** Two handles on one shared store, as two gateway instances hold them. */
  a: Revocations;
  b: Revocations;
  cleanup: () => Promise<void>;
}

const user = () => `u-${crypto.randomUUID().slice(0, 12)}`;

/** Resolves with the first event matching `pred` that `r` hears after subscribing. */
async function listen(r: Revocations, pred: (e: RevocationEvent) => boolean) {
  let resolve!: (e: RevocationEvent) => void;
  const heard = new Promise<RevocationEvent>((r) => (resolve = r));
  const all: RevocationEvent[] = [];
  const off = await r.subscribe((e) => {
    all.push(e);
    if (pred(e)) resolve(e);
  });
  return { heard, all, off };
}

/** The behaviour every Revocations implementation must show. */
export function revocationsContract(name: string, make: () => Promise<RevocationsUnderTest>) {
  describe(`revocations contract: ${name}`, () => {
    let sut: RevocationsUnderTest;
    beforeEach(async () => {
      sut = await make();
    });
    afterEach(() => sut.cleanup());

    test("a user's version starts at 0 and each bump raises it by one, seen by every instance", async () => {
      const u = user();
      expect(await sut.a.version(u)).toBe(0);
      expect(await sut.a.bump(u)).toBe(1);
      expect(await sut.b.bump(u)).toBe(2);
      expect(await sut.a.version(u)).toBe(2);
      expect(await sut.b.version(u)).toBe(2);
      expect(await sut.b.version(user())).toBe(0);
    });

    test("a revoked token id is revoked on every instance; others are not", async () => {
      const u = user();
      const id = crypto.randomUUID();
      expect(await sut.b.isRevoked(id)).toBe(false);
      await sut.a.revokeToken(u, id, Date.now() + 60_000);
      expect(await sut.b.isRevoked(id)).toBe(true);
      expect(await sut.b.isRevoked(crypto.randomUUID())).toBe(false);
      const forever = crypto.randomUUID();
      await sut.a.revokeToken(u, forever, null);
      expect(await sut.b.isRevoked(forever)).toBe(true);
    });

    test("a revocation ends when the token would have expired anyway", async () => {
      const u = user();
      const past = crypto.randomUUID();
      await sut.a.revokeToken(u, past, Date.now() - 1000);
      expect(await sut.b.isRevoked(past)).toBe(false);
      const soon = crypto.randomUUID();
      await sut.a.revokeToken(u, soon, Date.now() + 50);
      while (await sut.b.isRevoked(soon)) await Bun.sleep(5); // bounded by the test timeout
      expect(await sut.b.isRevoked(soon)).toBe(false);
    });

    test("bumps and token revocations on one instance are heard on the other", async () => {
      const u = user();
      const id = crypto.randomUUID();
      const bump = await listen(sut.b, (e) => e.user === u && "version" in e);
      const tok = await listen(sut.b, (e) => e.user === u && "tokenId" in e);
      await sut.a.bump(u);
      await sut.a.revokeToken(u, id, Date.now() + 60_000);
      expect(await bump.heard).toEqual({ user: u, version: 1 });
      expect(await tok.heard).toEqual({ user: u, tokenId: id });
      bump.off();
      tok.off();
    });

    test("an unsubscribed listener hears nothing more", async () => {
      const u = user();
      const gone = await listen(sut.b, () => true);
      gone.off();
      const stays = await listen(sut.b, (e) => e.user === u);
      await sut.a.bump(u);
      await stays.heard;
      expect(gone.all.filter((e) => e.user === u)).toEqual([]);
      stays.off();
    });
  });
}
