import type { RevocationEvent, Revocations } from "./revocations.ts";

/** The embedded revocations: one process's maps; events reach this process's subscribers. */
export function createMemoryRevocations(opts: { now?: () => number } = {}): Revocations {
  const now = opts.now ?? Date.now;
  const versions = new Map<string, number>();
  const denied = new Map<string, number>(); // token id -> until (Infinity: forever)
  const listeners = new Set<(e: RevocationEvent) => void>();
  const emit = (e: RevocationEvent) => {
    for (const fn of listeners) fn(e);
  };
  const sweep = () => {
    const t = now();
    for (const [id, until] of denied) if (until <= t) denied.delete(id);
  };
  return {
    async version(user) {
      return versions.get(user) ?? 0;
    },
    async bump(user) {
      const v = (versions.get(user) ?? 0) + 1;
      versions.set(user, v);
      emit({ user, version: v });
      return v;
    },
    async revokeToken(user, tokenId, untilMs) {
      if (denied.size > 10_000) sweep();
      denied.set(tokenId, untilMs ?? Infinity);
      emit({ user, tokenId });
    },
    async isRevoked(tokenId) {
      const until = denied.get(tokenId);
      return until !== undefined && until > now();
    },
    async subscribe(fn) {
      listeners.add(fn);
      return () => void listeners.delete(fn);
    },
  };
}
