import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { reusePortAdvice, TCP_MIGRATE_REQ } from "./reuse-port.ts";

test("advises net.ipv4.tcp_migrate_req=1 when it is 0; nothing when it is 1, unreadable or absent", () => {
  expect(reusePortAdvice(() => "0\n")).toContain("sysctl -w net.ipv4.tcp_migrate_req=1");
  expect(reusePortAdvice(() => "1\n")).toBeNull();
  expect(
    reusePortAdvice(() => {
      throw Object.assign(new Error("ENOENT"), { code: "ENOENT" });
    }),
  ).toBeNull();
});

test("reads this host's setting by default", () => {
  const here = existsSync(TCP_MIGRATE_REQ) ? readFileSync(TCP_MIGRATE_REQ, "utf8").trim() : null;
  expect(reusePortAdvice() === null).toBe(here !== "0");
});
