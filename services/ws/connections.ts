import type { ServerWebSocket } from "bun";
import { backoffDelay, sleep, type BackoffOptions } from "../../shared/backoff.ts";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { StreamState } from "./delivery.ts";

/**
 * Per-connection state. Kept small, since an idle connection's memory is what bench:conns counts:
 * plain fields rather than objects of their own where that reads as well, and shared defaults
 * (a settled promise, an empty set) until first use (gateway.ts).
 */
export interface ConnData {
  user: string;
  /** The token the connection was opened with: its version and id (service.ts closes the connection when it is revoked). */
  tokenVer: number;
  tokenId: string;
  /** Live delivery: the connection's position in its user's stream (services/ws/delivery.ts). */
  stream: StreamState;
  /** Frames are handled in order: each one chains on the previous. */
  chain: Promise<void>;
  /** Frames and their bytes waiting in the chain. */
  queued: number;
  queuedBytes: number;
  inflight: number;
  /** `read` frames being handled or waiting, and their chain (handled one at a time, in order). */
  reads: number;
  readChain: Promise<void>;
  /** Message ids this connection sent recently: a gap repair passes them silently (it got the ack). */
  own: Set<string>;
  /** Sends of this connection take allocation turns in order (pipeline.ts). */
  order: Promise<void>;
  /** Resolves once the directory routes this user here and the stream baseline is read. */
  ready: Promise<void>;
  isReady: boolean;
  open: boolean;
  /** Frames written this turn of the event loop, sent together at its end (frames.ts). */
  outbox: string[] | undefined;
}
export type Conn = ServerWebSocket<ConnData>;

/** How often the whole local state is written to the directory even when nothing seems lost. */
export const RECONCILE_MS = 30_000;

/**
 * The instance's local connections by user, and their registration in the directory.
 *
 * Registration converges: one flush at a time is in flight, each built from the local state at the
 * moment it is sent (changes made meanwhile go into the next one) and retried with backoff until it
 * lands. Whenever the directory may have lost this instance (a heartbeat answered `known:false`, or
 * a heartbeat or flush failed) the next flush is a full re-announce: every local user online, every
 * user the directory may still hold for us but we no longer have offline. A full re-announce also
 * runs every `reconcileMs`. `add(ws)` resolves once a flush that included the user was followed by
 * a heartbeat that found the instance alive, i.e. once the directory routes the user here.
 */
export function createConnections(opts: {
  directory: Directory;
  self: InstanceInfo;
  log: Logger;
  heartbeatMs: number;
  ttlMs: number;
  reconcileMs?: number;
  /** Backoff between failed flushes (shared/backoff.ts defaults). */
  retry?: BackoffOptions;
}) {
  const dir = opts.directory;
  /**
   * A user's connections here, in the order they opened. An array, not a Set: most users have one
   * connection, and a one-element array is a fifth of a one-element Set's memory (docs/benchmarks.md,
   * "idle memory, second pass"). Replaced, never changed in place, so a loop over `of(user)` is not
   * disturbed by a connection that closes (or opens) meanwhile.
   */
  const byUser = new Map<string, readonly Conn[]>();
  /** Users changed locally since the last flush was built. */
  const dirty = new Set<string>();
  /**
   * Users with no connection here that the directory may still hold on this instance (their last
   * connection closed; no offline flush has landed since). Never a user of `byUser`.
   */
  const departed = new Set<string>();
  let waiters: Array<() => void> = [];
  // A full flush is due while fullDone < fullWanted; the directory may have lost us while lossCleared < lossSeen.
  let fullWanted = 1;
  let fullDone = 0;
  let lossSeen = 1;
  let lossCleared = 0;
  let beatOk = false;
  let beating = false;
  let pumping = false;
  let stopped = false;
  let wake: (() => void) | null = null;
  const abort = new AbortController();

  const fullDue = () => fullDone < fullWanted;
  const lost = () => lossCleared < lossSeen;
  const registered = () => beatOk && !lost() && !stopped;
  const markLost = () => {
    lossSeen++;
    fullWanted++;
  };

  async function flushOnce() {
    const full = fullDue();
    const fullTarget = fullWanted;
    const lossTarget = lossSeen;
    let online: string[];
    let offline: string[];
    if (full) {
      online = [...byUser.keys()];
      offline = [...departed];
    } else {
      online = [];
      offline = [];
      for (const u of dirty) (byUser.has(u) ? online : offline).push(u);
    }
    dirty.clear();
    const w = waiters;
    waiters = [];
    try {
      await dir.setPresence(opts.self.id, online, offline);
      if (full || w.length) {
        const known = await dir.heartbeat(opts.self, opts.ttlMs);
        beatOk = true;
        if (!known) throw new Error("the directory did not know this instance");
      }
    } catch (err) {
      waiters = w.concat(waiters);
      markLost();
      throw err;
    }
    // A user who came back meanwhile is not in `departed`; one who left again is dirty (offline next).
    for (const u of offline) if (!byUser.has(u)) departed.delete(u);
    if (full) fullDone = Math.max(fullDone, fullTarget);
    if (full && lossSeen === lossTarget) lossCleared = lossTarget;
    if (registered() && lossSeen === lossTarget) w.forEach((f) => f());
    else waiters = w.concat(waiters);
  }

  function kick() {
    if (pumping || stopped || (!fullDue() && !dirty.size && !waiters.length)) return;
    pumping = true;
    setImmediate(pump);
  }

  async function pump() {
    let failures = 0;
    try {
      while (!stopped && (fullDue() || dirty.size || waiters.length)) {
        try {
          await flushOnce();
          failures = 0;
        } catch (err) {
          if (failures % 10 === 0) opts.log.warn("directory registration failed; retrying with a full re-announce", { err });
          const woken = new Promise<void>((resolve) => (wake = resolve));
          await Promise.race([sleep(backoffDelay(failures++, opts.retry), abort.signal), woken]).catch(() => {});
          wake = null;
        }
      }
    } finally {
      pumping = false;
    }
  }

  const beat = async () => {
    if (beating || stopped) return;
    beating = true;
    try {
      const known = await dir.heartbeat(opts.self, opts.ttlMs);
      beatOk = true;
      wake?.();
      if (!known) {
        if (byUser.size) opts.log.warn("directory did not know this instance; re-announcing users", { users: byUser.size });
        markLost();
      }
    } catch (err) {
      if (beatOk) opts.log.warn("directory heartbeat failed", { err });
      beatOk = false;
      markLost();
    } finally {
      beating = false;
      kick();
    }
  };
  const heartbeatTimer = setInterval(beat, opts.heartbeatMs);
  const reconcileTimer = setInterval(() => {
    fullWanted++;
    kick();
  }, opts.reconcileMs ?? RECONCILE_MS);

  const mark = (user: string) => {
    dirty.add(user);
    kick();
  };

  return {
    /** First heartbeat; resolves when the directory answered once (never rejects). */
    start: () => beat(),
    /** True only while the directory is known to hold this instance and its users (no re-announce pending). */
    registered,
    /** Health of the directory as this instance sees it: false while not registered. */
    healthy: registered,
    /** Resolves once the directory routes the user to this instance. */
    add(ws: Conn): Promise<void> {
      const user = ws.data.user;
      const conns = byUser.get(user);
      byUser.set(user, conns ? [...conns, ws] : [ws]);
      departed.delete(user);
      return new Promise<void>((resolve) => {
        waiters.push(resolve);
        mark(ws.data.user);
      });
    },
    remove(ws: Conn) {
      const user = ws.data.user;
      const conns = byUser.get(user);
      if (!conns?.includes(ws)) return;
      if (conns.length > 1) return void byUser.set(user, conns.filter((c) => c !== ws));
      byUser.delete(user);
      departed.add(user);
      mark(user);
    },
    /** The user's connections here (never empty), or undefined. */
    of: (user: string): readonly Conn[] | undefined => byUser.get(user),
    localUsers: () => byUser.keys(),
    all: function* () {
      for (const conns of byUser.values()) yield* conns;
    },
    async stop() {
      stopped = true;
      clearInterval(heartbeatTimer);
      clearInterval(reconcileTimer);
      abort.abort();
      wake?.();
      await dir.removeInstance(opts.self.id).catch((err) => opts.log.warn("directory removeInstance failed", { err }));
    },
  };
}
export type Connections = ReturnType<typeof createConnections>;
