import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { cpuMicrosPer, cpuSeconds, cpuSnapshot, formatCpuMicros, purgeDelays, runQueueWaitSeconds, type CpuSnapshot } from "./bench/cpu.ts";
import { HELP, parseBenchOptions, UsageError } from "./bench/options.ts";

const ROOT = join(import.meta.dir, "..");

/** Runs the bench's entry with `args`; a usage error must answer before any stack starts (bounded by the timeout). */
async function bench(...args: string[]) {
  const proc = Bun.spawn(["bun", "run", "scripts/bench.ts", ...args], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: 15_000, killSignal: "SIGKILL" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

describe("bench command line", () => {
  test("--help documents every option and exits 0", async () => {
    const r = await bench("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${HELP}\n`);
    for (const o of ["--target", "--compare", "--users", "--inflight", "--rate", "--duration", "--grace", "--warmup", "--instances", "--peer-engine", "--ws", "--jwt-secret", "--database-url", "--json", "--help"]) {
      expect(HELP).toMatch(new RegExp(`^  ${o} `, "m"));
    }
  });

  test.each([
    [["--bad"], /Unknown option '--bad'/],
    [["--target", "kafka"], /--target must be one of relay, socketio \(got "kafka"\)/],
    [["--users", "ten"], /--users must be a whole number from 2 to 20000 \(got "ten"\)/],
    [["--users", "7"], /--users must be even/],
    [["--duration", "0"], /--duration must be a whole number from 1 to 3600/],
    [["--warmup=-1"], /--warmup must be a whole number from 0 to 600 \(got "-1"\)/],
    [["--warmup", "5s"], /--warmup must be a whole number from 0 to 600/],
    [["--rate=-5"], /--rate must be a number from 1 to 1000000/],
    [["--rate", "1e9"], /--rate must be a number from 1 to 1000000/],
    [["--rate"], /--rate/],
    [["--rate", "1000", "--inflight", "5"], /--rate \(open loop\) and --inflight \(closed loop\) exclude each other/],
    [["--peer-engine", "deno"], /--peer-engine must be one of node, bun \(got "deno"\)/],
    [["--compare", "--target", "relay"], /--compare runs both targets/],
    [["--ws", "http://127.0.0.1:1,ftp://x"], /--ws entries must be http\(s\) URLs/],
  ])("%p is refused with exit 2 and a message naming it", async (args, message) => {
    const r = await bench(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe("");
  });

  test("defaults and the two loops", () => {
    const env = {};
    expect(parseBenchOptions([], env)).toMatchObject({ targets: ["relay"], compare: false, users: 100, inflight: 5, rate: null, duration: 15, grace: 10, warmup: 0, instances: 2, peerEngine: "node", ws: null });
    expect(parseBenchOptions(["--warmup", "10"], env).warmup).toBe(10);
    expect(parseBenchOptions(["--compare", "--users", "1000", "--duration", "10"], env)).toMatchObject({ targets: ["socketio", "relay"], users: 1000, duration: 10 });
    expect(parseBenchOptions(["--target", "socketio", "--rate", "5000"], env)).toMatchObject({ targets: ["socketio"], inflight: null, rate: 5000 });
    expect(() => parseBenchOptions(["--ws", "http://a:1,http://b:2"], env)).toThrow(UsageError);
    expect(parseBenchOptions(["--target", "socketio", "--ws", "http://a:1,http://b:2", "--jwt-secret", "s"], env).ws).toEqual(["http://a:1", "http://b:2"]);
  });
});

describe("cpu metering", () => {
  test("counts a process tree's CPU, children included", async () => {
    // a shell whose child spins for 0.4 s of CPU, then exits (its time moves to the shell's cutime)
    const proc = Bun.spawn(["sh", "-c", `bun -e 'while (process.cpuUsage().user < 400000) {}' ; sleep 30`], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    try {
      const procs = [{ name: "tree", pid: proc.pid }];
      const before = cpuSnapshot(procs);
      const until = Date.now() + 10_000;
      let used = 0;
      while (Date.now() < until && used < 0.35) {
        await Bun.sleep(100);
        used = cpuSeconds(before, cpuSnapshot(procs)).tree!;
      }
      expect(used).toBeGreaterThanOrEqual(0.35);
      expect(cpuSeconds(before, before)).toEqual({ tree: 0 });
      expect(runQueueWaitSeconds(before, cpuSnapshot(procs)).tree).toBeGreaterThanOrEqual(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });

  test("leaves out the excluded processes (the bench's own database session)", async () => {
    const proc = Bun.spawn(["bun", "-e", "while (process.cpuUsage().user < 400000) {} await Bun.sleep(30000)"], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    try {
      const procs = [{ name: "tree", pid: proc.pid }];
      const before = cpuSnapshot(procs);
      const beforeExcluded = cpuSnapshot(procs, [proc.pid]);
      const until = Date.now() + 10_000;
      while (Date.now() < until && cpuSeconds(before, cpuSnapshot(procs)).tree! < 0.2) await Bun.sleep(100);
      expect(cpuSeconds(before, cpuSnapshot(procs)).tree).toBeGreaterThanOrEqual(0.2);
      expect(cpuSeconds(beforeExcluded, cpuSnapshot(procs, [proc.pid])).tree).toBe(0);
    } finally {
      proc.kill("SIGKILL");
    }
  });
});

describe("cpu per item", () => {
  test("divides each tree's CPU by the items, sums them, and prints the largest first", () => {
    const snap = (ticks: Record<string, number>): CpuSnapshot => new Map(Object.entries(ticks).map(([name, t]) => [name, { ticks: new Map([[1, t]]), waitNs: new Map() }]));
    const tick = 1 / cpuSeconds(snap({ x: 0 }), snap({ x: 1 })).x!; // ticks per second on this host
    const c = cpuMicrosPer(snap({ ws1: 0, redis: 0 }), snap({ ws1: 2 * tick, redis: tick }), 10_000);
    expect(c).toEqual({ total: 300, perProcess: { ws1: 200, redis: 100 } });
    expect(formatCpuMicros(c)).toBe("300 µs (ws1 200, redis 100)");
    expect(cpuMicrosPer(snap({ a: 0 }), snap({ a: tick }), 0).total).toBe(1_000_000); // no items: per one, not a division by zero
  });
});

describe("allocator setting per process", () => {
  test("reads MIMALLOC_PURGE_DELAY (and MIMALLOC_PURGE_HOLES when set) of Bun processes, names mimalloc's default when unset, leaves other programs out", async () => {
    const hold = "await Bun.sleep(5000)";
    const env = { ...process.env };
    delete env.MIMALLOC_PURGE_DELAY;
    const set = Bun.spawn(["bun", "-e", hold], { env: { ...env, MIMALLOC_PURGE_DELAY: "-1" }, stdout: "ignore", stderr: "ignore" });
    const unset = Bun.spawn(["bun", "-e", hold], { env, stdout: "ignore", stderr: "ignore" });
    const holes = Bun.spawn(["bun", "-e", hold], { env: { ...env, MIMALLOC_PURGE_HOLES: "0" }, stdout: "ignore", stderr: "ignore" });
    const other = Bun.spawn(["sleep", "5"], { env: { ...env, MIMALLOC_PURGE_DELAY: "-1" }, stdout: "ignore", stderr: "ignore" });
    try {
      await Bun.sleep(300); // exec done: /proc shows the new program's name
      expect(purgeDelays([{ name: "persist", pid: set.pid }, { name: "ws1", pid: unset.pid }, { name: "ws2", pid: holes.pid }, { name: "redis", pid: other.pid }, { name: "gone", pid: 2 ** 22 + 1 }])).toEqual({
        persist: "-1",
        ws1: "100 (default)",
        ws2: "100 (default), MIMALLOC_PURGE_HOLES=0",
      });
    } finally {
      for (const p of [set, unset, holes, other]) p.kill("SIGKILL");
    }
  });
});

describe("a small run end to end", () => {
  test("relay on the test's servers, after a warm-up: every message acked, delivered and stored; the report names the allocator settings", async () => {
    const proc = Bun.spawn(["bun", "run", "scripts/bench.ts", "--users", "10", "--duration", "1", "--warmup", "1", "--grace", "20", "--json"], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      timeout: 90_000,
      killSignal: "SIGKILL",
    });
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    expect(stdout).toMatch(/^warm-up done: [\d,]+ delivered, 0 lost, 0 rows missing$/m);
    const s = JSON.parse(stdout.split("\n").find((l) => l.startsWith("{"))!);
    expect(s.target).toBe("relay");
    expect(s.delivered).toBeGreaterThan(0);
    expect([s.acked, s.delivered, s.rows]).toEqual([s.sent, s.sent, s.sent]);
    expect([s.lost, s.rowsMissing, s.errors]).toEqual([0, 0, 0]);
    const launched = process.env.MIMALLOC_PURGE_DELAY;
    expect(s.purgeDelays).toEqual({
      ws1: launched ?? "100 (default)",
      ws2: launched ?? "100 (default)",
      discover: launched ?? "-1",
      persist: launched ?? "-1",
    });
    expect(stdout).toContain("| Bun allocator purge delay, ms (MIMALLOC_PURGE_DELAY; -1: never), and MIMALLOC_PURGE_HOLES when set |");
  }, 100_000);
});
