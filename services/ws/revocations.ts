/**
 * The revocation role: per-user token versions and a denylist of single tokens, shared by every
 * gateway (Redis in the distributed topology, memory in `bun run dev`), with a broadcast so that
 * every instance hears of a revocation at once.
 *
 * A token is valid only while its `ver` claim (0 when absent) equals the user's version, and its id
 * is not on the denylist. Versions only grow.
 */
export interface Revocations {
  /** The user's current version (0 for a user never revoked). */
  version(user: string): Promise<number>;
  /** Ends every token of the user issued so far; returns the new version. Broadcast to subscribers. */
  bump(user: string): Promise<number>;
  /** Ends one token (by id) until `untilMs` (epoch ms; forever when null). Broadcast to subscribers. */
  revokeToken(user: string, tokenId: string, untilMs: number | null): Promise<void>;
  isRevoked(tokenId: string): Promise<boolean>;
  /**
   * Calls `fn` for every bump and token revocation on any instance, this one included, from now
   * on (best effort: an event sent while this instance was disconnected may be missed, so
   * callers cache for a bounded time only). Resolves, with a function that unsubscribes, once
   * the subscription is in place (or its first attempt failed; it is retried on reconnect).
   */
  subscribe(fn: (e: RevocationEvent) => void): Promise<() => void>;
}

export type RevocationEvent = { user: string; version: number } | { user: string; tokenId: string };
