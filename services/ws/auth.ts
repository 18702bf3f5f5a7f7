import { sign, verify } from "hono/jwt";
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
    const p = await verify(token, secret, { alg: "HS256", iat: false });
    const { sub, ver = 0, jti, sid, exp } = p as Record<string, unknown>;
    if (typeof sub !== "string" || !USER_ID_RE.test(sub)) return null;
    if (typeof ver !== "number" || !Number.isSafeInteger(ver) || ver < 0) return null;
    const id = typeof jti === "string" && jti.length > 0 && jti.length <= 128 ? `j:${jti}` : `h:${new Bun.CryptoHasher("sha256").update(token).digest("hex")}`;
    return { user: sub, ver, id, expMs: typeof exp === "number" ? exp * 1000 : null, sid: typeof sid === "string" ? sid : null };
  } catch {
    return null;
  }
}

export function issueUserToken(userId: string, secret: string, opts: { ver: number; sid: string; ttlSeconds: number }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign({ sub: userId, ver: opts.ver, sid: opts.sid, jti: crypto.randomUUID(), iat: now, exp: now + opts.ttlSeconds }, secret, "HS256");
}
