import { createHash, timingSafeEqual } from "node:crypto";

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearer(header: string | undefined | null): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * Whether `given` is the shared secret, in constant time: both sides are compared as SHA-256
 * digests, so neither the secret's length nor a common prefix shows in the timing.
 */
export function secretMatches(given: string | null | undefined, expected: string): boolean {
  if (given === null || given === undefined) return false;
  return timingSafeEqual(digest(given), digest(expected));
}
