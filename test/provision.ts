// Installs what a test run needs and lacks (the server binaries, Chromium) with apt-get, so that
// `bun run test` is the one command a fresh Debian or Ubuntu machine needs.
//
// Guarantees:
// - Nothing present is installed; nothing at all runs when nothing is missing.
// - As root, or where `sudo -n` works, it prints one line naming the packages and why, installs
//   them with `apt-get update` and `apt-get install -y`, and checks that nothing is missing after.
//   A policy-rc.d that refuses every start keeps the packages' system services from starting
//   (the tests run their own servers) and is removed afterwards; on systemd they are disabled.
// - Without root or sudo it installs nothing and throws a ProvisionError whose message, one line,
//   lists every missing piece and the single `apt-get install` command that fixes them all.

import { spawnSync, which } from "bun";
import { existsSync } from "node:fs";

/** A binary the run needs, and the Debian package that provides it. */
export interface Missing {
  binary: string;
  pkg: string;
}

export interface ProvisionOptions {
  /** What is missing right now (called again after installing). */
  missing: () => Missing[];
  /** The apt-get command; default `apt-get` on PATH. */
  aptGet?: string;
  /** The sudo command tried when not root; default `sudo` on PATH. */
  sudo?: string;
  /** Default: this process's uid. */
  uid?: number;
  /** Default: /usr/sbin/policy-rc.d. */
  policyRcD?: string;
  /** Whether to disable the new packages' units with systemctl; default: /run/systemd/system exists. */
  systemd?: boolean;
  /** Environment of the commands; default this process's. */
  env?: Record<string, string | undefined>;
  log?: (line: string) => void;
}

export class ProvisionError extends Error {
  override name = "ProvisionError";
}

const UNITS: Record<string, string[]> = {
  "redis-server": ["redis-server"],
  "rabbitmq-server": ["rabbitmq-server", "epmd.socket", "epmd.service"],
  postgresql: ["postgresql"],
};
const POLICY = "#!/bin/sh\n# installed by relay-chat's test set-up while it installs packages\nexit 101\n";

/** Installs the packages of opts.missing() and returns them (empty when nothing was missing). */
export function provision(opts: ProvisionOptions): string[] {
  const gaps = opts.missing();
  if (!gaps.length) return [];
  const pkgs = [...new Set(gaps.map((m) => m.pkg))];
  const binaries = gaps.map((m) => m.binary).join(", ");
  const env = opts.env ?? process.env;
  const installLine = `apt-get install -y ${pkgs.join(" ")}`;

  const prefix = privilege(opts, env);
  if (!prefix) {
    throw new ProvisionError(
      `this test run needs ${binaries}, not installed (installing needs root or passwordless sudo); as root, run: ${installLine}`,
    );
  }
  const aptGet = opts.aptGet ?? which("apt-get", { PATH: env.PATH ?? "" });
  if (!aptGet) throw new ProvisionError(`this test run needs ${binaries}, not installed, and there is no apt-get here: install ${pkgs.join(" ")} with this system's package manager`);

  const as = prefix.length ? "with sudo" : "as root";
  (opts.log ?? console.error)(`test set-up: installing ${pkgs.join(" ")} (apt-get, ${as}): this test run needs ${binaries}, not installed`);
  const run = (cmd: string[], what: string) => {
    const r = spawnSync([...prefix, ...cmd], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) {
      const out = `${r.stdout.toString()}${r.stderr.toString()}`.trim().split("\n").slice(-20).join("\n");
      throw new ProvisionError(`test set-up: ${what} failed (${r.exitCode === null ? `signal ${r.signalCode}` : `exit ${r.exitCode}`})${out ? `:\n${out}` : ""}`);
    }
  };

  const policy = opts.policyRcD ?? "/usr/sbin/policy-rc.d";
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) run(["sh", "-c", 'printf %s "$1" > "$2" && chmod 755 "$2"', "sh", POLICY, policy], `writing ${policy}`);
  let failed = false;
  try {
    const apt = ["env", "DEBIAN_FRONTEND=noninteractive", aptGet, "-q", "-y", "-o", "Dpkg::Use-Pty=0"];
    run([...apt, "update"], "apt-get update");
    run([...apt, "install", ...pkgs], installLine);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // a failed removal must not hide why apt-get failed
    if (ownPolicy) {
      try {
        run(["rm", "-f", policy], `removing ${policy}`);
      } catch (err) {
        if (!failed) throw err;
      }
    }
  }
  if (opts.systemd ?? existsSync("/run/systemd/system")) {
    const units = pkgs.flatMap((p) => UNITS[p] ?? []);
    if (units.length) spawnSync([...prefix, "systemctl", "disable", "--now", ...units], { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  }

  const left = opts.missing();
  if (left.length) throw new ProvisionError(`test set-up: ${installLine} succeeded, yet ${left.map((m) => m.binary).join(", ")} is still missing`);
  return pkgs;
}

/** The argv prefix that runs a command as root ([] when already root), or null when none works. */
function privilege(opts: ProvisionOptions, env: Record<string, string | undefined>): string[] | null {
  if ((opts.uid ?? process.getuid?.()) === 0) return [];
  const sudo = opts.sudo ?? which("sudo", { PATH: env.PATH ?? "" });
  if (!sudo) return null;
  try {
    const probe = spawnSync([sudo, "-n", "true"], { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    return probe.exitCode === 0 ? [sudo, "-n"] : null;
  } catch {
    return null; // not executable
  }
}
