import { describe, expect, test } from "bun:test";
import { mintToken, uniqueUser } from "../../test/client.ts";
import { useCluster } from "../../test/fixture.ts";
import { MAX_SEARCH_CHARS, MAX_SEARCH_LIMIT } from "./app.ts";

// GET /api/search on real processes: two gateways, persist and PostgreSQL.

const fx = useCluster({ ws: 2 });
const { A, B, connect } = fx;

async function search(user: string, params: Record<string, string>, base = A()): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/api/search?${new URLSearchParams(params)}`, { headers: { authorization: `Bearer ${await mintToken(user, fx.cluster.jwtSecret)}` } });
  return { status: res.status, body: await res.json() };
}
const bodies = (r: { body: any }) => (r.body.messages as Array<{ body: string }>).map((m) => m.body);

describe("GET /api/search", () => {
  test("finds a message just acknowledged on the other instance, as a message frame with the caller's cursor", async () => {
    const [ann, bob] = [uniqueUser("ann"), uniqueUser("bob")];
    const a = await connect(A(), ann);
    const w = `fox${crypto.randomUUID().slice(0, 6)}`;
    const ack = await a.sendMessage({ to: bob }, `the quick brown ${w} jumps`);
    expect(ack.type).toBe("ack");
    // read-your-writes: no waiting for persist before asking
    const r = await search(bob, { q: w.toUpperCase() }, B());
    expect(r.status).toBe(200);
    expect(r.body.before).toBeNull();
    expect(r.body.messages).toHaveLength(1);
    const m = r.body.messages[0];
    expect(m).toMatchObject({ type: "message", msgId: ack.msgId, id: ack.id, from: ann, to: bob, body: `the quick brown ${w} jumps`, ts: ack.ts });
    expect(m.cursor).toMatch(/^\d+\.\d+$/);
    // the sender finds it too, at her own position (the ack's cursor)
    const mine = await search(ann, { q: w });
    expect(mine.body.messages[0].cursor).toBe(ack.cursor);
  });

  test("permission: others' conversations are not found; a group's messages by its members, from when they joined (with the history they were given), while they are members", async () => {
    const [ann, bob, cat, dan] = [uniqueUser("ann"), uniqueUser("bob"), uniqueUser("cat"), uniqueUser("dan")];
    const w = `secret${crypto.randomUUID().slice(0, 6)}`;
    const a = await connect(A(), ann);
    const g = await fx.createGroup(ann, [bob]);
    await a.sendMessage({ to: bob }, `${w} direct`);
    await a.sendMessage({ group: g }, `${w} before dan`);
    const added = await fetch(`${A()}/api/groups/${g}/members`, {
      method: "POST",
      headers: { authorization: `Bearer ${await fx.token(ann)}`, "content-type": "application/json" },
      body: JSON.stringify({ userId: dan }),
    });
    expect(added.status).toBe(204);
    await a.sendMessage({ group: g }, `${w} after dan`);
    expect(bodies(await search(ann, { q: w }))).toEqual([`${w} after dan`, `${w} before dan`, `${w} direct`]);
    expect(bodies(await search(bob, { q: w }, B()))).toEqual([`${w} after dan`, `${w} before dan`, `${w} direct`]);
    // a new member is given the group's latest messages (docs/api.md, "Groups"): those are found too
    expect(bodies(await search(dan, { q: w }))).toEqual([`${w} after dan`, `${w} before dan`]);
    expect(bodies(await search(cat, { q: w }, B()))).toEqual([]);
    // bob leaves the group: only the direct message is left for him
    const left = await fetch(`${A()}/api/groups/${g}/members/${bob}`, { method: "DELETE", headers: { authorization: `Bearer ${await fx.token(bob)}` } });
    expect(left.status).toBe(204);
    expect(bodies(await search(bob, { q: w }))).toEqual([`${w} direct`]);
  });

  test("paging: newest first, `before` from each answer until null; a blanked (deleted) message is left out", async () => {
    const [ann, bob] = [uniqueUser("ann"), uniqueUser("bob")];
    const w = `page${crypto.randomUUID().slice(0, 6)}`;
    const a = await connect(A(), ann);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) {
      sent.unshift(`${w} number ${i}`);
      await a.sendMessage({ to: bob }, `${w} number ${i}`);
      await a.sendMessage({ to: bob }, `unrelated ${i}`);
    }
    const pages: string[][] = [];
    let before: string | undefined;
    for (;;) {
      const r = await search(bob, { q: w, limit: "2", ...(before ? { before } : {}) }, B());
      expect(r.status).toBe(200);
      pages.push(bodies(r));
      if (r.body.before === null) break;
      expect(r.body.before).toBe(r.body.messages.at(-1).cursor);
      before = r.body.before;
    }
    expect(pages).toEqual([sent.slice(0, 2), sent.slice(2, 4), sent.slice(4)]);
    // deletion blanks the body (issue 13 item 3): such a row is no longer found
    await fx.sql()`update messages set body = '' where body = ${sent[0]!}`;
    expect(bodies(await search(bob, { q: w }))).toEqual(sent.slice(1));
    // a limit over the cap counts as the cap
    expect((await search(bob, { q: w, limit: String(MAX_SEARCH_LIMIT * 10) })).status).toBe(200);
  });

  test("validation: q required, non-empty and at most the cap; limit a positive integer; before a cursor; a token required", async () => {
    const u = uniqueUser("u");
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{}, /^q: q is required$/],
      [{ q: "" }, /^q: q must not be empty$/],
      [{ q: "   " }, /^q: q must not be empty$/],
      [{ q: "x".repeat(MAX_SEARCH_CHARS + 1) }, /^q: q is at most 200 characters$/],
      [{ q: "a\u0000b" }, /^q: .*U\+0000/],
      [{ q: "x", limit: "0" }, /^limit: /],
      [{ q: "x", limit: "-3" }, /^limit: /],
      [{ q: "x", limit: "1.5" }, /^limit: /],
      [{ q: "x", limit: "many" }, /^limit: /],
      [{ q: "x", before: "yesterday" }, /^before: not a cursor/],
      [{ q: "x", before: "1.2.3" }, /^before: not a cursor/],
    ];
    for (const [params, message] of cases) {
      const r = await search(u, params);
      expect({ params, status: r.status }).toEqual({ params, status: 400 });
      expect({ params, error: r.body.error }).toEqual({ params, error: expect.stringMatching(message) });
    }
    expect((await search(u, { q: "x".repeat(MAX_SEARCH_CHARS) })).status).toBe(200);
    // punctuation only: no words to look for, nothing found
    expect(await search(u, { q: "!?" })).toEqual({ status: 200, body: { messages: [], before: null } });
    expect((await fetch(`${A()}/api/search?q=x`)).status).toBe(401);
  });
});
