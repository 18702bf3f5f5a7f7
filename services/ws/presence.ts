import type { Directory } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Conn } from "./connections.ts";
import { sendFrame } from "./frames.ts";

/**
 * Presence pushed to interested connections. A connection names the users it cares about with a
 * `watch` frame; it is told their state at once, then `{"type":"presence","user","online"}`
 * whenever it changes. Changes are found by one batched directory lookup of every watched user
 * per interval (so a change reaches watchers within about `intervalMs`, a dead instance's users
 * within its TTL plus that).
 */
export function createPresenceWatch(opts: { directory: Directory; log: Logger; intervalMs: number }) {
  const watchers = new Map<string, Set<Conn>>();
  const watching = new Map<Conn, string[]>();
  const known = new Map<string, boolean>();

  const onlineOf = async (users: string[]) => {
    const where = await opts.directory.lookup(users);
    return new Map(users.map((u) => [u, (where[u]?.length ?? 0) > 0]));
  };

  const poll = async () => {
    if (watchers.size === 0) return;
    let now: Map<string, boolean>;
    try {
      now = await onlineOf([...watchers.keys()]);
    } catch (err) {
      opts.log.debug("presence poll failed", { err });
      return;
    }
    for (const [user, online] of now) {
      const before = known.get(user);
      known.set(user, online);
      if (before === undefined || before === online) continue;
      for (const ws of watchers.get(user) ?? []) sendFrame(ws, { type: "presence", user, online });
    }
  };
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    poll().finally(() => (running = false));
  }, opts.intervalMs);

  function unwatch(ws: Conn) {
    for (const u of watching.get(ws) ?? []) {
      const set = watchers.get(u);
      if (!set) continue;
      set.delete(ws);
      if (set.size === 0) {
        watchers.delete(u);
        known.delete(u);
      }
    }
    watching.delete(ws);
  }

  return {
    /**
     * Replaces what `ws` watches and tells it the current state of each user. A closed socket is
     * never watched: a watch on one does nothing, and one that completes after `ws` closed (or was
     * replaced by a newer watch) sends nothing and leaves no trace.
     */
    async watch(ws: Conn, users: string[]) {
      unwatch(ws);
      if (!ws.data.open) return;
      const unique = [...new Set(users)];
      watching.set(ws, unique);
      for (const u of unique) {
        let set = watchers.get(u);
        if (!set) watchers.set(u, (set = new Set()));
        set.add(ws);
      }
      if (unique.length === 0) return;
      const now = await onlineOf(unique);
      if (!ws.data.open) return unwatch(ws);
      if (watching.get(ws) !== unique) return;
      for (const [user, online] of now) {
        if (!known.has(user)) known.set(user, online);
        sendFrame(ws, { type: "presence", user, online });
      }
    },
    unwatch,
    stop: () => clearInterval(timer),
  };
}
export type PresenceWatch = ReturnType<typeof createPresenceWatch>;
