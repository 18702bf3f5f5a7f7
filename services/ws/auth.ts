import { sign, verify } from "hono/jwt";
import { USER_ID_RE } from "../../shared/protocol.ts";

// service.ts reads the user token of /ws from the same header.
export { bearer } from "../../shared/secret.ts";

/** User tokens: HS256 JWTs whose `sub` is a valid user id; `exp` is enforced when present. */
export async function verifyUserToken(token: string | undefined | null, secret: string): Promise<string | null> {
  if (!token) return null;
  try {
    // `iat` is informational: a token minted on a host whose clock runs ahead must still work.
    const payload = await verify(token, secret, { alg: "HS256", iat: false });
    const sub = payload.sub;
    return typeof sub === "string" && USER_ID_RE.test(sub) ? sub : null;
  } catch {
    return null;
  }
}

export const TOKEN_TTL_SECONDS = 7 * 24 * 3600;

export function issueUserToken(userId: string, secret: string, ttlSeconds = TOKEN_TTL_SECONDS): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return sign({ sub: userId, iat: now, exp: now + ttlSeconds }, secret, "HS256");
}
