import type { Summary } from "./driver.ts";

const n = (v: number) => v.toLocaleString("en-US");
const ms = (v: number | null) => (v === null ? "n/a" : v >= 100 ? n(Math.round(v)) : String(v));

function stored(s: Summary): string {
  if (s.rows === null) return "none (nothing stored)";
  const lag = s.storageLagSeconds === null ? "not reached" : `${s.storageLagSeconds} s after the last send (${s.storageLagAfterLastAckSeconds} s after the last ack)`;
  return `${n(s.rows)} (missing ${n(s.rowsMissing!)}); all stored ${lag}`;
}

function cpuLine(s: Summary): string {
  if (s.serverCpuSeconds === null) return "not measured (the bench did not start the servers)";
  const per = Object.entries(s.cpuSeconds)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(", ");
  return `${s.serverCpuSeconds.toFixed(2)} (${per})`;
}

function perProcessUs(s: Summary): string {
  if (s.serverCpuSeconds === null || s.delivered === 0) return "n/a";
  return Object.entries(s.cpuSeconds)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${Math.round((v * 1e6) / s.delivered)}`)
    .join(", ");
}

/** Processes with the same setting grouped: `persist, discover -1; ws1, ws2 100 (default)`. */
function purgeLine(s: Summary): string {
  const by = new Map<string, string[]>();
  for (const [name, v] of Object.entries(s.purgeDelays)) by.set(v, [...(by.get(v) ?? []), name]);
  return by.size ? [...by].map(([v, names]) => `${names.join(", ")} ${v}`).join("; ") : "n/a";
}

/** One run as a markdown table. */
export function summaryTable(s: Summary): string {
  const errs = Object.entries(s.errorCodes).map(([k, v]) => `${k}: ${v}`).join(", ");
  return `
${s.label}: ${s.users} users on ${s.instances} instances, ${s.mode}, ${s.seconds} s of sending

| metric | value |
| --- | --- |
| connections | ${n(s.connections)} |
| messages sent | ${n(s.sent)} |
| acked | ${n(s.acked)} |
| delivered | ${n(s.delivered)} |
| delivered twice (duplicates) / from a stranger | ${n(s.duplicates)} / ${n(s.strays)} |
| lost (acked, never delivered) | ${n(s.lost)} |
| never answered | ${n(s.unacked)} |
| errors | ${n(s.errors)}${errs ? ` (${errs})` : ""} |
| delivered msg/s | ${n(s.deliveredPerSec)} |
| latency p50 / p95 / p99 / max (ms) | ${ms(s.latencyMs.p50)} / ${ms(s.latencyMs.p95)} / ${ms(s.latencyMs.p99)} / ${ms(s.latencyMs.max)} |
| send → ack p50 / p99 (ms) | ${ms(s.ackLatencyMs.p50)} / ${ms(s.ackLatencyMs.p99)} |
| rows in PostgreSQL after the last send | ${stored(s)} |
| server CPU seconds (per process, with its children; ${s.seconds} s sending + ${s.drainSeconds} s drain) | ${cpuLine(s)} |
| server threads waiting for a CPU (run queue), s | ${Object.keys(s.runQueueWaitSeconds).length ? Object.entries(s.runQueueWaitSeconds).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ") : "n/a"} |
| server CPU µs per delivered message | ${s.serverCpuUsPerMsg ?? "n/a"} (${perProcessUs(s)}) |
| load driver CPU seconds (not in the server figure) | ${s.driverCpuSeconds.toFixed(2)} |
| Bun allocator purge delay, ms (MIMALLOC_PURGE_DELAY; -1: never), and MIMALLOC_PURGE_HOLES when set | ${purgeLine(s)} |`;
}

const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? "n/a" : `${(a / b).toFixed(2)}×`);

/** Side by side, ratios relay / socketio from the same invocation. */
export function compareTable(peer: Summary, relay: Summary): string {
  const row = (s: Summary, r: string) =>
    `| ${s.users} | ${s.label} | ${n(s.deliveredPerSec)}${r} | ${ms(s.latencyMs.p50)} / ${ms(s.latencyMs.p95)} / ${ms(s.latencyMs.p99)} | ${s.serverCpuUsPerMsg ?? "n/a"} | ${
      s.rows === null ? "none (nothing stored)" : s.storageLagSeconds === null ? `not all stored (missing ${n(s.rowsMissing!)})` : `all, ${s.storageLagSeconds} s after the last send`
    } | ${n(s.lost)} |`;
  return `
| N | system | delivered msg/s | p50 / p95 / p99 ms | server CPU µs/msg | rows in PostgreSQL after the last send | lost |
| --- | --- | --- | --- | --- | --- | --- |
${row(peer, "")}
${row(relay, ` (${ratio(relay.deliveredPerSec, peer.deliveredPerSec)})`)}

relay / socketio: throughput ${ratio(relay.deliveredPerSec, peer.deliveredPerSec)}, p50 ${ratio(relay.latencyMs.p50, peer.latencyMs.p50)}, p95 ${ratio(relay.latencyMs.p95, peer.latencyMs.p95)}, p99 ${ratio(relay.latencyMs.p99, peer.latencyMs.p99)}, server CPU per message ${ratio(relay.serverCpuUsPerMsg, peer.serverCpuUsPerMsg)}`;
}
