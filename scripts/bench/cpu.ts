import { readdirSync, readFileSync } from "node:fs";

/** A server process the bench started, metered with all its descendants (PostgreSQL backends, Erlang helpers). */
export interface MeteredProcess {
  name: string;
  pid: number;
}

/** Per tree: CPU ticks (utime+stime of the process, plus cutime+cstime: its reaped children) per live pid,
 * and nanoseconds each live thread spent runnable but waiting for a CPU (/proc/<pid>/task/<tid>/schedstat). */
export type CpuSnapshot = Map<string, { ticks: Map<number, number>; waitNs: Map<number, number> }>;

const TICKS_PER_SECOND = (() => {
  try {
    const r = Bun.spawnSync(["getconf", "CLK_TCK"]);
    const n = Number(r.stdout.toString().trim());
    return Number.isInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

function readStat(pid: number): { ppid: number; ticks: number } | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // fields after "(comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based overall
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

/**
 * Reads every tree's CPU ticks, leaving out the processes in `exclude` (the bench's own database
 * session: its row counting is not server work). A live process counts its own time and that of its reaped children
 * (which no longer appear), so nothing is counted twice; a child that exits between two snapshots
 * moves its whole lifetime into its parent's cutime (a slight overcount for short-lived helpers).
 */
export function cpuSnapshot(procs: MeteredProcess[], exclude: readonly number[] = []): CpuSnapshot {
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const s = readStat(Number(e));
    if (s) stats.set(Number(e), s);
  }
  const children = new Map<number, number[]>();
  for (const [pid, s] of stats) {
    const list = children.get(s.ppid);
    if (list) list.push(pid);
    else children.set(s.ppid, [pid]);
  }
  const snap: CpuSnapshot = new Map();
  for (const p of procs) {
    const ticks = new Map<number, number>();
    const waitNs = new Map<number, number>();
    const todo = stats.has(p.pid) ? [p.pid] : [];
    while (todo.length) {
      const pid = todo.pop()!;
      if (exclude.includes(pid)) continue;
      ticks.set(pid, stats.get(pid)!.ticks);
      for (const [tid, ns] of threadWaits(pid)) waitNs.set(tid, ns);
      todo.push(...(children.get(pid) ?? []));
    }
    snap.set(p.name, { ticks, waitNs });
  }
  return snap;
}

function threadWaits(pid: number): Array<[number, number]> {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: Array<[number, number]> = [];
  for (const tid of tids) {
    try {
      out.push([Number(tid), Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[1])]);
    } catch {}
  }
  return out;
}

function delta(a: Map<number, number> | undefined, b: Map<number, number>): number {
  let sum = 0;
  for (const [id, v] of b) sum += v - (a?.get(id) ?? 0);
  return sum;
}

/** CPU seconds each tree used between two snapshots (processes gone by `b` count as 0: their time is in their parent's cutime). */
export function cpuSeconds(a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, t] of b) out[name] = delta(a.get(name)?.ticks, t.ticks) / TICKS_PER_SECOND;
  return out;
}

/** Server CPU µs per item (connection, client, message) between two snapshots: per tree, rounded, and their sum. */
export function cpuMicrosPer(a: CpuSnapshot, b: CpuSnapshot, items: number): { total: number; perProcess: Record<string, number> } {
  const perProcess = Object.fromEntries(Object.entries(cpuSeconds(a, b)).map(([k, v]) => [k, Math.round((v * 1e6) / Math.max(1, items))]));
  return { total: Object.values(perProcess).reduce((x, y) => x + y, 0), perProcess };
}

/** "420 µs (ws1 276, discover 58, …)": the sum in `unit`, then each tree, largest first. */
export function formatCpuMicros(c: { total: number; perProcess: Record<string, number> }, unit = "µs"): string {
  const parts = Object.entries(c.perProcess).sort((x, y) => y[1] - x[1]);
  return `${c.total.toLocaleString("en")} ${unit} (${parts.map(([k, v]) => `${k} ${v.toLocaleString("en")}`).join(", ")})`;
}

/**
 * Seconds the threads of each tree were runnable but waited for a CPU between two snapshots (threads
 * gone by `b` are not counted: a lower bound). High values mean the machine, not the process, set the pace.
 */
export function runQueueWaitSeconds(a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, t] of b) out[name] = delta(a.get(name)?.waitNs, t.waitNs) / 1e9;
  return out;
}

/** mimalloc's purge delay when nothing sets it (Bun 1.x, mimalloc 3: `MIMALLOC_VERBOSE=1 bun -e 1`). */
const DEFAULT_PURGE_DELAY = "100";

/** The environment process `pid` was started with, as the kernel keeps it (/proc/<pid>/environ); throws if it is gone. */
export function processEnviron(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
    const eq = kv.indexOf("=");
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

/**
 * The allocator setting each Bun process was started with (MIMALLOC_PURGE_DELAY from
 * /proc/<pid>/environ, mimalloc's default when unset, and MIMALLOC_PURGE_HOLES when set); other processes (Redis, PostgreSQL, …) are
 * left out. The CPU per message of a Bun process depends on it (docs/operations.md "Memory allocator").
 */
export function purgeDelays(procs: MeteredProcess[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of procs) {
    try {
      if (readFileSync(`/proc/${p.pid}/comm`, "utf8").trim() !== "bun") continue;
      const { MIMALLOC_PURGE_DELAY: delay, MIMALLOC_PURGE_HOLES: holes } = processEnviron(p.pid);
      out[p.name] = `${delay ?? `${DEFAULT_PURGE_DELAY} (default)`}${holes !== undefined ? `, MIMALLOC_PURGE_HOLES=${holes}` : ""}`;
    } catch {}
  }
  return out;
}
