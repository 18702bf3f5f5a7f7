import { afterEach, describe, expect, test } from "bun:test";
import fc from "fast-check";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import { createMemoryDirectory, type MemoryDirectory } from "../../shared/directory/directory-memory.ts";
import { silentLogger } from "../../shared/log.ts";
import { createConnections, type Conn, type Connections } from "./connections.ts";

const SELF: InstanceInfo = { id: "inst-self", url: "http://127.0.0.1:1" };

type FailMode = "before" | "after" | "hang";

/**
 * The in-memory directory behind a switchboard of faults. `setPresence` may fail before it is
 * applied or after (the reply is lost), or hang (a slow request) until released; heartbeats may
 * fail; every finished call is announced so tests wait on calls, never on time.
 */
function faultyDirectory(inner: MemoryDirectory) {
  let presenceFaults: FailMode[] = [];
  let presenceDown = false;
  let beatFaults = 0;
  let failedPresence = 0;
  let listeners: Array<() => void> = [];
  const hung: Array<{ release: () => void; landed: Promise<void> }> = [];
  const done = () => {
    const ls = listeners;
    listeners = [];
    ls.forEach((f) => f());
  };
  const directory: Directory = {
    async heartbeat(instance, ttlMs) {
      try {
        if (beatFaults > 0) {
          beatFaults--;
          throw new Error("injected heartbeat failure");
        }
        return await inner.heartbeat(instance, ttlMs);
      } finally {
        done();
      }
    },
    async setPresence(id, online, offline) {
      try {
        const mode = presenceDown ? "before" : presenceFaults.shift();
        if (mode === "hang") {
          const gate = Promise.withResolvers<void>();
          const landed = Promise.withResolvers<void>();
          hung.push({ release: gate.resolve, landed: landed.promise });
          await gate.promise;
          await inner.setPresence(id, [...online], [...offline]);
          landed.resolve();
          return;
        }
        if (mode === "before") {
          failedPresence++;
          throw new Error("injected setPresence failure");
        }
        await inner.setPresence(id, [...online], [...offline]);
        if (mode === "after") {
          failedPresence++;
          throw new Error("injected lost reply");
        }
      } finally {
        done();
      }
    },
    lookup: (users) => inner.lookup(users),
    removeInstance: (id) => inner.removeInstance(id),
    watch: (f) => inner.watch(f),
  };
  return {
    directory,
    failPresence: (...modes: FailMode[]) => void presenceFaults.push(...modes),
    failBeats: (n: number) => void (beatFaults += n),
    /** While down, every setPresence fails before it is applied. */
    presenceDown: (down: boolean) => void (presenceDown = down),
    /** Lets the oldest hung setPresence go on; resolves once it has been applied. */
    releaseOne: () => {
      const h = hung.shift();
      h?.release();
      return h?.landed ?? Promise.resolve();
    },
    /** Stops injecting faults and releases every hung call, in the order they were made. */
    async heal() {
      presenceFaults = [];
      presenceDown = false;
      beatFaults = 0;
      while (hung.length) await this.releaseOne();
    },
    failedPresence: () => failedPresence,
    /** Resolves when the next directory call (heartbeat or setPresence) has finished. */
    nextCall: () => new Promise<void>((resolve) => listeners.push(resolve)),
  };
}

type Faulty = ReturnType<typeof faultyDirectory>;

const live: Connections[] = [];
afterEach(async () => {
  await Promise.all(live.splice(0).map((c) => c.stop()));
});

function setup(opts: { reconcileMs?: number } = {}) {
  const inner = createMemoryDirectory();
  const faulty = faultyDirectory(inner);
  const conns = createConnections({
    directory: faulty.directory,
    self: SELF,
    log: silentLogger,
    heartbeatMs: 3,
    ttlMs: 60_000,
    reconcileMs: opts.reconcileMs ?? 3_600_000,
    retry: { baseMs: 1, capMs: 2 },
  });
  live.push(conns);
  return { inner, faulty, conns };
}

let nextConn = 1;
const socket = (user: string) => ({ data: { user, connId: nextConn++ } }) as unknown as Conn;

const routedHere = async (inner: MemoryDirectory, user: string) => ((await inner.lookup([user]))[user] ?? []).some((i) => i.id === SELF.id);

/**
 * Waits, call by call, until `cond` holds; fails once the directory has served `calls` more calls
 * without it (heartbeats keep coming every few ms, so a registration that never converges fails
 * here instead of hanging).
 */
async function converges(faulty: Faulty, cond: () => Promise<boolean>, what: string, calls = 300): Promise<void> {
  for (let i = 0; i < calls; i++) {
    if (await cond()) return;
    await faulty.nextCall();
  }
  if (await cond()) return;
  throw new Error(`not converged after ${calls} directory calls: ${what}`);
}

describe("connections: registration in the directory", () => {
  test("a re-announce after known:false that fails is retried until the directory holds the user", async () => {
    const { inner, faulty, conns } = setup();
    await conns.start();
    await conns.add(socket("alice"));
    expect(await routedHere(inner, "alice")).toBe(true);

    // the directory loses this instance (Redis restarted empty); the re-announce then fails twice
    await inner.removeInstance(SELF.id);
    faulty.failPresence("before", "after");
    await converges(faulty, async () => faulty.failedPresence() === 2 && (await routedHere(inner, "alice")), "alice routed here again");
  });

  test("registered() and healthy() are false while the directory cannot take the re-announce", async () => {
    const { inner, faulty, conns } = setup();
    await conns.start();
    await conns.add(socket("alice"));
    await converges(faulty, async () => conns.registered(), "registered at first");

    faulty.presenceDown(true);
    await inner.removeInstance(SELF.id);
    await converges(faulty, async () => faulty.failedPresence() >= 2, "two failed re-announces");
    expect(conns.registered()).toBe(false);
    expect(conns.healthy()).toBe(false);
    expect(await routedHere(inner, "alice")).toBe(false);

    await faulty.heal();
    await converges(faulty, async () => conns.registered(), "registered again");
    expect(conns.healthy()).toBe(true);
    expect(await routedHere(inner, "alice")).toBe(true);
  });

  test("add() resolves only once the directory routes the user here, even before the first heartbeat", async () => {
    const { inner, conns } = setup();
    await conns.add(socket("alice"));
    expect(await routedHere(inner, "alice")).toBe(true);
  });

  test("add() after the directory lost the instance resolves only once the user is routed here", async () => {
    const { inner, faulty, conns } = setup();
    await conns.start();
    await conns.add(socket("alice"));
    await inner.removeInstance(SELF.id);
    await conns.add(socket("bob"));
    expect(await routedHere(inner, "bob")).toBe(true);
    await converges(faulty, async () => routedHere(inner, "alice"), "alice re-announced");
  });

  test("the periodic reconcile restores an entry the directory dropped without losing the instance", async () => {
    const { inner, faulty, conns } = setup({ reconcileMs: 5 });
    await conns.start();
    await conns.add(socket("alice"));
    await inner.setPresence(SELF.id, [], ["alice"]);
    expect(await routedHere(inner, "alice")).toBe(false);
    await converges(faulty, async () => routedHere(inner, "alice"), "alice restored by the reconcile");
  });

  test("a user whose last connection closed is announced offline, also when that flush failed and the retry is a full re-announce", async () => {
    const { inner, faulty, conns } = setup();
    await conns.start();
    const ws = socket("alice");
    await conns.add(ws);
    await conns.add(socket("bob"));
    faulty.failPresence("before");
    conns.remove(ws);
    await converges(faulty, async () => faulty.failedPresence() === 1 && !(await routedHere(inner, "alice")), "alice offline after the failed flush");
    expect(await routedHere(inner, "bob")).toBe(true);
  });

  test("of(user) lists the user's connections in the order they opened; one closing during a loop over them does not disturb it", async () => {
    const { conns } = setup();
    const [a1, a2, a3] = [socket("alice"), socket("alice"), socket("alice")];
    for (const ws of [a1, a2, a3]) void conns.add(ws);
    expect(conns.of("alice")).toEqual([a1, a2, a3]);
    const visited: Conn[] = [];
    for (const ws of conns.of("alice")!) {
      visited.push(ws);
      if (ws === a1) conns.remove(a2); // e.g. a revocation closing the user's other devices
    }
    expect(visited).toEqual([a1, a2, a3]);
    expect(conns.of("alice")).toEqual([a1, a3]);
    conns.remove(a2); // removing again changes nothing
    conns.remove(a1);
    conns.remove(a3);
    expect(conns.of("alice")).toBeUndefined();
    expect([...conns.localUsers()]).toEqual([]);
  });

  test("interleaved connects, disconnects, faults and directory losses always end with the directory matching the local state", async () => {
    const USERS = ["u0", "u1", "u2"];
    const op = fc.oneof(
      { weight: 3, arbitrary: fc.record({ kind: fc.constant("add" as const), user: fc.nat(USERS.length - 1) }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant("remove" as const), user: fc.nat(USERS.length - 1) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("failPresence" as const), modes: fc.array(fc.constantFrom<FailMode>("before", "after", "hang"), { minLength: 1, maxLength: 3 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("release" as const) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("failBeats" as const), n: fc.integer({ min: 1, max: 3 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("lose" as const) }) },
      { weight: 4, arbitrary: fc.record({ kind: fc.constant("yield" as const), calls: fc.integer({ min: 0, max: 2 }) }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
        const { inner, faulty, conns } = setup();
        try {
          await conns.start();
          const local = new Map<string, Conn[]>(USERS.map((u) => [u, []]));
          const adds: Array<{ ws: Conn; routed: Promise<void> }> = [];
          for (const o of ops) {
            switch (o.kind) {
              case "add": {
                const ws = socket(USERS[o.user]!);
                local.get(ws.data.user)!.push(ws);
                adds.push({ ws, routed: conns.add(ws) });
                break;
              }
              case "remove": {
                const ws = local.get(USERS[o.user]!)!.shift();
                if (ws) conns.remove(ws);
                break;
              }
              case "failPresence":
                faulty.failPresence(...o.modes);
                break;
              case "failBeats":
                faulty.failBeats(o.n);
                break;
              case "release":
                await faulty.releaseOne();
                break;
              case "lose":
                await inner.removeInstance(SELF.id);
                break;
              case "yield":
                for (let i = 0; i < o.calls; i++) await faulty.nextCall();
                await new Promise((r) => setImmediate(r));
                break;
            }
          }
          await faulty.heal();
          const matches = async () => {
            const where = await inner.lookup(USERS);
            return USERS.every((u) => (where[u] ?? []).some((i) => i.id === SELF.id) === local.get(u)!.length > 0);
          };
          await converges(faulty, matches, "directory matches local state");
          await converges(faulty, async () => conns.registered() && (await matches()), "registered, and still matching");
          for (let i = 0; i < 3; i++) {
            await faulty.nextCall();
            expect(await matches()).toBe(true);
          }
          // every connection still open is routed, so its add() has resolved
          const stillOpen = new Set([...local.values()].flat());
          await Promise.all(adds.filter((a) => stillOpen.has(a.ws)).map((a) => a.routed));
        } finally {
          live.splice(live.indexOf(conns), 1);
          await conns.stop();
        }
      }),
      {
        numRuns: 100,
        endOnFailure: true,
        examples: [
          // a slow online flush overtaken by the offline flush after it
          [[{ kind: "failPresence", modes: ["hang"] }, { kind: "add", user: 0 }, { kind: "yield", calls: 0 }, { kind: "remove", user: 0 }, { kind: "yield", calls: 0 }]],
          // the directory loses us and the re-announce fails once
          [[{ kind: "add", user: 0 }, { kind: "yield", calls: 1 }, { kind: "lose" }, { kind: "failPresence", modes: ["before"] }, { kind: "yield", calls: 2 }]],
        ],
      },
    );
  });
});
