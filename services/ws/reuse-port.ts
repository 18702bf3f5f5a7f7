import { readFileSync } from "node:fs";

/** Where Linux (5.14+) keeps the setting; per network namespace. */
const TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";

/** This host's `net.ipv4.tcp_migrate_req` ("0", "1"), or null where there is none (not Linux, or a kernel before 5.14). */
export function tcpMigrateReq(): string | null {
  try {
    return readFileSync(TCP_MIGRATE_REQ, "utf8").trim();
  } catch {
    return null;
  }
}

/**
 * Advice for a process that shares its client port with other gateways (`REUSE_PORT=1`), or null.
 * When one process of a SO_REUSEPORT group closes its listener (it died, or stops), the handshakes
 * the kernel had already queued at it are reset, unless `net.ipv4.tcp_migrate_req` is 1: then they
 * move to another listener of the group. A reconnect storm after a gateway dies sends its clients
 * at exactly that listener in its last moment: measured, 28–675 of 10,000 reconnections failed
 * with ECONNRESET at 0 and none at 1 (docs/operations.md). `setting` is the host's value, or null
 * when it has none (nothing to advise).
 */
export function reusePortAdvice(setting: string | null = tcpMigrateReq()): string | null {
  if (setting !== "0") return null;
  return "net.ipv4.tcp_migrate_req is 0: when a gateway sharing this port dies or stops, the connections the kernel queued at it are reset (clients retry). Set it to 1 on this host (sysctl -w net.ipv4.tcp_migrate_req=1; docs/operations.md)";
}
