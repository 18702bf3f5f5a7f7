import { type CpuSnapshot, cpuSeconds, cpuSnapshot, purgeDelays, runQueueWaitSeconds } from "./cpu.ts";
import type { Conn, System } from "./targets.ts";

export const BODY_BYTES = 100;

export interface LoadOptions {
  users: number;
  /** Closed loop window per user, or null for open loop at `rate`. */
  inflight: number | null;
  rate: number | null;
  duration: number;
  grace: number;
  log: (line: string) => void;
}

export interface Summary {
  target: string;
  label: string;
  mode: string;
  users: number;
  instances: number;
  seconds: number;
  connections: number;
  sent: number;
  acked: number;
  delivered: number;
  lost: number;
  unacked: number;
  /** Deliveries of a message the partner had already received. */
  duplicates: number;
  /** Messages from anyone but the partner (none expected). */
  strays: number;
  errors: number;
  errorCodes: Record<string, number>;
  deliveredPerSec: number;
  latencyMs: { p50: number | null; p95: number | null; p99: number | null; max: number | null };
  /** From the send (its scheduled time in open loop) to its ack. */
  ackLatencyMs: { p50: number | null; p99: number | null };
  /** null: the system stores nothing. */
  rows: number | null;
  rowsMissing: number | null;
  /** Seconds from the last send until the row count reached the acked count; null if it never did (or nothing is stored). */
  storageLagSeconds: number | null;
  /** The same, counted from the last ack (when the acked count became final). */
  storageLagAfterLastAckSeconds: number | null;
  /** CPU seconds per server process from the first send until everything was delivered and stored. */
  cpuSeconds: Record<string, number>;
  serverCpuSeconds: number | null;
  /** Seconds the server processes' threads waited for a CPU in the same window (a busy machine shows here). */
  runQueueWaitSeconds: Record<string, number>;
  /** Seconds from the last send until the drain ended (the CPU window is the sending time plus this). */
  drainSeconds: number;
  serverCpuUsPerMsg: number | null;
  driverCpuSeconds: number;
  /** The allocator settings of each Bun server process, the peer's too (cpu.ts purgeDelays). */
  purgeDelays: Record<string, string>;
}

interface Pending {
  at: number;
  acked: boolean;
  delivered: boolean;
}

interface Sim {
  user: string;
  partner: number;
  conn: Conn;
  pending: Map<string, Pending>;
  /** sends holding a closed-loop slot: not both acked and delivered yet */
  open: number;
  next: number;
}

/** Drives `sys` with the users in pairs across its instances; see `bun run bench --help` for what is measured. */
export async function runLoad(sys: System, o: LoadOptions): Promise<Summary> {
  const run = crypto.randomUUID().slice(0, 6);
  const prefix = `bench-${run}-`;
  const body = `bench ${run} `.padEnd(BODY_BYTES, "x");
  const sims: Sim[] = [];
  const latencies: number[] = [];
  const ackLatencies: number[] = [];
  let sent = 0;
  let acked = 0;
  let delivered = 0;
  let duplicates = 0;
  let strays = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  let sending = false;
  let lastAckAt = 0;

  const settle = (s: Sim, id: string, p: Pending) => {
    if (!p.acked || !p.delivered) return;
    s.pending.delete(id);
    s.open--;
    if (o.inflight !== null) pump(s);
  };
  const sendOne = (s: Sim, at: number) => {
    const id = `${s.next++}`;
    s.pending.set(id, { at, acked: false, delivered: false });
    s.open++;
    sent++;
    s.conn.send(id, sims[s.partner]!.user, body);
  };
  const pump = (s: Sim) => {
    while (sending && s.open < o.inflight!) sendOne(s, performance.now());
  };

  o.log(`connecting ${o.users} users across ${sys.urls.length} instances ...`);
  const t0 = performance.now();
  // Partners are pairs (0,1), (2,3)...; user i sits on instance i % n, so partners sit on different instances.
  const connectOne = async (i: number) => {
    const sim = { user: `${prefix}${i}`, partner: i ^ 1, pending: new Map(), open: 0, next: 0 } as Omit<Sim, "conn"> as Sim;
    sims[i] = sim;
    sim.conn = await sys.connect(sim.user, i % sys.urls.length, {
      ack(id) {
        const p = sim.pending.get(id);
        if (!p || p.acked) return;
        p.acked = true;
        acked++;
        lastAckAt = performance.now();
        ackLatencies.push(lastAckAt - p.at);
        settle(sim, id, p);
      },
      error(id, code) {
        errors++;
        errorCodes[code] = (errorCodes[code] ?? 0) + 1;
        if (id === undefined) return;
        const p = sim.pending.get(id);
        if (!p) return;
        sim.pending.delete(id);
        sim.open--;
        if (o.inflight !== null) pump(sim);
      },
      message(from, id, _msgId) {
        const sender = sims[sim.partner]!;
        if (from !== sender.user) {
          strays++;
          return;
        }
        const p = sender.pending.get(id);
        if (!p || p.delivered) {
          duplicates++;
          return;
        }
        p.delivered = true;
        delivered++;
        latencies.push(performance.now() - p.at);
        settle(sender, id, p);
      },
    });
  };
  // at most 200 handshakes at once: a burst of thousands times out on a loaded 2-core machine
  for (let i = 0; i < o.users; i += 200) await Promise.all(Array.from({ length: Math.min(200, o.users - i) }, (_, k) => connectOne(i + k)));
  o.log(
    `connected in ${((performance.now() - t0) / 1000).toFixed(1)} s; sending for ${o.duration} s, ` +
      (o.rate === null ? `${o.inflight} in flight per user (closed loop)` : `${o.rate} msg/s offered (open loop)`),
  );

  // the bench's own database session (counting rows) is not server work
  const own = (await sys.ownPids?.()) ?? [];
  const cpuBefore: CpuSnapshot = cpuSnapshot(sys.processes, own);
  const driverBefore = process.cpuUsage();
  const start = performance.now();
  sending = true;
  let scheduler: ReturnType<typeof setInterval> | undefined;
  if (o.rate === null) {
    for (const s of sims) pump(s);
  } else {
    // send k is due at start + k/rate, to user k mod N; late sends keep their due time as the start of their latency
    const rate = o.rate;
    const total = Math.floor(rate * o.duration);
    let issued = 0;
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
      while (issued < due) {
        const k = issued++;
        sendOne(sims[k % o.users]!, start + (k * 1000) / rate);
      }
    };
    tick();
    scheduler = setInterval(tick, 1);
  }
  let lastDelivered = 0;
  const progress = setInterval(() => {
    o.log(`  t=${((performance.now() - start) / 1000).toFixed(0)}s sent=${sent} acked=${acked} delivered=${delivered} (${delivered - lastDelivered}/s) errors=${errors}`);
    lastDelivered = delivered;
  }, 1000);
  await Bun.sleep(o.duration * 1000);
  sending = false;
  clearInterval(scheduler);
  const lastSend = performance.now();
  const sendSeconds = (lastSend - start) / 1000;
  const deliveredInWindow = delivered;
  clearInterval(progress);

  // Drain: every send answered (acked or refused), every acked message delivered and stored.
  // Rows are counted only once no send awaits its answer (the acked count is final then), so the
  // counting queries do not load PostgreSQL while the drain runs (its CPU is metered).
  const graceUntil = lastSend + o.grace * 1000;
  const count = () => {
    let unsettled = 0;
    let unanswered = 0;
    for (const s of sims) {
      for (const p of s.pending.values()) {
        if (!p.acked) unanswered++;
        if (!p.acked || !p.delivered) unsettled++;
      }
    }
    return { unsettled, unanswered };
  };
  let rows: number | null = null;
  let storedAt: number | null = null;
  for (;;) {
    const { unsettled, unanswered } = count();
    if (sys.countRows && storedAt === null && unanswered === 0) {
      rows = await sys.countRows(prefix);
      if (rows >= acked) storedAt = performance.now();
    }
    if (unsettled === 0 && (!sys.countRows || storedAt !== null)) break;
    if (performance.now() >= graceUntil) break;
    // Counting scans the table: every 50 ms for the first second, then every 5 % of the time since
    // the last send (at most 250 ms), so a long drain is not slowed by the counting itself; the
    // storage lag is then known to within 5 %.
    await Bun.sleep(sys.countRows && unanswered === 0 ? Math.min(250, Math.max(50, (performance.now() - lastSend) * 0.05)) : 20);
  }
  const cpuAfter = cpuSnapshot(sys.processes, own);
  const drainedAt = performance.now();
  const driver = process.cpuUsage(driverBefore);
  if (sys.countRows && storedAt === null) rows = await sys.countRows(prefix);

  let lost = 0;
  let unacked = 0;
  for (const s of sims) {
    for (const p of s.pending.values()) {
      if (p.acked && !p.delivered) lost++;
      if (!p.acked) unacked++;
    }
  }
  for (const s of sims) s.conn.close();

  latencies.sort((a, b) => a - b);
  ackLatencies.sort((a, b) => a - b);
  const pct = (p: number, l = latencies) => (l.length ? Number(l[Math.min(l.length - 1, Math.floor((p / 100) * l.length))]!.toFixed(1)) : null);
  const cpu = sys.processes.length ? cpuSeconds(cpuBefore, cpuAfter) : {};
  const waits = sys.processes.length ? runQueueWaitSeconds(cpuBefore, cpuAfter) : {};
  const serverCpu = sys.processes.length ? Object.values(cpu).reduce((a, b) => a + b, 0) : null;
  return {
    target: sys.name,
    label: sys.label,
    mode: o.rate === null ? `closed loop, ${o.inflight} in flight per user` : `open loop, ${o.rate} msg/s offered`,
    users: o.users,
    instances: sys.urls.length,
    seconds: Number(sendSeconds.toFixed(1)),
    connections: sims.length,
    sent,
    acked,
    delivered,
    lost,
    unacked,
    duplicates,
    strays,
    errors,
    errorCodes,
    deliveredPerSec: Math.round(deliveredInWindow / sendSeconds),
    latencyMs: { p50: pct(50), p95: pct(95), p99: pct(99), max: latencies.length ? Number(latencies.at(-1)!.toFixed(1)) : null },
    ackLatencyMs: { p50: pct(50, ackLatencies), p99: pct(99, ackLatencies) },
    rows,
    rowsMissing: rows === null ? null : Math.max(0, acked - rows),
    storageLagSeconds: storedAt === null ? null : Number(((storedAt - lastSend) / 1000).toFixed(2)),
    storageLagAfterLastAckSeconds: storedAt === null ? null : Number(((storedAt - Math.max(lastSend, lastAckAt)) / 1000).toFixed(2)),
    cpuSeconds: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, Number(v.toFixed(2))])),
    serverCpuSeconds: serverCpu === null ? null : Number(serverCpu.toFixed(2)),
    runQueueWaitSeconds: Object.fromEntries(Object.entries(waits).map(([k, v]) => [k, Number(v.toFixed(2))])),
    drainSeconds: Number(((drainedAt - lastSend) / 1000).toFixed(2)),
    serverCpuUsPerMsg: serverCpu === null || delivered === 0 ? null : Math.round((serverCpu * 1e6) / delivered),
    driverCpuSeconds: Number(((driver.user + driver.system) / 1e6).toFixed(2)),
    purgeDelays: purgeDelays(sys.processes),
  };
}
