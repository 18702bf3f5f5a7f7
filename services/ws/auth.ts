import { timingSafeEqual } from "node:crypto";
import { decode, sign } from "hono/jwt";
import { decodeBase64Url } from "hono/utils/encode";
import { USER_ID_RE } from "../../shared/protocol.ts";

// service.ts reads the user token of /ws from the same header.
export { bearer } from "../../shared/secret.ts";

/** What a valid user token tells. */
export interface UserToken {
  user: string;
  /** The user's token version when it was issued (`ver`; 0 when absent, as in minted tokens). */
  ver: number;
  /** Names this one token for the denylist: its `jti`, or a hash of the whole token when it has none. */
  id: string;
  /** `exp` in ms since the epoch; null for a token without one. */
  expMs: number | null;
  /** The session (refresh-token family) it was issued for (`sid`), if any. */
  sid: string | null;
}

/**
 * User tokens: HS256 JWTs whose `sub` is a valid user id; `exp` is enforced when present; `ver`,
 * when present, is a non-negative integer. Whether the token was revoked is the token gate's
 * question (token-gate.ts), not this function's.
 */
export async function verifyUserToken(token: string | undefined | null, secret: string): Promise<UserToken | null> {
  if (!token) return null;
  try {
    // `iat` is informational: a token minted on a host whose clock runs ahead must still work.
    const p = verifyHs256(token, secret);
    if (p === null) return null;
    const { sub, ver = 0, jti, sid, exp } = p as Record<string, unknown>;
    if (typeof sub !== "string" || !USER_ID_RE.test(sub)) return null;
    if (typeof ver !== "number" || !Number.isSafeInteger(ver) || ver < 0) return null;
    const id = typeof jti === "string" && jti.length > 0 && jti.length <= 128 ? `j:${jti}` : `h:${new Bun.CryptoHasher("sha256").update(token).digest("hex")}`;
    return { user: sub, ver, id, expMs: typeof exp === "number" ? exp * 1000 : null, sid: typeof sid === "string" ? sid : null };
  } catch {
    return null;
  }
}

const SIGNATURE_RE = /^[A-Za-z0-9_-]*={0,2}$/;

/**
 * What hono's `verify(token, secret, { alg: "HS256", iat: false })` decides, with the HMAC computed
 * by Bun at once instead of through WebCrypto (which imported the key again on every call: 63 µs of
 * CPU per token, on every connect and every authenticated request; docs/benchmarks.md). The same
 * checks: three parts decoded by hono's `decode`; a header naming HS256, with no `crit` and a `typ`
 * that is absent or JWT; `nbf` and `exp` when present; the signature's base64url form; an HMAC-SHA256
 * over the first two parts with the secret's UTF-8 bytes, compared in constant time. Returns the
 * payload, or null; throws where hono's would on a payload that is not an object (the caller
 * treats both alike). `auth.test.ts` checks it against hono's `verify` on generated tokens.
 */
export function verifyHs256(token: string, secret: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  let decoded: { header: unknown; payload: unknown };
  try {
    decoded = decode(token);
  } catch {
    return null;
  }
  const header = decoded.header as Record<string, unknown> | null;
  if (typeof header !== "object" || header === null || header.alg !== "HS256" || "crit" in header) return null;
  if ("typ" in header && !(typeof header.typ === "string" && header.typ.toLowerCase().replace(/^application\//, "") === "jwt")) return null;
  const payload = decoded.payload as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  if (payload.nbf !== undefined && (typeof payload.nbf !== "number" || !Number.isFinite(payload.nbf) || payload.nbf > now)) return null;
  if (payload.exp !== undefined && (typeof payload.exp !== "number" || !Number.isFinite(payload.exp) || payload.exp <= now)) return null;
  if (!SIGNATURE_RE.test(parts[2]!)) return null;
  let signature: Uint8Array;
  try {
    signature = decodeBase64Url(parts[2]!);
  } catch {
    return null;
  }
  const mac = new Bun.CryptoHasher("sha256", secret).update(token.substring(0, token.lastIndexOf("."))).digest();
  return signature.length === mac.length && timingSafeEqual(signature, mac) ? payload : null;
}

export function issueUserToken(userId: string, secret: string, opts: { ver: number; sid: string; ttlSeconds: number }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign({ sub: userId, ver: opts.ver, sid: opts.sid, jti: crypto.randomUUID(), iat: now, exp: now + opts.ttlSeconds }, secret, "HS256");
}
