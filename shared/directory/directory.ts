/**
 * The directory role: which gateway instances hold which users, and which instances are alive.
 * Implemented over Redis (directory-redis.ts), in memory (directory-memory.ts) and as an HTTP client
 * of services/discover (directory-http.ts); one contract suite (directory.contract.ts) runs on all.
 */

export interface InstanceInfo {
  /** Unique per process start. */
  id: string;
  /** Base URL other instances use to reach it (PUBLIC_URL). */
  url: string;
}

/** How long an instance stays alive without a heartbeat. Heartbeat at a third of this. */
export const INSTANCE_TTL_MS = 6000;

export interface Directory {
  /**
   * Marks the instance alive for `ttlMs`. Returns false when the directory did not hold the
   * instance (first beat, expired, or the directory lost its data): the caller must then announce
   * all of its users again with setPresence.
   */
  heartbeat(instance: InstanceInfo, ttlMs: number): Promise<boolean>;
  /** Records that `online` users now have a connection on the instance and `offline` ones no longer do. */
  setPresence(instanceId: string, online: string[], offline: string[]): Promise<void>;
  /**
   * For each user, the alive instances holding a connection of theirs ([] when offline). An instance
   * whose heartbeat lapsed is never returned, so a dead instance stops being routed to within its TTL.
   */
  lookup(users: string[]): Promise<Record<string, InstanceInfo[]>>;
  /** Forgets the instance and all its users at once (graceful shutdown). */
  removeInstance(instanceId: string): Promise<void>;
  /**
   * The change feed: reports users whose location may have changed (setPresence, removeInstance,
   * an instance forgotten or re-registered), once lookup shows the change. `onChange(null)` means
   * changes may have been missed (the feed connected, reconnected or dropped): drop whatever was
   * cached. A cache of lookups may be trusted only while `live()`; an instance whose heartbeat
   * lapsed is reported when the directory forgets it, so a cache also bounds the age of entries.
   */
  watch(onChange: (users: string[] | null) => void): DirectoryFeed;
}

export interface DirectoryFeed {
  /** True while changes are being received. */
  live(): boolean;
  stop(): void;
}

export type Claim = { state: "new" } | { state: "pending" } | { state: "done"; ts: number };

/** How long a claimed-but-unconfirmed id blocks a resend, and how long a done id is remembered. */
export const CLAIM_PENDING_MS = 10_000;
export const CLAIM_DONE_MS = 24 * 3600_000;

/**
 * The idempotency ledger: makes a resend of the same (sender, client id) map to one message on any
 * instance. `claim` atomically marks new ids pending and reports the state of known ones.
 */
export interface Ledger {
  claim(msgIds: string[]): Promise<Record<string, Claim>>;
  /** Marks ids acknowledged, with the timestamp their ack carried. */
  complete(done: Array<{ msgId: string; ts: number }>): Promise<void>;
  /** Drops pending claims whose publish failed, so a retry may proceed at once. */
  release(msgIds: string[]): Promise<void>;
}

export class DirectoryUnavailable extends Error {}
