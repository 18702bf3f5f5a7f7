import type { UserToken } from "./auth.ts";
import type { RevocationEvent, Revocations } from "./revocations.ts";

/**
 * Whether a verified token is still valid: its version equals the user's and it is not denied.
 * Answers come from a local cache for up to `cacheMs`; the revocations broadcast updates the cache
 * at once, so a revocation made on any instance takes effect here as soon as its event arrives
 * (and within `cacheMs` even if the event is lost). When the store is unreachable, a cached answer
 * of any age is used; without one the check fails (the caller answers 503).
 */
export function createTokenGate(opts: { revocations: Revocations; cacheMs: number; now?: () => number; maxEntries?: number }) {
  const now = opts.now ?? Date.now;
  const max = opts.maxEntries ?? 100_000;
  const versions = new Map<string, { v: number; at: number }>();
  const allowed = new Map<string, number>(); // token id -> when it was last found not denied
  const denied = new Map<string, true>(); // heard of by broadcast
  const pending = new Map<string, Promise<unknown>>();
  const put = <K, V>(m: Map<K, V>, k: K, v: V) => {
    m.delete(k);
    m.set(k, v);
    if (m.size > max) m.delete(m.keys().next().value as K);
  };
  const once = <T>(key: string, f: () => Promise<T>): Promise<T> => {
    let p = pending.get(key) as Promise<T> | undefined;
    if (!p) {
      p = f().finally(() => pending.delete(key));
      pending.set(key, p);
    }
    return p;
  };
  const fresh = (at: number) => now() - at < opts.cacheMs;

  /** `ahead`: the caller holds a token newer than the cache: the cache is stale, read the store. */
  async function versionOf(user: string, ahead = false): Promise<number> {
    const c = versions.get(user);
    if (c && fresh(c.at) && !ahead) return c.v;
    try {
      const v = await once(`${ahead ? "a" : "v"}:${user}`, () => opts.revocations.version(user));
      // Versions only grow: a read that started before a broadcast must not lower what it told.
      const next = Math.max(v, versions.get(user)?.v ?? 0);
      put(versions, user, { v: next, at: now() });
      return next;
    } catch (err) {
      if (c && !ahead) return c.v; // known to be stale when ahead: unavailable, not refused
      throw err;
    }
  }

  async function isDenied(id: string): Promise<boolean> {
    if (denied.has(id)) return true;
    const at = allowed.get(id);
    if (at !== undefined && fresh(at)) return false;
    try {
      const r = await once(`t:${id}`, () => opts.revocations.isRevoked(id));
      if (denied.has(id)) return true;
      if (r) put(denied, id, true);
      else put(allowed, id, now());
      return r;
    } catch (err) {
      if (at !== undefined) return false;
      throw err;
    }
  }

  const onEvent = (e: RevocationEvent) => {
    if ("version" in e) put(versions, e.user, { v: Math.max(e.version, versions.get(e.user)?.v ?? 0), at: now() });
    else {
      allowed.delete(e.tokenId);
      put(denied, e.tokenId, true);
    }
  };
  let off: (() => void) | null = null;

  return {
    /** Subscribes to the broadcast; resolves once subscribed. */
    async start() {
      off ??= await opts.revocations.subscribe(onEvent);
    },
    stop() {
      off?.();
      off = null;
    },
    async valid(t: UserToken): Promise<boolean> {
      let [v, d] = await Promise.all([versionOf(t.user), isDenied(t.id)]);
      // Versions only grow and tokens are issued after the bump they carry: a token newer than the
      // cache was issued after a bump this instance has not heard of yet (a password changed
      // elsewhere a moment ago, the new session connecting here). Ask the store, not the cache.
      if (t.ver > v) v = await versionOf(t.user, true);
      return t.ver === v && !d;
    },
    /** Without a round trip: true when the cache already knows the token is revoked. */
    knownRevoked(t: Pick<UserToken, "user" | "ver" | "id">): boolean {
      const c = versions.get(t.user);
      return denied.has(t.id) || (c !== undefined && c.v > t.ver); // a newer token is not revoked: the cache is behind
    },
  };
}
export type TokenGate = ReturnType<typeof createTokenGate>;
