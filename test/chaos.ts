import postgres from "postgres";
import { conversationKey } from "../shared/db/messages.ts";
import { mintToken, TestClient, uniqueUser, type Frame } from "./client.ts";
import { startCluster, type Cluster, type ServiceProcess } from "../scripts/cluster.ts";
import { testInfra } from "./env.ts";

/**
 * Helpers for the fault, race and slow-client tests: polling with deadlines (never sleeping for an
 * event), a streaming sender that records what was acknowledged, and a recipient that follows the
 * contract's resume rule (sync with the cursor of the last `message` or `synced` frame it received).
 */

/** Polls `fn` until it returns something truthy; throws naming `what` after `timeoutMs`. */
export async function waitUntil<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<{ value: NonNullable<T>; ms: number }> {
  const t0 = performance.now();
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return { value: v as NonNullable<T>, ms: Math.round(performance.now() - t0) };
    } catch (err) {
      lastErr = err;
    }
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ""}`);
    }
    await Bun.sleep(everyMs);
  }
}

/** HTTP status of GET url, 0 when it does not answer within `timeoutMs`. */
export async function httpStatus(url: string, timeoutMs = 3000): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

export const alive = (p: ServiceProcess) => p.proc.exitCode === null && p.proc.signalCode === null;

export function openSql(): postgres.Sql {
  return postgres(process.env.DATABASE_URL!, { max: 2, onnotice: () => {}, connect_timeout: 2, idle_timeout: 5 });
}

/** Message ids stored for the direct conversation of a and b. */
export async function storedIds(sql: postgres.Sql, a: string, b: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from messages where conv = ${conversationKey({ from: a, to: b })} and kind = 'message'`;
  return rows.map((r) => r.id);
}

/** Differences between two sets, for assertion messages. */
export function diff(name: string, expected: Iterable<string>, actual: Iterable<string>): { missing: string[]; extra: string[]; text: string } {
  const e = new Set(expected);
  const a = new Set(actual);
  const missing = [...e].filter((x) => !a.has(x));
  const extra = [...a].filter((x) => !e.has(x));
  return { missing, extra, text: `${name}: ${missing.length} missing ${JSON.stringify(missing.slice(0, 5))}, ${extra.length} extra ${JSON.stringify(extra.slice(0, 5))}` };
}

/** Connects and waits for a pong, which means the directory routes the user here. */
export async function connectReady(url: string, user: string, secret: string): Promise<TestClient> {
  const c = await TestClient.connect(url, user, await mintToken(user, secret));
  c.send({ type: "ping" });
  await c.next((f) => f.type === "pong", "pong");
  return c;
}

/** Presence of `users` as seen through `wsUrl`. */
export async function presence(wsUrl: string, asUser: string, secret: string, users: string[]): Promise<Record<string, boolean>> {
  const token = await mintToken(asUser, secret);
  const res = await fetch(`${wsUrl}/api/presence?users=${users.join(",")}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(3000) });
  if (res.status !== 200) throw new Error(`presence answered ${res.status}`);
  return ((await res.json()) as { online: Record<string, boolean> }).online;
}

/** The directory's answer for `users` (instance ids holding each), asked of discover directly. */
export async function lookup(cluster: Cluster, users: string[]): Promise<Record<string, Array<{ id: string; url: string }>>> {
  const res = await fetch(`${cluster.discoverUrl}/v1/lookup`, {
    method: "POST",
    headers: { authorization: `Bearer ${cluster.internalSecret}`, "content-type": "application/json" },
    body: JSON.stringify({ users }),
    signal: AbortSignal.timeout(3000),
  });
  if (res.status !== 200) throw new Error(`lookup answered ${res.status}`);
  return ((await res.json()) as { users: Record<string, Array<{ id: string; url: string }>> }).users;
}

/** Resident memory of a process in bytes (Linux). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Bun.file(`/proc/${pid}/status`).text();
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** A gauge or counter value from a Prometheus text page. */
export async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

export interface SenderOptions {
  user: string;
  secret: string;
  to: string;
  total: number;
  /** Sends awaiting a reply at most. */
  window: number;
  /** Resend an errored send (same id) after this long; undefined: give up on it. */
  retryDelayMs?: number;
  /** A send must get its ack or error within this long while the connection is open. */
  replyBoundMs?: number;
  prefix?: string;
  body?: (id: string) => string;
  /** New sends per second at most (resends are not limited); undefined: as fast as the window allows. */
  ratePerSec?: number;
}

/**
 * Streams `total` direct messages over one connection at a time, keeping `window` in flight, and
 * records every ack (client id → msgId), every error, and the slowest reply. When the connection
 * closes, unanswered sends are resent (same id) on the next connection given to `connect`.
 */
export class Sender {
  readonly acked = new Map<string, string>();
  readonly ackedAt = new Map<string, number>();
  readonly errors: Array<{ id: string; code: string; at: number }> = [];
  readonly failed = new Set<string>();
  /** Sends that were pending when their connection closed (resent on the next connection). */
  unansweredAtClose = 0;
  /** Replies for ids not pending (e.g. the ack of a resend already acked). */
  strayReplies = 0;
  msgIdMismatches = 0;
  maxReplyMs = 0;
  replies = 0;
  conn: TestClient | undefined;
  closes: Array<{ code: number; at: number }> = [];
  /** Every reply: when it came, how long after its send, and whether it was an ack. */
  readonly replyLog: Array<{ at: number; ms: number; ok: boolean }> = [];
  private next = 0;
  private startedAt: number | undefined;
  private rateTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly pending = new Map<string, number>();
  private readonly retry: string[] = [];
  private paused = false;
  private backingOff = 0;
  private readonly o: Required<Omit<SenderOptions, "retryDelayMs" | "ratePerSec">> & { retryDelayMs?: number; ratePerSec?: number };

  constructor(opts: SenderOptions) {
    const prefix = opts.prefix ?? crypto.randomUUID().slice(0, 8);
    this.o = { replyBoundMs: 15_000, prefix, body: (id) => `body of ${id}`, ...opts };
  }

  idOf(i: number) {
    return `${this.o.prefix}-${i}`;
  }

  get done() {
    return this.acked.size + this.failed.size === this.o.total;
  }

  get inFlight() {
    return this.pending.size;
  }

  /** Pending sends older than the reply bound on an open connection (must stay empty). */
  overdue(now = performance.now()): string[] {
    return [...this.pending].filter(([, t]) => now - t > this.o.replyBoundMs).map(([id]) => id);
  }

  async connect(url: string): Promise<void> {
    const c = await connectReady(url, this.o.user, this.o.secret);
    this.conn = c;
    c.ws.addEventListener("message", (e) => this.onFrame(JSON.parse(String(e.data)) as Frame));
    c.ws.addEventListener("close", (e) => {
      if (this.conn !== c) return;
      this.closes.push({ code: e.code, at: performance.now() });
      this.conn = undefined;
      this.unansweredAtClose += this.pending.size;
      this.retry.unshift(...this.pending.keys());
      this.pending.clear();
    });
    this.pump();
  }

  pause() {
    this.paused = true;
  }

  resume() {
    this.paused = false;
    this.pump();
  }

  private onFrame(f: Frame) {
    if ((f.type !== "ack" && f.type !== "error") || typeof f.id !== "string") return;
    const sentAt = this.pending.get(f.id);
    if (sentAt === undefined) {
      this.strayReplies++;
      if (f.type === "ack" && this.acked.has(f.id) && this.acked.get(f.id) !== f.msgId) this.msgIdMismatches++;
      return;
    }
    const now = performance.now();
    this.pending.delete(f.id);
    this.replies++;
    this.maxReplyMs = Math.max(this.maxReplyMs, now - sentAt);
    this.replyLog.push({ at: now, ms: now - sentAt, ok: f.type === "ack" });
    if (f.type === "ack") {
      const prev = this.acked.get(f.id);
      if (prev !== undefined && prev !== f.msgId) this.msgIdMismatches++;
      this.acked.set(f.id, f.msgId);
      if (!this.ackedAt.has(f.id)) this.ackedAt.set(f.id, now);
    } else {
      this.errors.push({ id: f.id, code: f.code, at: now });
      if (this.o.retryDelayMs === undefined) this.failed.add(f.id);
      else {
        // The errored send keeps its slot in the window until it is resent (a client that backs off).
        this.backingOff++;
        setTimeout(() => {
          this.backingOff--;
          this.retry.push(f.id);
          this.pump();
        }, this.o.retryDelayMs);
      }
    }
    this.pump();
  }

  private pump() {
    const c = this.conn;
    if (!c || this.paused || c.ws.readyState !== WebSocket.OPEN) return;
    this.startedAt ??= performance.now();
    const allowed = this.o.ratePerSec === undefined ? this.o.total : Math.floor(((performance.now() - this.startedAt) * this.o.ratePerSec) / 1000) + 1;
    while (this.pending.size + this.backingOff < this.o.window) {
      const id = this.retry.shift() ?? (this.next < Math.min(this.o.total, allowed) ? this.idOf(this.next++) : undefined);
      if (id === undefined) break;
      this.pending.set(id, performance.now());
      c.send({ type: "send", id, to: this.o.to, body: this.o.body(id) });
    }
    if (this.next < this.o.total && this.next >= allowed && this.rateTimer === undefined)
      this.rateTimer = setTimeout(() => {
        this.rateTimer = undefined;
        this.pump();
      }, 1000 / this.o.ratePerSec!);
  }

  /** Resolves once every send was acked (or failed for good); throws if a send goes unanswered too long. */
  async finish(timeoutMs = 60_000): Promise<void> {
    await waitUntil(
      `sender ${this.o.user} to finish (${this.acked.size} acked, ${this.failed.size} failed of ${this.o.total}, ${this.pending.size} pending)`,
      () => {
        const late = this.overdue();
        if (late.length) throw new Error(`sends unanswered for over ${this.o.replyBoundMs} ms: ${late.slice(0, 5).join(", ")}`);
        return this.done;
      },
      timeoutMs,
    ).catch((err) => {
      // surface the overdue error rather than a generic timeout
      const late = this.overdue();
      if (late.length) throw new Error(`silence: ${late.length} sends never answered: ${late.slice(0, 5).join(", ")}`);
      throw err;
    });
  }

  /** Waits until at least `n` sends were acked. */
  async ackedAtLeast(n: number, timeoutMs = 20_000) {
    await waitUntil(`${n} acks (have ${this.acked.size})`, () => this.acked.size >= n, timeoutMs);
  }

  close() {
    const c = this.conn;
    this.conn = undefined;
    c?.close();
  }

  ackedMsgIds(): Set<string> {
    return new Set(this.acked.values());
  }
}

/**
 * A recipient that resumes by the contract: on each connection it sends `sync` with the cursor of
 * the last `message` or `synced` frame it received (on any connection). It counts every msgId it
 * receives, live or in a sync answer, and checks that cursors never go down on one connection.
 */
export class Recipient {
  readonly counts = new Map<string, number>();
  cursor: string | undefined;
  cursorRegressions = 0;
  connections = 0;
  syncs = { synced: 0, unavailable: 0 };
  conn: TestClient | undefined;
  constructor(
    readonly user: string,
    readonly secret: string,
  ) {}

  /** Opens a connection (not waiting for registration: frames queue behind it). */
  async connect(url: string): Promise<TestClient> {
    const c = await TestClient.connect(url, this.user, await mintToken(this.user, this.secret));
    this.connections++;
    let last: number[] = [-1, -1];
    c.ws.addEventListener("message", (e) => {
      const f = JSON.parse(String(e.data)) as Frame;
      if (f.type !== "message" && f.type !== "synced") return;
      const cur = String(f.cursor).split(".").map(Number);
      if (cur[0]! < last[0]! || (cur[0] === last[0] && cur[1]! < last[1]!)) this.cursorRegressions++;
      last = cur;
      this.cursor = f.cursor;
      if (f.type === "message") this.counts.set(f.msgId, (this.counts.get(f.msgId) ?? 0) + 1);
    });
    this.conn = c;
    return c;
  }

  /** Sends sync with the resume cursor; resolves with how it ended. */
  async sync(timeoutMs = 20_000): Promise<"synced" | "unavailable" | "closed"> {
    const c = this.conn;
    if (!c) return "closed";
    const start = c.frames.length;
    c.send(this.cursor === undefined ? { type: "sync" } : { type: "sync", after: this.cursor });
    const end = await Promise.race([
      c.waitFor((f) => c.frames.indexOf(f) >= start && (f.type === "synced" || (f.type === "error" && f.id === undefined)), "synced", timeoutMs),
      c.closed.then(() => null),
    ]);
    if (end === null) return "closed";
    if (end.type === "synced") {
      this.syncs.synced++;
      return "synced";
    }
    if (end.code !== "unavailable") throw new Error(`sync answered ${JSON.stringify(end)}`);
    this.syncs.unavailable++;
    return "unavailable";
  }

  /** Syncs until an answer completes (retrying after `unavailable`), within `timeoutMs`. */
  async syncUntilSynced(timeoutMs = 30_000): Promise<number> {
    const t0 = performance.now();
    await waitUntil(`${this.user} to complete a sync`, async () => (await this.sync()) === "synced", timeoutMs, 100);
    return Math.round(performance.now() - t0);
  }

  close() {
    const c = this.conn;
    this.conn = undefined;
    c?.close();
  }

  ids(): Set<string> {
    return new Set(this.counts.keys());
  }

  /** Extra copies received (always with the same msgId, by construction of the count). */
  duplicates(): number {
    let n = 0;
    for (const v of this.counts.values()) n += v - 1;
    return n;
  }
}


/**
 * A fresh pair: bob connected (and synced) on `recipientUrl`, and alice's Sender connected on
 * `senderUrl`, ready to stream to him.
 */
export async function senderToRecipient(
  secret: string,
  senderUrl: string,
  recipientUrl: string,
  opts: Omit<SenderOptions, "user" | "secret" | "to">,
): Promise<{ alice: string; bob: string; bobR: Recipient; s: Sender }> {
  const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
  const bobR = new Recipient(bob, secret);
  await bobR.connect(recipientUrl);
  await bobR.syncUntilSynced();
  const s = new Sender({ user: alice, secret, to: bob, ...opts });
  await s.connect(senderUrl);
  return { alice, bob, bobR, s };
}
/**
 * Starts every infra server that is down and waits until each of `urls` answers /health 200.
 * Returns how long each service took to become healthy (ms, by URL).
 */
export async function restoreInfra(urls: string[], timeoutMs = 60_000): Promise<Record<string, number>> {
  const infra = testInfra();
  if (infra) {
    const servers = [infra.redis, infra.rabbit, infra.postgres];
    await Promise.all(servers.filter((s) => !s.running).map((s) => s.start()));
  }
  const times = await Promise.all(
    urls.map(async (u) => (await waitUntil(`${u}/health to answer 200`, async () => (await httpStatus(`${u}/health`)) === 200, timeoutMs, 50)).ms),
  );
  return Object.fromEntries(urls.map((u, i) => [u, times[i]!]));
}

/**
 * startCluster, then waits until every service answers /health 200: a service prints "listening"
 * before its RabbitMQ channels are open, and a send before that is (rightly) answered unavailable.
 */
export async function startHealthyCluster(opts: Parameters<typeof startCluster>[0] = {}): Promise<Cluster> {
  const cluster = await startCluster(opts);
  try {
    await restoreInfra([cluster.discoverUrl, ...cluster.wsUrls, cluster.persistUrl], 30_000);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
