import type { Infra } from "../scripts/infra.ts";

/** Where the browser test finds Chromium unless CHROMIUM_PATH says otherwise (Debian's package puts it here). */
export const DEFAULT_CHROMIUM = "/usr/bin/chromium";

let current: Infra | null = null;

/**
 * The servers the test preload started for this run, or null when REDIS_URL, AMQP_URL and
 * DATABASE_URL were all given. Fault tests stop, kill and restart them through it; a server a
 * test stops must be started again by that test.
 */
export function testInfra(): Infra | null {
  return current;
}

export function setTestInfra(infra: Infra | null): void {
  current = infra;
}
