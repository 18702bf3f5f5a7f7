import { afterAll, beforeEach, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Missing, type ProvisionOptions, ProvisionError, provision } from "./provision.ts";

// A fake apt-get on PATH records its calls and "installs" a package by creating installed/<pkg>;
// the binaries the run needs are "present" when their package's file is there.
const root = mkdtempSync(join(tmpdir(), "relay-chat-provision-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fakeBin = join(root, "bin");
const installed = join(root, "installed");
const calls = join(root, "apt-calls");
const policy = join(root, "policy-rc.d");
mkdirSync(fakeBin);

function script(name: string, body: string) {
  writeFileSync(join(fakeBin, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(fakeBin, name), 0o755);
}
// fails like apt-get when asked to install while the packages' services could start
script(
  "apt-get",
  `echo "$DEBIAN_FRONTEND $*" >> "$CALLS"
case " $* " in *" install "*) [ -x "$POLICY" ] && ! "$POLICY" || { echo "no policy-rc.d refusing starts" >&2; exit 9; } ;; esac
mode=
for a; do
  if [ "$mode" = install ] && [ -z "$NO_INSTALL" ]; then : > "$INSTALLED/$a"; fi
  [ "$a" = install ] && mode=install
done
[ -n "$APT_OUTPUT" ] && echo "$APT_OUTPUT" >&2
exit \${APT_EXIT:-0}`,
);
script("sudo-yes", `[ "$1" = -n ] || exit 2; shift; echo sudo >> "$CALLS"; exec "$@"`);
script("sudo-no", `echo "sudo: a password is required" >&2; exit 1`);

const NEEDED: Missing[] = [
  { binary: "redis-server", pkg: "redis-server" },
  { binary: "rabbitmq-server", pkg: "rabbitmq-server" },
  { binary: "epmd", pkg: "erlang-base" },
  { binary: "initdb", pkg: "postgresql" },
  { binary: "pg_ctl", pkg: "postgresql" },
  { binary: "/usr/bin/chromium", pkg: "chromium" },
];
const missing = () => NEEDED.filter((m) => !existsSync(join(installed, m.pkg)));
const have = (...pkgs: string[]) => pkgs.forEach((p) => writeFileSync(join(installed, p), ""));
const aptCalls = () => (existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : []);

let lines: string[] = [];
function run(extra: Partial<ProvisionOptions> & { env?: Record<string, string> } = {}) {
  const env = { PATH: `${fakeBin}:/usr/bin:/bin`, CALLS: calls, POLICY: policy, INSTALLED: installed, ...extra.env };
  return provision({ missing, uid: 0, policyRcD: policy, systemd: false, log: (l) => lines.push(l), ...extra, env });
}

beforeEach(() => {
  rmSync(installed, { recursive: true, force: true });
  mkdirSync(installed);
  rmSync(calls, { force: true });
  rmSync(policy, { force: true });
  lines = [];
});

test("installs exactly the missing packages, each once, with one line saying what and why", () => {
  have("rabbitmq-server", "erlang-base", "chromium");
  expect(run()).toEqual(["redis-server", "postgresql"]);
  expect(readdirSync(installed).sort()).toEqual(["chromium", "erlang-base", "postgresql", "rabbitmq-server", "redis-server"]);
  expect(aptCalls()).toEqual(["noninteractive -q -y -o Dpkg::Use-Pty=0 update", "noninteractive -q -y -o Dpkg::Use-Pty=0 install redis-server postgresql"]);
  expect(lines).toEqual(["test set-up: installing redis-server postgresql (apt-get, as root): this test run needs redis-server, initdb, pg_ctl, not installed"]);
  expect(existsSync(policy)).toBe(false); // the policy-rc.d it wrote is gone again
});

test("nothing missing: no apt-get, no output", () => {
  have("redis-server", "rabbitmq-server", "erlang-base", "postgresql", "chromium");
  expect(run()).toEqual([]);
  expect(aptCalls()).toEqual([]);
  expect(lines).toEqual([]);
});

test("a policy-rc.d that was already there stays", () => {
  writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  have("redis-server", "rabbitmq-server", "erlang-base", "postgresql");
  expect(run()).toEqual(["chromium"]);
  expect(readFileSync(policy, "utf8")).toBe("#!/bin/sh\nexit 101\n");
});

test("with passwordless sudo when not root", () => {
  have("redis-server", "rabbitmq-server", "erlang-base", "postgresql");
  expect(run({ uid: 1000, sudo: join(fakeBin, "sudo-yes") })).toEqual(["chromium"]);
  expect(aptCalls().filter((c) => c === "sudo").length).toBeGreaterThan(0);
  expect(lines[0]).toContain("(apt-get, with sudo)");
  expect(existsSync(policy)).toBe(false);
});

test("neither root nor sudo: installs nothing and names every gap and the one line that fixes them", () => {
  have("rabbitmq-server", "chromium");
  const noSudo = [{ sudo: join(fakeBin, "sudo-no") }, { sudo: join(root, "no-such-sudo") }, { env: { PATH: join(root, "empty") } }];
  for (const how of noSudo) {
    expect(() => run({ uid: 1000, ...how })).toThrow(
      new ProvisionError(
        "this test run needs redis-server, epmd, initdb, pg_ctl, not installed (installing needs root or passwordless sudo); as root, run: apt-get install -y redis-server erlang-base postgresql",
      ),
    );
  }
  expect(aptCalls()).toEqual([]);
});

test("apt-get failing: a clear error with its exit code and output, and the policy-rc.d removed", () => {
  expect(() => run({ env: { APT_EXIT: "100", APT_OUTPUT: "E: Unable to locate package redis-server" } })).toThrow(
    new ProvisionError("test set-up: apt-get update failed (exit 100):\nE: Unable to locate package redis-server"),
  );
  expect(existsSync(policy)).toBe(false);
  expect(readdirSync(installed)).toEqual([]);
});

test("apt-get succeeding without installing: says what is still missing", () => {
  have("redis-server", "rabbitmq-server", "erlang-base", "chromium");
  expect(() => run({ env: { NO_INSTALL: "1" } })).toThrow(
    new ProvisionError("test set-up: apt-get install -y postgresql succeeded, yet initdb, pg_ctl is still missing"),
  );
});

test("no apt-get on this system: names the packages for another package manager", () => {
  have("redis-server", "rabbitmq-server", "erlang-base", "chromium");
  expect(() => run({ env: { PATH: join(root, "empty") } })).toThrow(
    new ProvisionError("this test run needs initdb, pg_ctl, not installed, and there is no apt-get here: install postgresql with this system's package manager"),
  );
  expect(() => run({ aptGet: join(root, "no-apt-get") })).toThrow(/apt-get update failed \(exit 127\):\n.*no-apt-get/);
});
