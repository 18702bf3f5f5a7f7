import fc from "fast-check";
import { CLIENT_FRAME_TYPES, Cursor } from "../shared/protocol.ts";

/**
 * Frame generators for the fuzz tests, and an oracle written from CONTRACT.md section 3 (not from
 * the parser) that says what the server must answer to a text frame. Cursor validity is the one
 * thing taken from the implementation: a cursor is opaque, so the server alone defines which
 * strings are cursors.
 */

export type Expected = { kind: "valid"; type: "send" | "sync" | "ping" | "watch" | "edit" | "delete" } | { kind: "error"; code: "bad_request" | "too_large"; id?: string };

const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_BODY = 4096;

/** Text PostgreSQL can store: no U+0000 and no unpaired surrogate. */
const storable = (s: string) => !s.includes("\u0000") && s.isWellFormed();
/** The contract's "characters" are Unicode code points (an emoji is one character, two UTF-16 units). */
const chars = (s: string) => [...s].length;
const clientIdOk = (v: unknown): v is string => typeof v === "string" && chars(v) >= 1 && chars(v) <= 64 && storable(v);

export function expected(text: string): Expected {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { kind: "error", code: "bad_request" };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { kind: "error", code: "bad_request" };
  const o = v as Record<string, unknown>;
  const has = (k: string) => Object.prototype.hasOwnProperty.call(o, k);
  const get = (k: string) => (has(k) ? o[k] : undefined);
  const idv = get("id");
  const id = clientIdOk(idv) ? idv : undefined;
  const err = (code: "bad_request" | "too_large"): Expected => (id === undefined ? { kind: "error", code } : { kind: "error", code, id });
  const keys = Object.keys(o);
  switch (get("type")) {
    case "send": {
      const body = get("body");
      if (typeof body === "string" && chars(body) > MAX_BODY) return err("too_large");
      if (has("to") === has("group")) return err("bad_request");
      const target = has("to") ? "to" : "group";
      const t = get(target);
      const ok =
        id !== undefined &&
        typeof body === "string" &&
        chars(body) >= 1 &&
        storable(body) &&
        typeof t === "string" &&
        USER_ID.test(t) &&
        keys.every((k) => k === "type" || k === "id" || k === "body" || k === target);
      return ok ? { kind: "valid", type: "send" } : err("bad_request");
    }
    case "sync": {
      const after = get("after");
      const ok = keys.every((k) => k === "type" || k === "after") && (!has("after") || Cursor.safeParse(after).success);
      return ok ? { kind: "valid", type: "sync" } : err("bad_request");
    }
    case "ping":
      return keys.every((k) => k === "type") ? { kind: "valid", type: "ping" } : err("bad_request");
    case "watch": {
      // A project addition (not in the contract): the set of users whose presence to follow.
      if (!(CLIENT_FRAME_TYPES as readonly string[]).includes("watch")) return err("bad_request");
      const users = get("users");
      const ok = keys.every((k) => k === "type" || k === "users") && Array.isArray(users) && users.length <= 1000 && users.every((u) => typeof u === "string" && USER_ID.test(u));
      return ok ? { kind: "valid", type: "watch" } : err("bad_request");
    }
    case "edit":
    case "delete": {
      // Project additions (docs/api.md, "Edits and deletions"): a change of one's own message.
      const kind = get("type") as "edit" | "delete";
      const body = get("body");
      if (kind === "edit" && typeof body === "string" && chars(body) > MAX_BODY) return err("too_large");
      const msgId = get("msgId");
      const fields = kind === "edit" ? ["type", "id", "msgId", "body"] : ["type", "id", "msgId"];
      const ok =
        id !== undefined &&
        typeof msgId === "string" &&
        chars(msgId) >= 1 &&
        chars(msgId) <= 64 &&
        storable(msgId) &&
        (kind === "delete" || (typeof body === "string" && chars(body) >= 1 && storable(body))) &&
        keys.every((k) => fields.includes(k)) &&
        fields.every((k) => has(k));
      return ok ? { kind: "valid", type: kind } : err("bad_request");
    }
    default:
      return err("bad_request");
  }
}

/** What a text frame becomes on the wire: WebSocket text is UTF-8, so lone surrogates turn into U+FFFD. */
export const overTheWire = (s: string) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(new TextEncoder().encode(s));
export const utf8Bytes = (s: string) => new TextEncoder().encode(s).length;

/** Sets a key as an own enumerable property, even "__proto__" (plain assignment would set the prototype). */
function setOwn(o: Record<string, unknown>, k: string, v: unknown) {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

const userId = fc.stringMatching(/^[A-Za-z0-9_.-]{1,64}$/);
const anyText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "binary-ascii", maxLength: 40 }),
);
const body = fc.oneof(
  { weight: 6, arbitrary: fc.string({ minLength: 1, maxLength: 200 }) },
  { weight: 3, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 100 }) },
  { weight: 1, arbitrary: fc.constantFrom("x".repeat(MAX_BODY), "é".repeat(MAX_BODY), "😀".repeat(MAX_BODY), "e\u0301".repeat(MAX_BODY / 2), " ", "\n", "\u2028", "<script>alert(1)</script>", "'; drop table messages; --") },
);
const cursor = fc.oneof(
  { weight: 8, arbitrary: fc.constant("0") },
  { weight: 8, arbitrary: fc.integer({ min: 1, max: 10_000_000 }).map(String) },
  // around the largest exact double, where a cursor parsed as a Number would lose digits
  { weight: 1, arbitrary: fc.constantFrom("9007199254740991", "9007199254740992", "9007199254740993", "99999999999999999", "999999999999999999", "9223372036854775807") },
);
const weird = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -0, 1e308, -1e308, 5e-324, Number.MAX_SAFE_INTEGER, 2 ** 64, true, false, null, [], {}, [1, "a"], { type: "ping" }, "", " "),
  anyText,
  fc.jsonValue({ maxDepth: 3 }),
);
const extraKey = fc.oneof(
  fc.constantFrom("__proto__", "constructor", "prototype", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "then", "cursor", "from", "msgId", "ts"),
  fc.string({ maxLength: 10 }),
);

/** Valid frames; `groupId` is a group the fuzzing user is a member of. */
export function validFrame(groupId: string, idPrefix: string) {
  let n = 0;
  const freshId = fc.oneof(
    { weight: 4, arbitrary: fc.constant(null).map(() => `${idPrefix}-${n++}`) },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }).map((s) => `${idPrefix}-${n++}-${s}`.slice(0, 64)) },
  );
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ type: fc.constant("send"), id: freshId, to: userId, body }) },
    { weight: 2, arbitrary: fc.record({ type: fc.constant("send"), id: freshId, group: fc.constant(groupId), body }) },
    { weight: 2, arbitrary: fc.record({ type: fc.constant("sync"), after: cursor }, { requiredKeys: ["type"] }) },
    { weight: 2, arbitrary: fc.constant({ type: "ping" }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant("edit"), id: freshId, msgId: fc.string({ minLength: 1, maxLength: 64 }), body }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant("delete"), id: freshId, msgId: fc.string({ minLength: 1, maxLength: 64 }) }) },
  ) as fc.Arbitrary<Record<string, unknown>>;
}

type Mutation = (o: Record<string, unknown>) => fc.Arbitrary<Record<string, unknown>>;
const pickKey = (o: Record<string, unknown>) => fc.constantFrom(...Object.keys(o));
const clone = (o: Record<string, unknown>) => {
  const c: Record<string, unknown> = {};
  for (const k of Object.keys(o)) setOwn(c, k, o[k]);
  return c;
};
const MUTATIONS: Mutation[] = [
  // a field removed
  (o) => pickKey(o).map((k) => {
    const c = clone(o);
    delete c[k];
    return c;
  }),
  // a field retyped
  (o) => fc.tuple(pickKey(o), weird).map(([k, v]) => {
    const c = clone(o);
    setOwn(c, k, v);
    return c;
  }),
  // a field oversized or emptied
  (o) =>
    fc.tuple(pickKey(o), fc.oneof(fc.integer({ min: 65, max: 300 }), fc.integer({ min: MAX_BODY + 1, max: 20_000 }), fc.constant(0)), fc.constantFrom("x", "9", "é", "😀")).map(([k, len, ch]) => {
      const c = clone(o);
      setOwn(c, k, ch.repeat(Math.ceil(len / ch.length)).slice(0, len));
      return c;
    }),
  // an extra key, prototype-pollution names included
  (o) => fc.tuple(extraKey, weird).map(([k, v]) => {
    const c = clone(o);
    setOwn(c, k, v);
    return c;
  }),
  // the type changed
  (o) => fc.constantFrom("SEND", "send ", " ping", "Sync", "", "pong", "ack", "message", "error", "send\u0000", 1, null, ["send"]).map((t) => ({ ...clone(o), type: t })),
  // both recipients, or a bad recipient
  (o) => fc.tuple(fc.constantFrom("to", "group"), fc.constantFrom("no spaces", "", "é", "a/b", "x".repeat(65), "bob\n", "😀", "..", "a:b")).map(([k, v]) => ({ ...clone(o), [k]: v })),
  (o) => fc.constant({ ...clone(o), to: "bob", group: "g_x" }),
  // content PostgreSQL cannot store
  (o) => fc.constantFrom("id", "body").map((k) => ({ ...clone(o), [k]: `bad\u0000nul` })),
];

/** A valid frame with one mutation applied (which may or may not leave it valid: the oracle decides). */
export function mutatedFrame(groupId: string, idPrefix: string) {
  return validFrame(groupId, idPrefix).chain((o) => fc.oneof(...MUTATIONS.map((m) => m(o))));
}

const deep = fc.tuple(fc.integer({ min: 50, max: 9000 }), fc.constantFrom("array", "object", "in-send", "in-ping", "unclosed")).map(([n, kind]) => {
  switch (kind) {
    case "array":
      return "[".repeat(n) + "]".repeat(n);
    case "object":
      return '{"a":'.repeat(n) + "1" + "}".repeat(n);
    case "in-send":
      return `{"type":"send","id":"deep","to":"bob","body":${"[".repeat(n)}${"]".repeat(n)}}`;
    case "in-ping":
      return `{"type":"ping","x":${'{"a":'.repeat(n)}null${"}".repeat(n)}}`;
    default:
      return "[".repeat(n);
  }
});

const special = fc.constantFrom(
  '{"type":"sync","after":1e999}',
  '{"type":"sync","after":-1}',
  '{"type":"sync","after":"-1"}',
  '{"type":"sync","after":"00"}',
  '{"type":"sync","after":"1.5"}',
  '{"type":"sync","after":" 1"}',
  '{"type":"sync","after":"123456789012345678901234567890"}',
  `{"type":"sync","after":"${"9".repeat(1000)}"}`,
  '{"type":"send","id":12345678901234567890123,"to":"bob","body":"x"}',
  `{"type":"send","id":"n1","to":"bob","body":${"1".repeat(5000)}}`,
  '{"type":"ping","n":-1e-400}',
  '{"__proto__":{"type":"ping"}}',
  '{"type":"ping","__proto__":{"polluted":true}}',
  '{"constructor":{"prototype":{"polluted":true}},"type":"sync"}',
  '{"type":"send","id":"p1","to":"bob","body":"x","__proto__":{"isAdmin":true}}',
  '{"type":"send","id":"p2","to":"__proto__","body":"x"}',
  '{"type":"send","id":"p3","to":"bob","body":"x","constructor":{"prototype":{"polluted":true}}}',
  '{"type":"ping","type":"send"}',
  '{"type":"send","type":"ping"}',
  '{"type":"send","id":"nul","to":"bob","body":"a\\u0000b"}',
  '{"type":"send","id":"sur","to":"bob","body":"a\\ud800b"}',
  '{"type":"send","id":"lo\\udc00","to":"bob","body":"ok"}',
  '{"type":"send","id":"\\u0000","to":"bob","body":"ok"}',
  "null",
  "true",
  '"ping"',
  "0",
  "",
  " ",
  "{}",
  "[]",
  "\u0000",
  "\ufeff{\"type\":\"ping\"}",
  '{"type":"ping"} ',
  '{"type":"ping"}{"type":"ping"}',
  "{'type':'ping'}",
  '{"type":"ping",}',
);

const randomJson = fc.oneof(
  fc.json({ maxDepth: 4 }),
  fc.dictionary(extraKey, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }).chain((d) =>
    fc.constantFrom("send", "sync", "ping", "x").map((t) => {
      const c = clone(d);
      setOwn(c, "type", t);
      return JSON.stringify(c);
    }),
  ),
);

const randomText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: "grapheme", maxLength: 100 }),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.array(fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), { minLength: 1, maxLength: 5 }).map((a) => `{"type":"send","id":"s","to":"bob","body":"${a.join("")}"}`),
);

/** Any frame text, as the fuzzers send it. */
export function anyFrame(groupId: string, idPrefix: string): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 20, arbitrary: validFrame(groupId, idPrefix).map((o) => JSON.stringify(o)) },
    { weight: 45, arbitrary: mutatedFrame(groupId, idPrefix).map((o) => JSON.stringify(o)) },
    { weight: 12, arbitrary: randomJson },
    { weight: 10, arbitrary: randomText },
    { weight: 5, arbitrary: deep },
    { weight: 8, arbitrary: special },
  );
}
