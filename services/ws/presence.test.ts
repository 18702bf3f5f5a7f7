import { afterEach, describe, expect, test } from "bun:test";
import type { Directory, InstanceInfo } from "../../shared/directory/directory.ts";
import { silentLogger } from "../../shared/log.ts";
import type { Conn } from "./connections.ts";
import { createPresenceWatch, type PresenceWatch } from "./presence.ts";

const INST: InstanceInfo = { id: "i1", url: "http://127.0.0.1:1" };

/** A directory that only answers lookups: `online` users are on INST; lookups can be held back. */
function fakeDirectory(online: string[]) {
  const lookups: string[][] = [];
  let waiting: Array<(users: string[]) => void> = [];
  let gate: Promise<void> | null = null;
  let open = () => {};
  const directory = {
    async lookup(users: string[]) {
      lookups.push(users);
      const ws = waiting;
      waiting = [];
      ws.forEach((f) => f(users));
      if (gate) await gate;
      return Object.fromEntries(users.map((u) => [u, online.includes(u) ? [INST] : []]));
    },
  } as unknown as Directory;
  return {
    directory,
    lookups,
    /** Resolves with the users of the next lookup (a poll, once the interval fires). */
    nextLookup: () => new Promise<string[]>((resolve) => waiting.push(resolve)),
    hold() {
      gate = new Promise((resolve) => (open = resolve));
    },
    release() {
      gate = null;
      open();
    },
  };
}

function socket(user: string, open = true) {
  const sent: unknown[] = [];
  const ws = { data: { user, open }, send: (s: string) => void sent.push(JSON.parse(s)) } as unknown as Conn;
  return { ws, sent };
}

const watches: PresenceWatch[] = [];
afterEach(() => watches.splice(0).forEach((w) => w.stop()));

function setup(online: string[]) {
  const dir = fakeDirectory(online);
  const presence = createPresenceWatch({ directory: dir.directory, log: silentLogger, intervalMs: 1 });
  watches.push(presence);
  return { dir, presence };
}

describe("presence watch of closed sockets", () => {
  test("a watch on a socket that is already closed does nothing and is never polled", async () => {
    const { dir, presence } = setup(["carol", "bob"]);
    const live = socket("alice");
    await presence.watch(live.ws, ["carol"]);
    const dead = socket("dave", false);
    await presence.watch(dead.ws, ["bob"]);
    expect(dead.sent).toEqual([]);
    expect(dir.lookups).toEqual([["carol"]]);
    expect(await dir.nextLookup()).toEqual(["carol"]);
  });

  test("a watch whose lookup completes after the socket closed sends nothing and leaves nothing to poll", async () => {
    const { dir, presence } = setup(["carol", "bob"]);
    const live = socket("alice");
    await presence.watch(live.ws, ["carol"]);
    const dying = socket("dave");
    dir.hold();
    const watching = presence.watch(dying.ws, ["bob"]);
    dying.ws.data.open = false;
    presence.unwatch(dying.ws); // what the gateway's close handler does
    dir.release();
    await watching;
    expect(dying.sent).toEqual([]);
    expect(await dir.nextLookup()).toEqual(["carol"]);
  });

  test("a watch replaced while its lookup is pending sends nothing for the users it no longer watches", async () => {
    const { dir, presence } = setup(["carol", "bob"]);
    const s = socket("alice");
    dir.hold();
    const first = presence.watch(s.ws, ["bob"]);
    const second = presence.watch(s.ws, ["carol"]);
    dir.release();
    await Promise.all([first, second]);
    expect(s.sent).toEqual([{ type: "presence", user: "carol", online: true }]);
    expect(await dir.nextLookup()).toEqual(["carol"]);
  });
});
