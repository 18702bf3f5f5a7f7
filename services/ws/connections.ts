import type { ServerWebSocket } from "bun";
import { retryForever } from "../../shared/backoff.ts";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { StreamState } from "./delivery.ts";

/** Per-connection state. */
export interface ConnData {
  user: string;
  /** Live delivery: the connection's position in its user's stream (services/ws/delivery.ts). */
  stream: StreamState;
  /** Frames are handled in order: each one chains on the previous. */
  chain: Promise<void>;
  /** Frames and their bytes waiting in the chain. */
  queued: number;
  queuedBytes: number;
  inflight: number;
  /** Sends of this connection take allocation turns in order (pipeline.ts). */
  order: Promise<void>;
  /** Resolves once the directory routes this user here and the stream baseline is read. */
  ready: Promise<void>;
  isReady: boolean;
  open: boolean;
}
export type Conn = ServerWebSocket<ConnData>;

/**
 * The instance's local connections by user, and their registration in the directory.
 * Registration is coalesced per tick; `ready` of a new connection resolves once the directory
 * holds the user here (retrying with backoff while the directory is down). Heartbeats keep the
 * instance alive; when the directory answers that it did not know us, all users are re-announced.
 */
export function createConnections(opts: { directory: Directory; self: InstanceInfo; log: Logger; heartbeatMs: number; ttlMs: number }) {
  const byUser = new Map<string, Set<Conn>>();
  const dirty = new Set<string>();
  let waiters: Array<() => void> = [];
  let scheduled = false;
  let directoryOk = false;
  const abort = new AbortController();

  const flush = async () => {
    scheduled = false;
    const users = [...dirty];
    const w = waiters;
    dirty.clear();
    waiters = [];
    const online = users.filter((u) => byUser.has(u));
    const offline = users.filter((u) => !byUser.has(u));
    try {
      await retryForever(() => opts.directory.setPresence(opts.self.id, online, offline), {
        signal: abort.signal,
        onError: (err, n) => {
          directoryOk = false;
          if (n % 10 === 0) opts.log.warn("directory setPresence failed; retrying", { err });
        },
      });
      w.forEach((f) => f());
    } catch {
      /* aborted at shutdown */
    }
  };
  const mark = (user: string, waiter?: () => void) => {
    dirty.add(user);
    if (waiter) waiters.push(waiter);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };

  const beat = async () => {
    try {
      const known = await opts.directory.heartbeat(opts.self, opts.ttlMs);
      directoryOk = true;
      if (!known && byUser.size > 0) {
        opts.log.warn("directory did not know this instance; re-announcing users", { users: byUser.size });
        await opts.directory.setPresence(opts.self.id, [...byUser.keys()], []);
      }
    } catch (err) {
      if (directoryOk) opts.log.warn("directory heartbeat failed", { err });
      directoryOk = false;
    }
  };
  const timer = setInterval(beat, opts.heartbeatMs);

  return {
    /** First heartbeat; resolves when the directory answered once (never rejects). */
    start: () => beat(),
    healthy: () => directoryOk,
    add(ws: Conn): Promise<void> {
      let set = byUser.get(ws.data.user);
      if (!set) byUser.set(ws.data.user, (set = new Set()));
      set.add(ws);
      return new Promise<void>((resolve) => mark(ws.data.user, resolve));
    },
    remove(ws: Conn) {
      const set = byUser.get(ws.data.user);
      if (!set || !set.delete(ws)) return;
      if (set.size === 0) {
        byUser.delete(ws.data.user);
        mark(ws.data.user);
      }
    },
    of: (user: string): Set<Conn> | undefined => byUser.get(user),
    localUsers: () => byUser.keys(),
    isLocal: (user: string) => byUser.has(user),
    all: function* () {
      for (const set of byUser.values()) yield* set;
    },
    count: () => {
      let n = 0;
      for (const s of byUser.values()) n += s.size;
      return n;
    },
    users: () => byUser.size,
    async stop() {
      clearInterval(timer);
      abort.abort();
      await opts.directory.removeInstance(opts.self.id).catch((err) => opts.log.warn("directory removeInstance failed", { err }));
    },
  };
}
export type Connections = ReturnType<typeof createConnections>;
