import type { Subprocess } from "bun";
import type { DriverConfig, DriverStatus } from "./driver.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

/** A driver process (scripts/conns/driver.ts) minting its tokens; send it `{ cmd: "start" }` once `minted` is true. */
export interface DriverHandle {
  proc: Subprocess;
  /** Its latest report, null before the first. */
  status: DriverStatus | null;
  /** Its tokens are minted: it waits for `start`. */
  minted: boolean;
}

export function spawnDriver(cfg: DriverConfig): DriverHandle {
  const entry: DriverHandle = { proc: null as unknown as Subprocess, status: null, minted: false };
  entry.proc = Bun.spawn(["bun", "run", "scripts/conns/driver.ts"], {
    cwd: ROOT,
    env: { ...process.env, CONNS_DRIVER: JSON.stringify(cfg) },
    stdin: "ignore",
    stdout: "inherit",
    stderr: "inherit",
    ipc(m: DriverStatus | { type: "minted" }) {
      if (m.type === "minted") entry.minted = true;
      else entry.status = m;
    },
  });
  return entry;
}
