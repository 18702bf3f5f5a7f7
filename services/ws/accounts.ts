import { Hono, type Context, type MiddlewareHandler } from "hono";
import { z } from "zod";
import type { Config } from "../../shared/config.ts";
import type { Db } from "../../shared/db/index.ts";
import { UserId } from "../../shared/protocol.ts";
import { bearer, issueUserToken, verifyUserToken, type UserToken } from "./auth.ts";
import { clientAddress } from "./client-address.ts";
import type { Revocations } from "./revocations.ts";
import { dropSessionSubscriptions, dropUserSubscriptions } from "./push-subscriptions.ts";
import * as store from "./store.ts";
import type { Throttle, ThrottleRule } from "./throttle.ts";
import type { TokenGate } from "./token-gate.ts";
import { json } from "./validation.ts";

export type ApiEnv = { Variables: { user: string; token: UserToken } };

/** The accounts' configuration (from the config schema: see accountSettings). */
export interface AccountSettings {
  limits: { loginUser: ThrottleRule; loginAddr: ThrottleRule; registerAddr: ThrottleRule };
  /** See clientAddress(). */
  trustedProxyHops: number;
  accessTtlSec: number;
  refreshTtlSec: number;
  revocationCacheMs: number;
  corsOrigins: string[];
  /** argon2id's cost for new hashes (PASSWORD_MEMORY_KIB, PASSWORD_TIME_COST). */
  passwordCost: PasswordCost;
}

export interface PasswordCost {
  /** KiB */
  memoryCost: number;
  timeCost: number;
}

/** OWASP's lowest recommended argon2id cost (one lane): below it the gateway warns at start. */
export const OWASP_MIN_COST: PasswordCost = { memoryCost: 19_456, timeCost: 2 };
export const weakPasswordCost = (c: PasswordCost) => c.memoryCost < OWASP_MIN_COST.memoryCost || c.timeCost < OWASP_MIN_COST.timeCost;

/** Whether `hash` was made with another cost than `cost` (or is not an argon2id hash at all). */
export function hashedWithOtherCost(hash: string, cost: PasswordCost): boolean {
  const m = /^\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=1\$/.exec(hash);
  return !m || Number(m[1]) !== cost.memoryCost || Number(m[2]) !== cost.timeCost;
}

export interface AccountsOptions extends AccountSettings {
  db: Db;
  jwtSecret: string;
  throttle: Throttle;
  revocations: Revocations;
  gate: TokenGate;
}

export function accountSettings(cfg: Config): AccountSettings {
  const s = 1000;
  return {
    limits: {
      loginUser: { max: cfg.LOGIN_USER_MAX_FAILURES, windowMs: cfg.LOGIN_WINDOW_SEC * s, lockMs: cfg.LOGIN_LOCK_SEC * s, maxLockMs: cfg.LOGIN_LOCK_MAX_SEC * s },
      loginAddr: { max: cfg.LOGIN_ADDR_MAX_FAILURES, windowMs: cfg.LOGIN_WINDOW_SEC * s, lockMs: cfg.LOGIN_LOCK_SEC * s, maxLockMs: cfg.LOGIN_LOCK_MAX_SEC * s },
      // A plain rate: past the limit, refused until the window would have ended.
      registerAddr: { max: cfg.REGISTER_ADDR_MAX + 1, windowMs: cfg.REGISTER_WINDOW_SEC * s, lockMs: cfg.REGISTER_WINDOW_SEC * s, maxLockMs: cfg.REGISTER_WINDOW_SEC * s, forgetAfterLock: true },
    },
    trustedProxyHops: cfg.TRUSTED_PROXY_HOPS,
    accessTtlSec: cfg.ACCESS_TOKEN_TTL_SEC,
    refreshTtlSec: cfg.REFRESH_TOKEN_TTL_SEC,
    revocationCacheMs: cfg.REVOCATION_CACHE_MS,
    corsOrigins: cfg.CORS_ORIGINS,
    passwordCost: { memoryCost: cfg.PASSWORD_MEMORY_KIB, timeCost: cfg.PASSWORD_TIME_COST },
  };
}

const Password = z.string().min(8).max(128);
const Credentials = z.object({ username: UserId, password: Password });

/**
 * Accounts (docs/api.md, "Accounts"): `open` holds the routes that need no access token
 * (register, login, refresh), `requireUser` is the bearer-token door of every other /api route,
 * `signedIn` the account routes behind it (logout, logout-all, password).
 */
export function createAccounts(opts: AccountsOptions) {
  const { db, throttle, limits } = opts;
  const hashPassword = (password: string) => Bun.password.hash(password, { algorithm: "argon2id", ...opts.passwordCost });
  /** A hash of a random password at today's cost: verifying against it makes an unknown user cost what a wrong password costs. */
  const dummyHash = hashPassword(crypto.randomUUID());

  const addressOf = (c: Context) => {
    const peer = (c.env as { requestIP?: (r: Request) => { address: string } | null } | undefined)?.requestIP?.(c.req.raw)?.address ?? "unknown";
    return clientAddress(peer, c.req.header("x-forwarded-for"), opts.trustedProxyHops);
  };
  const tooMany = (c: Context, ms: number) => {
    const s = Math.max(1, Math.ceil(ms / 1000));
    return c.json({ error: "too many attempts; try again later", retryAfter: s }, 429, { "retry-after": String(s) });
  };
  /** A new sign-in, or the next link of one (same `sid`). */
  const session = async (user: string, ver: number, sid: string = crypto.randomUUID()) => ({
    userId: user,
    token: await issueUserToken(user, opts.jwtSecret, { ver, sid, ttlSeconds: opts.accessTtlSec }),
    refreshToken: await store.addRefreshToken(db, user, sid, opts.refreshTtlSec * 1000),
    expiresIn: opts.accessTtlSec,
  });

  // A malformed X-Forwarded-For throws BadForwardedFor: app.onError answers 400.
  const open = new Hono<ApiEnv>();

  // Every attempt counts against the address, valid or not: registering is cheap to try and costly to serve.
  open.post(
    "/api/register",
    async (c, next) => {
      const key = `register:addr:${addressOf(c)}`;
      const locked = (await throttle.lockedFor([key])) || (await throttle.hit(key, limits.registerAddr));
      if (locked > 0) return tooMany(c, locked);
      await next();
    },
    json(Credentials),
    async (c) => {
      const { username, password } = c.req.valid("json");
      const hash = await hashPassword(password);
      if (!(await store.createUser(db, username, hash))) return c.json({ error: "username is taken" }, 409);
      return c.json(await session(username, await opts.revocations.version(username)), 201);
    },
  );

  // Failures count against the username and the address; a lock refuses even the right password.
  // Nothing here depends on whether the user exists.
  open.post("/api/login", json(z.object({ username: z.string().max(128), password: z.string().max(1024) })), async (c) => {
    const { username, password } = c.req.valid("json");
    const keys = [`login:user:${username}`, `login:addr:${addressOf(c)}`] as const;
    const locked = await throttle.lockedFor([...keys]);
    if (locked > 0) return tooMany(c, locked);
    const hash = await store.passwordHashOf(db, username);
    const ok = await Bun.password.verify(password, hash ?? (await dummyHash));
    if (!hash || !ok) {
      await Promise.all([throttle.hit(keys[0], limits.loginUser), throttle.hit(keys[1], limits.loginAddr)]);
      return c.json({ error: "wrong username or password" }, 401);
    }
    await throttle.reset(keys[0]);
    // A hash made at another cost (PASSWORD_MEMORY_KIB, PASSWORD_TIME_COST changed since) is made
    // again now that the password is at hand; only if it is still the one just verified, so a
    // password change that raced this login is never undone.
    if (hashedWithOtherCost(hash, opts.passwordCost)) await store.replacePasswordHash(db, username, hash, await hashPassword(password));
    return c.json(await session(username, await opts.revocations.version(username)));
  });

  open.post("/api/refresh", json(z.object({ refreshToken: z.string().min(1).max(200) })), async (c) => {
    // The version is read before the token is used: a logout-all (revoke refresh tokens, then bump)
    // racing this refresh can never leave it holding a valid new token.
    const token = c.req.valid("json").refreshToken;
    const owner = await store.refreshTokenUser(db, token);
    const ver = owner === null ? 0 : await opts.revocations.version(owner);
    const r = await store.useRefreshToken(db, token);
    if (!r.ok) return c.json({ error: r.reused ? "refresh token already used; its session is ended" : "invalid or expired refresh token" }, 401);
    return c.json(await session(r.userId, ver, r.familyId));
  });

  const requireUser: MiddlewareHandler<ApiEnv> = async (c, next) => {
    const t = await verifyUserToken(bearer(c.req.header("authorization")), opts.jwtSecret);
    if (!t || !(await opts.gate.valid(t))) return c.json({ error: "a valid bearer token is required" }, 401);
    c.set("user", t.user);
    c.set("token", t);
    await next();
  };

  const signedIn = new Hono<ApiEnv>();
  signedIn.post("/api/logout", async (c) => {
    const t = c.get("token");
    if (t.sid) await store.revokeFamily(db, t.sid);
    await opts.revocations.revokeToken(t.user, t.id, t.expMs);
    if (t.sid) await dropSessionSubscriptions(db, t.user, t.sid);
    return c.body(null, 204);
  });
  signedIn.post("/api/logout-all", async (c) => {
    // Refresh tokens first, then the version (see /api/refresh).
    await store.revokeAllRefreshTokens(db, c.get("user"));
    await opts.revocations.bump(c.get("user"));
    await dropUserSubscriptions(db, c.get("user"));
    return c.body(null, 204);
  });
  signedIn.post("/api/password", json(z.object({ current: z.string().max(1024), next: Password })), async (c) => {
    const { current, next } = c.req.valid("json");
    const user = c.get("user");
    const key = `login:user:${user}`;
    const locked = await throttle.lockedFor([key]);
    if (locked > 0) return tooMany(c, locked);
    const hash = await store.passwordHashOf(db, user);
    const ok = await Bun.password.verify(current, hash ?? (await dummyHash));
    if (!hash || !ok) {
      await throttle.hit(key, limits.loginUser);
      return c.json({ error: "the current password is wrong" }, 403);
    }
    await throttle.reset(key);
    await store.setPasswordHash(db, user, await hashPassword(next));
    await store.revokeAllRefreshTokens(db, user);
    const ver = await opts.revocations.bump(user);
    // Other devices are signed out: their push subscriptions go; this browser's follow its new session.
    const sid = crypto.randomUUID();
    await dropUserSubscriptions(db, user, { sessionId: c.get("token").sid, movedTo: sid });
    return c.json(await session(user, ver, sid));
  });

  return { open, requireUser, signedIn };
}
