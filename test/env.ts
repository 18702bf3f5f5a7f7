import type { Infra } from "../scripts/infra.ts";

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
