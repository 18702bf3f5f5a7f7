import { describe, expect, test } from "bun:test";
import { mintToken, TestClient, uniqueUser } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";

// Presence (CONTRACT.md sections 4 and 6) on real processes: discover, two ws instances and persist
// over Redis, RabbitMQ and PostgreSQL. The last test kills an instance, so it runs last.

const fx = useCluster({ ws: 2 });

const A = fx.A;
const B = fx.B;

const connect = fx.connect;

async function presence(base: string, users: string, asker = uniqueUser("asker")): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/api/presence?users=${users}`, { headers: { authorization: `Bearer ${await mintToken(asker, fx.cluster.jwtSecret)}` } });
  return { status: res.status, body: await res.json() };
}

async function online(base: string, users: string[]): Promise<Record<string, boolean>> {
  const r = await presence(base, users.join(","));
  expect(r.status).toBe(200);
  return r.body.online;
}

/** Polls until `user` shows `want` on `base`; resolves with the time it took, rejects after `deadlineMs`. */
async function until(base: string, user: string, want: boolean, deadlineMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if ((await online(base, [user]))[user] === want) return Date.now() - t0;
    if (Date.now() - t0 > deadlineMs) throw new Error(`${user} still ${want ? "offline" : "online"} after ${deadlineMs} ms`);
    await Bun.sleep(50);
  }
}

describe("presence", () => {
  test("answers across instances: connected on B, asked on A and on B", async () => {
    const [on, off] = [uniqueUser("on"), uniqueUser("off")];
    await connect(B(), on);
    for (const base of [A(), B()]) {
      const r = await presence(base, `${on},${off}`);
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ online: { [on]: true, [off]: false } });
    }
  });

  test("a repeated user is answered once; the caller may ask about themself", async () => {
    const me = uniqueUser("me");
    await connect(A(), me);
    const r = await presence(B(), `${me},${me}`, me);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ online: { [me]: true } });
  });

  test("goes false after the user's last connection closes", async () => {
    const user = uniqueUser("leaver");
    const c1 = await connect(A(), user);
    const c2 = await connect(A(), user);
    expect(await online(B(), [user])).toEqual({ [user]: true });
    c1.close();
    await c1.closed;
    c2.close();
    await c2.closed;
    await until(B(), user, false, 5_000);
    await until(A(), user, false, 5_000);
  });

  test("a user connected on two instances stays online when one of them closes", async () => {
    const [both, probe] = [uniqueUser("both"), uniqueUser("probe")];
    const onA = await connect(A(), both);
    await connect(B(), both);
    const p = await connect(A(), probe);
    expect(await online(B(), [both, probe])).toEqual({ [both]: true, [probe]: true });
    onA.close();
    await onA.closed;
    // The probe leaves A after `both` did; once A's directory update for it is visible, so is the one for `both`.
    p.close();
    await p.closed;
    await until(B(), probe, false, 5_000);
    for (const base of [A(), B()]) expect(await online(base, [both])).toEqual({ [both]: true });
  });

  test.each([
    ["no users parameter", ""],
    ["an empty list", "users="],
    ["an empty entry", "users=a,,b"],
    ["a trailing comma", "users=a,"],
    ["an invalid id", "users=a,bad%20id"],
    ["a 65-character id", `users=${"x".repeat(65)}`],
    ["more than 1000 users", `users=${Array.from({ length: 1001 }, (_, i) => `u${i}`).join(",")}`],
  ])("400 for %s", async (_, q) => {
    const res = await fetch(`${A()}/api/presence?${q}`, { headers: { authorization: `Bearer ${await mintToken(uniqueUser(), fx.cluster.jwtSecret)}` } });
    expect(res.status).toBe(400);
    expect(typeof ((await res.json()) as { error: unknown }).error).toBe("string");
  });

  test("watch: the current state at once, then pushed presence frames when it changes", async () => {
    const [watcher, friend] = [uniqueUser("watcher"), uniqueUser("friend")];
    const w = await connect(A(), watcher);
    w.send({ type: "watch", users: [friend] });
    expect(await w.next((f) => f.type === "presence" && f.user === friend, "initial presence")).toMatchObject({ online: false });
    const f1 = await connect(B(), friend);
    expect(await w.next((f) => f.type === "presence" && f.user === friend, "online push")).toMatchObject({ online: true });
    f1.close();
    expect(await w.next((f) => f.type === "presence" && f.user === friend, "offline push")).toMatchObject({ online: false });
    // Watching nobody stops the pushes; a malformed watch is a bad_request and changes nothing.
    w.send({ type: "watch", users: ["not valid!"] });
    expect((await w.next((f) => f.type === "error", "bad watch")).code).toBe("bad_request");
  });

  test("after an instance is killed with SIGKILL its users show offline within 10 s (unless connected elsewhere)", async () => {
    const [stranded, roaming] = [uniqueUser("stranded"), uniqueUser("roaming")];
    const s = await connect(B(), stranded);
    await connect(B(), roaming);
    await connect(A(), roaming);
    expect(await online(A(), [stranded, roaming])).toEqual({ [stranded]: true, [roaming]: true });

    const DEADLINE_MS = 10_000;
    const killedAt = Date.now();
    fx.cluster.ws[1]!.proc.kill("SIGKILL");
    await fx.cluster.ws[1]!.exited;
    await s.closed;
    await until(A(), stranded, false, DEADLINE_MS);
    expect(Date.now() - killedAt).toBeLessThanOrEqual(DEADLINE_MS);
    expect(await online(A(), [stranded, roaming])).toEqual({ [stranded]: false, [roaming]: true });
  }, 20_000);
});
