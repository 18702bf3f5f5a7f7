import { CLAIM_DONE_MS, CLAIM_PENDING_MS, type Claim, type Directory, type InstanceInfo, type Ledger } from "./directory.ts";

/** The directory and ledger of one process (`bun run dev`), with the semantics of directory-redis.ts. */
export interface MemoryDirectory extends Directory, Ledger {
  /** Forgets the users of every instance whose heartbeat lapsed, and expired claims; returns those instance ids. */
  sweepDeadInstances(): Promise<string[]>;
}

export function createMemoryDirectory(opts: { now?: () => number } = {}): MemoryDirectory {
  const now = opts.now ?? Date.now;
  const beats = new Map<string, { url: string; until: number }>();
  const usersOf = new Map<string, Set<string>>();
  const instancesOf = new Map<string, Set<string>>();
  const claims = new Map<string, { value: "p" | number; until: number }>();
  let pruneClaimsAt = 1024;
  const watchers = new Set<(users: string[] | null) => void>();
  const changed = (users: Iterable<string>) => {
    const list = [...users];
    if (list.length) for (const w of watchers) w(list);
  };

  const alive = (id: string) => {
    const b = beats.get(id);
    return b && b.until > now() ? b : undefined;
  };

  const wipe = (id: string) => {
    const gone = usersOf.get(id);
    for (const user of gone ?? []) {
      const ids = instancesOf.get(user);
      ids?.delete(id);
      if (ids && !ids.size) instancesOf.delete(user);
    }
    usersOf.delete(id);
    if (gone) changed(gone);
  };

  const liveClaim = (msgId: string) => {
    const c = claims.get(msgId);
    if (c && c.until <= now()) {
      claims.delete(msgId);
      return undefined;
    }
    return c;
  };

  const pruneClaims = () => {
    const t = now();
    for (const [id, c] of claims) if (c.until <= t) claims.delete(id);
  };

  return {
    async heartbeat(instance, ttlMs) {
      const existed = !!alive(instance.id);
      if (!existed) wipe(instance.id);
      beats.set(instance.id, { url: instance.url, until: now() + Math.max(1, Math.round(ttlMs)) });
      return existed;
    },

    async setPresence(instanceId, online, offline) {
      let mine = usersOf.get(instanceId);
      for (const user of offline) {
        mine?.delete(user);
        const ids = instancesOf.get(user);
        ids?.delete(instanceId);
        if (ids && !ids.size) instancesOf.delete(user);
      }
      if (online.length) {
        if (!mine) usersOf.set(instanceId, (mine = new Set()));
        for (const user of online) {
          mine.add(user);
          let ids = instancesOf.get(user);
          if (!ids) instancesOf.set(user, (ids = new Set()));
          ids.add(instanceId);
        }
      }
      changed([...online, ...offline]);
    },

    watch(onChange) {
      watchers.add(onChange);
      return { live: () => watchers.has(onChange), stop: () => void watchers.delete(onChange) };
    },

    async lookup(users) {
      return Object.fromEntries(
        users.map((user) => {
          const found: InstanceInfo[] = [];
          for (const id of instancesOf.get(user) ?? []) {
            const b = alive(id);
            if (b) found.push({ id, url: b.url });
          }
          return [user, found];
        }),
      );
    },

    async removeInstance(instanceId) {
      wipe(instanceId);
      beats.delete(instanceId);
    },

    async sweepDeadInstances() {
      const dead: string[] = [];
      for (const id of new Set([...beats.keys(), ...usersOf.keys()])) {
        if (alive(id)) continue;
        wipe(id);
        beats.delete(id);
        dead.push(id);
      }
      pruneClaims();
      return dead;
    },

    async claim(msgIds) {
      const out: Array<[string, Claim]> = [];
      for (const id of new Set(msgIds)) {
        const c = liveClaim(id);
        if (!c) {
          claims.set(id, { value: "p", until: now() + CLAIM_PENDING_MS });
          out.push([id, { state: "new" }]);
        } else out.push([id, c.value === "p" ? { state: "pending" } : { state: "done", ts: c.value }]);
      }
      if (claims.size >= pruneClaimsAt) {
        pruneClaims();
        pruneClaimsAt = Math.max(1024, claims.size * 2);
      }
      return Object.fromEntries(out);
    },

    async complete(done) {
      for (const { msgId, ts } of done) claims.set(msgId, { value: ts, until: now() + CLAIM_DONE_MS });
    },

    async release(msgIds) {
      for (const id of msgIds) if (liveClaim(id)?.value === "p") claims.delete(id);
    },
  };
}
