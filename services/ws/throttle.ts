/**
 * The throttle role: failure counters with lockouts, shared by every gateway instance (Redis in
 * the distributed topology, memory in `bun run dev`). Keys are opaque strings chosen by the caller
 * (`login:user:<name>`, `login:addr:<address>`, `register:addr:<address>`).
 */
export interface Throttle {
  /** Milliseconds until the longest lock among `keys` ends; 0 when none is locked. */
  lockedFor(keys: string[]): Promise<number>;
  /**
   * Counts one event for `key` in its window (the window starts at the first event). From the
   * `max`-th event on, the key is locked for `lockMs * 2^(count - max)`, at most `maxLockMs`, and
   * the count is kept at least as long as the lock plus a window, so repeated failures after a
   * lock ends lock for longer — unless `forgetAfterLock`, which forgets the count when the lock
   * ends (a plain rate limit). Returns the lock now in force for this key (0: none).
   */
  hit(key: string, rule: ThrottleRule): Promise<number>;
  /** Forgets the key's count and lock (a successful login resets its username). */
  reset(key: string): Promise<void>;
}

export interface ThrottleRule {
  max: number;
  windowMs: number;
  lockMs: number;
  maxLockMs: number;
  forgetAfterLock?: boolean;
}

/** The lock that the `count`-th event starts under `rule` (0 below the threshold). */
export function lockAfter(count: number, rule: ThrottleRule): number {
  if (count < rule.max) return 0;
  return Math.floor(Math.min(rule.maxLockMs, rule.lockMs * 2 ** Math.min(count - rule.max, 40)));
}
