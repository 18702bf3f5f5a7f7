import { expect, test } from "bun:test";
import { reusePortAdvice, tcpMigrateReq } from "./reuse-port.ts";

test("advises net.ipv4.tcp_migrate_req=1 when it is 0; nothing when it is 1, unreadable or absent", () => {
  expect(reusePortAdvice("0")).toContain("sysctl -w net.ipv4.tcp_migrate_req=1");
  expect(reusePortAdvice("1")).toBeNull();
  expect(reusePortAdvice(null)).toBeNull();
});

test("reads this host's setting by default", () => {
  expect(reusePortAdvice() === null).toBe(tcpMigrateReq() !== "0");
});
