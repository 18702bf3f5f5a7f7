import { expect, test } from "bun:test";
import fc from "fast-check";
import { sign, verify } from "hono/jwt";
import { issueUserToken, verifyHs256, verifyUserToken } from "./auth.ts";

// verifyHs256 replaces hono's `verify(token, secret, { alg: "HS256", iat: false })` on the hot
// path: it must decide exactly as hono does, on valid tokens and on every way a token can be wrong.

const SECRETS = ["a-secret-of-the-usual-kind-0123456789abcdef0123456789abcdef0123", "ünïcødé-ключ-秘密"];
const now = () => Math.floor(Date.now() / 1000);
const b64url = (s: string) => Buffer.from(s, "utf8").toString("base64url");
const hmac = (secret: string, input: string, alg = "sha256") =>
  new Bun.CryptoHasher(alg as "sha256", secret).update(input).digest("base64url");

/** hono's answer: the payload, or null when it throws. */
const hono = (token: string, secret: string) => verify(token, secret, { alg: "HS256", iat: false }).then((p) => p as unknown, () => null);
/** ours, thrown errors counted as refusals as verifyUserToken counts them. */
const ours = (token: string, secret: string) => {
  try {
    return verifyHs256(token, secret) as unknown;
  } catch {
    return null;
  }
};

// time claims far from the current second, so both sides see them on the same side of "now"
const timeClaim = fc.oneof(
  fc.constant(undefined),
  fc.integer({ min: 100, max: 100_000 }).map((d) => now() + d),
  fc.integer({ min: 100, max: 100_000 }).map((d) => now() - d),
  fc.constantFrom("soon", null, Number.NaN, Infinity, true, [1]),
);
const payload = fc.record(
  {
    sub: fc.oneof(fc.constantFrom("alice", "bob_2"), fc.string({ maxLength: 8 }), fc.integer()),
    ver: fc.oneof(fc.nat(5), fc.constant(-1), fc.constant("1")),
    exp: timeClaim,
    nbf: timeClaim,
    iat: timeClaim,
    jti: fc.string({ maxLength: 10 }),
  },
  { requiredKeys: [] },
);
const header = fc.record(
  {
    alg: fc.constantFrom("HS256", "HS256", "HS256", "HS512", "none", "RS256", "hs256", 256),
    typ: fc.constantFrom("JWT", "jwt", "application/jwt", "APPLICATION/JWT", "at+jwt", "JWS", 42, null),
    crit: fc.constant(["exp"]),
    kid: fc.string({ maxLength: 4 }),
  },
  { requiredKeys: ["alg"] },
);
/** A token built by hand: any header, any JSON (or not) as payload, signed with HMAC-SHA256 over what it holds. */
const handMade = fc
  .tuple(header, fc.oneof(payload.map((p) => JSON.stringify(p)), fc.constantFrom("null", "42", '"x"', "[1]", "{", "")), fc.constantFrom(...SECRETS), fc.boolean())
  .map(([h, p, secret, cleanSig]) => {
    const input = `${b64url(JSON.stringify(h))}.${b64url(p)}`;
    return `${input}.${cleanSig ? hmac(secret, input) : hmac(secret, input, "sha512")}`;
  });
/** A token signed by hono itself, with HS256 or another algorithm and either secret. */
const signed = fc
  .tuple(payload, fc.constantFrom("HS256", "HS256", "HS384", "HS512"), fc.constantFrom(...SECRETS))
  .map(async ([p, alg, secret]) => sign(p as Record<string, unknown>, secret, alg as "HS256"));
/** Small changes to a token: one character, the signature's padding, the parts themselves. */
const mutate = (token: string, how: number, at: number, ch: string) => {
  const parts = token.split(".");
  switch (how) {
    case 0:
      return token;
    case 1: {
      const i = at % Math.max(token.length, 1);
      return token.slice(0, i) + ch + token.slice(i + 1);
    }
    case 2:
      return `${token}${"=".repeat((at % 3) + 1)}`;
    case 3:
      return parts.slice(0, 2).join(".");
    case 4:
      return `${token}.${parts[2]}`;
    case 5:
      return `${parts[0]}.${parts[1]}.${parts[2]!.slice(0, -1)}`;
    default:
      return `${parts[0]}.${b64url(`{"sub":"alice","exp":${now() + 1000}}`)}.${parts[2]}`;
  }
};

test("verifyHs256 decides as hono's verify does, on tokens hono signed, tokens made by hand, and small changes to either", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(signed, handMade.map(async (t) => t)),
      fc.nat(6),
      fc.nat(),
      fc.constantFrom("A", "a", "-", "_", "+", "/", "*", "=", ".", "é"),
      fc.constantFrom(...SECRETS),
      async (token, how, at, ch, secret) => {
        const t = mutate(await token, how, at, ch);
        expect(ours(t, secret)).toEqual(await hono(t, secret));
      },
    ),
    { numRuns: 4000 },
  );
});

test("verifyHs256 on the cases that matter, spelled out", async () => {
  const [secret, other] = SECRETS as [string, string];
  const good = await sign({ sub: "alice", exp: now() + 60 }, secret, "HS256");
  expect(verifyHs256(good, secret)).toEqual({ sub: "alice", exp: expect.any(Number) });
  expect(verifyHs256(good, other)).toBeNull(); // another key
  expect(verifyHs256(await sign({ sub: "alice" }, secret, "HS512"), secret)).toBeNull(); // another algorithm
  expect(verifyHs256(await sign({ sub: "alice", exp: now() - 1 }, secret, "HS256"), secret)).toBeNull(); // expired
  expect(verifyHs256(await sign({ sub: "alice", nbf: now() + 60 }, secret, "HS256"), secret)).toBeNull(); // not yet
  const [h, p] = good.split(".");
  expect(verifyHs256(`${b64url('{"alg":"none","typ":"JWT"}')}.${p}.`, secret)).toBeNull(); // alg none
  const forged = `${h}.${b64url('{"sub":"mallory"}')}`;
  expect(verifyHs256(`${forged}.${good.split(".")[2]}`, secret)).toBeNull(); // payload swapped
  expect(verifyHs256(`${forged}.${hmac(secret, forged)}`, secret)).toEqual({ sub: "mallory" }); // what a holder of the key can do
  expect(await verifyUserToken(await issueUserToken("alice", secret, { ver: 3, sid: "s1", ttlSeconds: 60 }), secret)).toMatchObject({ user: "alice", ver: 3, sid: "s1" });
  expect(await verifyUserToken("not.a.token", secret)).toBeNull();
});
