import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { isPlainQueuedMessage } from "../protocol.ts";
import { parseBrokerBody, validateWithSchema, type ParsedBatch } from "./broker-batch.ts";

// The queue consumer's fast path (isPlainQueuedMessage) must never change a verdict: on every body
// generated here parseBrokerBody answers exactly what the schema alone answers (same messages with
// the same keys and values, or the same reason). Set FUZZ_SEED to replay a run.

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** JSON with every object's own keys sorted (own `__proto__` keys included): equal values, equal text. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const proto = Object.getPrototypeOf(v) === Object.prototype ? "" : "<proto>";
    return `${proto}{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "undefined";
}
const verdict = (p: ParsedBatch) => (p.ok ? `ok ${canonical(p.messages)}` : `invalid: ${p.reason}`);

// Sentinel keys written as `__proto__` in the JSON text (an own key once parsed).
const PROTO = "__PROTO_SENTINEL__";
const toText = (v: unknown) => JSON.stringify(v).replaceAll(`"${PROTO}"`, '"__proto__"');

const edgeStrings = [
  "", "a", "u1", "u_2.b-c", "x".repeat(64), "x".repeat(65), "\u{1F600}".repeat(32), "\u{1F600}".repeat(33), "\u{1F600}".repeat(65),
  "a\u0000b", "\ud800", "x\udfffy", "no spaces", "message", "edit", "read", "Read", "9kind", "k".repeat(32), "k".repeat(33),
  "a".repeat(4096), "a".repeat(4097), "\u{1F600}".repeat(4096), "\u{1F600}".repeat(4097), "é",
];
const edgeValues: unknown[] = [...edgeStrings, 0, 1, -1, 1.5, 2 ** 53 - 1, 2 ** 53, 1e21, null, true, [], {}, ["u1", "u2"], ["u1", "bad id"], [1], { k: 1 }, { [PROTO]: { x: 1 }, k: 2 }, [{ k: 1 }]];
const anyValue = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...edgeValues) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) });

const FIELDS = ["msgId", "id", "from", "to", "group", "body", "ts", "rcpt", "kind", "ref", "data"] as const;
const base = fc.constantFrom<Record<string, unknown>>(
  { msgId: "AbCdEfGhIjKlMnOpQrStUv", id: "c-1", from: "u1", to: "u2", body: "hello", ts: 1_700_000_000_000, rcpt: ["u1", "u2"] },
  { msgId: "m2", id: "c-2", from: "u1", group: "g1", body: "hi all", ts: 5, rcpt: ["u1", "u3", "u4"] },
  { msgId: "m3", id: "c-3", from: "u1", to: "u1", body: "note to self", ts: 0 },
  { msgId: "ev1", id: "c-4", from: "u2", to: "u1", body: "", ts: 7, kind: "read", ref: "m1", data: { refTs: 1, upTo: "1.2", rcpt: ["u2", "u1"] }, rcpt: ["u2", "u1"] },
  { msgId: "ev2", id: "c-5", from: "u2", group: "g1", body: "new text", ts: 8, kind: "edit", ref: "m2" },
);
/** A valid message, or one with some fields replaced, removed or added. */
const message = fc
  .tuple(
    base,
    fc.array(fc.tuple(fc.constantFrom(...FIELDS, "extra", PROTO, "type"), fc.option(anyValue, { nil: undefined, freq: 4 })), { maxLength: 3 }),
  )
  .map(([b, edits]) => {
    const m: Record<string, unknown> = { ...b };
    for (const [k, v] of edits) {
      if (v === undefined) delete m[k];
      else m[k] = v;
    }
    return m;
  });
const body = fc.oneof(
  { weight: 8, arbitrary: fc.array(message, { minLength: 1, maxLength: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>([], {}, null, "x", 1, [[]]) },
);

describe("parseBrokerBody", () => {
  test("answers what the schema alone answers, for valid and invalid bodies alike", () => {
    let fast = 0;
    let slowValid = 0;
    let invalid = 0;
    fc.assert(
      fc.property(body, (v) => {
        const text = toText(v);
        const got = parseBrokerBody(text);
        const want = validateWithSchema(JSON.parse(text));
        expect(verdict(got)).toBe(verdict(want));
        const raw = JSON.parse(text) as unknown;
        if (Array.isArray(raw) && raw.length > 0 && raw.every(isPlainQueuedMessage)) fast++;
        else if (want.ok) slowValid++;
        else invalid++;
      }),
      { seed: SEED, numRuns: 3000 },
    );
    // the generator reaches all three outcomes, so the comparison above tests each
    expect(fast).toBeGreaterThan(100);
    expect(slowValid).toBeGreaterThan(10);
    expect(invalid).toBeGreaterThan(100);
  });

  test("a message the fast path takes is one the schema returns unchanged", () => {
    fc.assert(
      fc.property(message, (m) => {
        const raw = JSON.parse(toText(m)) as unknown;
        if (!isPlainQueuedMessage(raw)) return;
        const r = validateWithSchema([raw]);
        expect(r.ok && canonical(r.messages[0])).toBe(canonical(raw));
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });

  test("the usual errors, as before", () => {
    expect(parseBrokerBody("not json")).toEqual({ ok: false, reason: "body is not JSON" });
    expect(parseBrokerBody("[]")).toMatchObject({ ok: false });
    const good = { msgId: "m1", id: "c1", from: "u1", to: "u2", body: "hi", ts: 1 };
    expect(parseBrokerBody(JSON.stringify([good]))).toEqual({ ok: true, messages: [good] });
    expect(parseBrokerBody(JSON.stringify([{ ...good, group: "g" }]))).toEqual({ ok: false, reason: "0: needs exactly one of to and group" });
    expect(parseBrokerBody(JSON.stringify([{ ...good, from: "no spaces allowed" }]))).toEqual({ ok: false, reason: "0.from: a user id is 1 to 64 characters of A-Z a-z 0-9 _ . -" });
    // unknown keys are stripped, as the schema does
    expect(parseBrokerBody(JSON.stringify([{ ...good, extra: 1 }]))).toEqual({ ok: true, messages: [good] });
  });
});
