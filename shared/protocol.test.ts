import { describe, expect, test } from "bun:test";
import { messageFrame, parseClientFrame, SendFrame } from "./protocol.ts";

const bad = (text: string) => {
  const r = parseClientFrame(text);
  if (r.ok) throw new Error(`expected ${text} to be rejected`);
  return r;
};

describe("parseClientFrame", () => {
  test("accepts the contract's frames", () => {
    expect(parseClientFrame(JSON.stringify({ type: "send", id: "1", to: "bob", body: "hi" }))).toEqual({
      ok: true,
      frame: { type: "send", id: "1", to: "bob", body: "hi" },
    });
    expect(parseClientFrame(JSON.stringify({ type: "send", id: "x".repeat(64), group: "g_1", body: "b".repeat(4096) })).ok).toBe(true);
    expect(parseClientFrame('{"type":"sync"}')).toEqual({ ok: true, frame: { type: "sync" } });
    expect(parseClientFrame('{"type":"sync","after":"42"}')).toEqual({ ok: true, frame: { type: "sync", after: "42" } });
    expect(parseClientFrame('{"type":"ping"}')).toEqual({ ok: true, frame: { type: "ping" } });
    expect(parseClientFrame('{"type":"watch","users":["a","b"]}')).toEqual({ ok: true, frame: { type: "watch", users: ["a", "b"] } });
  });

  test.each([
    ["not json", "{nope"],
    ["a JSON array", "[1,2]"],
    ["a JSON string", '"send"'],
    ["null", "null"],
    ["no type", '{"id":"1"}'],
    ["an unknown type", '{"type":"dance"}'],
    ["send without body", '{"type":"send","id":"1","to":"bob"}'],
    ["send with an empty body", '{"type":"send","id":"1","to":"bob","body":""}'],
    ["send with a numeric body", '{"type":"send","id":"1","to":"bob","body":5}'],
    ["send without to or group", '{"type":"send","id":"1","body":"x"}'],
    ["send with both to and group", '{"type":"send","id":"1","to":"a","group":"g","body":"x"}'],
    ["send to an invalid user id", '{"type":"send","id":"1","to":"bad user!","body":"x"}'],
    ["send to a too long user id", JSON.stringify({ type: "send", id: "1", to: "a".repeat(65), body: "x" })],
    ["send with an empty id", '{"type":"send","id":"","to":"bob","body":"x"}'],
    ["send with a too long id", JSON.stringify({ type: "send", id: "i".repeat(65), to: "bob", body: "x" })],
    ["send with a numeric id", '{"type":"send","id":7,"to":"bob","body":"x"}'],
    ["send with an unknown field", '{"type":"send","id":"1","to":"bob","body":"x","extra":1}'],
    ["sync with a bad cursor", '{"type":"sync","after":"abc"}'],
    ["sync with a numeric cursor", '{"type":"sync","after":5}'],
    ["sync with a negative cursor", '{"type":"sync","after":"-1"}'],
    ["watch without users", '{"type":"watch"}'],
    ["watch with a bad user id", '{"type":"watch","users":["a b"]}'],
    ["watch with too many users", JSON.stringify({ type: "watch", users: Array.from({ length: 1001 }, (_, i) => `u${i}`) })],
  ])("rejects %s with bad_request", (_, text) => {
    expect(bad(text).code).toBe("bad_request");
  });

  test("a body over 4096 characters is too_large and keeps the id", () => {
    const r = bad(JSON.stringify({ type: "send", id: "big", to: "bob", body: "x".repeat(4097) }));
    expect(r.code).toBe("too_large");
    expect(r.id).toBe("big");
  });

  test("the error carries the id when the frame had a valid one", () => {
    expect(bad('{"type":"send","id":"k1","to":"bob"}').id).toBe("k1");
    expect(bad('{"type":"send","id":"","to":"bob"}').id).toBeUndefined();
  });
});

test("messageFrame carries to or group, never both", () => {
  const base = { msgId: "m", id: "i", from: "a", body: "b", ts: 1 };
  expect(messageFrame({ ...base, to: "b" }, "7")).toEqual({ type: "message", ...base, to: "b", cursor: "7" });
  expect(messageFrame({ ...base, group: "g" }, "8")).toEqual({ type: "message", ...base, group: "g", cursor: "8" });
});

test("cursor is the last key of a message frame", () => {
  const s = JSON.stringify(messageFrame({ msgId: "m", id: "i", from: "a", to: "b", body: "x", ts: 1 }, "5"));
  expect(s.endsWith(',"cursor":"5"}')).toBe(true);
});

describe("parseClientFrame's send fast path", () => {
  // Plain valid sends skip zod (issue 10): it must accept exactly what SendFrame accepts, with the
  // same frame, and leave everything else to the schema (same errors). Edges on every field.
  const long = (n: number, c = "a") => c.repeat(n);
  const frames: unknown[] = [
    { type: "send", id: "1", to: "bob", body: "hi" },
    { type: "send", id: "1", group: "g_1", body: "hi" },
    { type: "send", id: long(64), to: long(64), body: long(4096) },
    { type: "send", id: long(65), to: "bob", body: "x" },
    { type: "send", id: "", to: "bob", body: "x" },
    { type: "send", id: "1", to: long(65), body: "x" },
    { type: "send", id: "1", to: "", body: "x" },
    { type: "send", id: "1", to: "bad user", body: "x" },
    { type: "send", id: "1", to: "bob", body: "" },
    { type: "send", id: "1", to: "bob", body: long(4097) },
    { type: "send", id: "1", to: "bob", body: long(4096, "😀") },
    { type: "send", id: "1", to: "bob", body: long(2048, "😀") },
    { type: "send", id: "1", to: "bob", body: "a\u0000b" },
    { type: "send", id: "1", to: "bob", body: "lone \ud800" },
    { type: "send", id: "\udc00", to: "bob", body: "x" },
    { type: "send", id: "a\u0000", to: "bob", body: "x" },
    { type: "send", id: 1, to: "bob", body: "x" },
    { type: "send", id: "1", to: 5, body: "x" },
    { type: "send", id: "1", group: null, body: "x" },
    { type: "send", id: "1", to: "bob", group: "g", body: "x" },
    { type: "send", id: "1", body: "x" },
    { type: "send", id: "1", to: "bob" },
    { type: "send", id: "1", to: "bob", body: "x", extra: 1 },
    { type: "send", id: "1", to: "bob", body: "x", to2: undefined },
  ];
  const texts = [...frames.map((f) => JSON.stringify(f)), '{"type":"send","id":"1","to":"bob","__proto__":"x"}', '{"type":"send","id":"1","to":"bob","body":"x","__proto__":{}}', '{"type":"send","id":"1","body":"x","to":"bob","to":"al"}'];

  test.each(texts.map((t) => [t.slice(0, 80), t]))("%s", (_, text) => {
    const r = parseClientFrame(text);
    const z = SendFrame.safeParse(JSON.parse(text));
    if (r.ok) {
      expect(z.success).toBe(true);
      expect(r.frame).toEqual(z.data!);
    } else if (r.code !== "too_large") expect(z.success).toBe(false);
  });
});
