import { Hono } from "hono";
import { z } from "zod";
import type { Db } from "../../shared/db/index.ts";
import { fromBase64url, isP256Point } from "../../shared/push-keys.ts";
import type { ApiEnv } from "./accounts.ts";
import { removeSubscription, saveSubscription } from "./push-subscriptions.ts";
import { json } from "./validation.ts";

/** A push service's URL: https (http only where allowed), no credentials, at most 2048 characters. */
const endpoint = (allowHttp: boolean) =>
  z
    .string()
    .max(2048)
    .refine((v) => {
      try {
        const u = new URL(v);
        return (u.protocol === "https:" || (allowHttp && u.protocol === "http:")) && u.hostname !== "" && !u.username && !u.password;
      } catch {
        return false;
      }
    }, allowHttp ? "must be an http: or https: URL" : "must be an https: URL");

const key = (name: string, test: (b: Buffer) => boolean, what: string) =>
  z
    .string()
    .max(200)
    .refine((v) => {
      const b = fromBase64url(v);
      return b !== null && test(b);
    }, `${name} must be ${what} in unpadded base64url`);

const P256DH = key("keys.p256dh", isP256Point, "an uncompressed P-256 public key (65 bytes)");
const AUTH = key("keys.auth", (b) => b.length === 16, "16 bytes");

/**
 * Web Push subscriptions of the caller's browsers (docs/api.md, "Push notifications"). Mounted
 * behind the user-token check. `publicKey` null: push is not configured, and every route says 404.
 */
export function createPushApi(opts: { db: Db; publicKey: string | null; allowHttp: boolean }) {
  const app = new Hono<ApiEnv>();
  const Subscription = z.object({
    endpoint: endpoint(opts.allowHttp),
    expirationTime: z.number().nullable().optional(),
    keys: z.object({ p256dh: P256DH, auth: AUTH }),
  });

  app.use("/api/push/*", async (c, next) => {
    if (opts.publicKey === null) return c.json({ error: "push notifications are not configured on this server" }, 404);
    await next();
  });
  app.get("/api/push/key", (c) => c.json({ publicKey: opts.publicKey }));
  app.post("/api/push/subscriptions", json(Subscription), async (c) => {
    const { endpoint, keys } = c.req.valid("json");
    await saveSubscription(opts.db, c.get("user"), c.get("token").sid, { endpoint, keys });
    return c.json({ endpoint }, 201);
  });
  app.delete("/api/push/subscriptions", json(z.object({ endpoint: z.string().min(1).max(2048) })), async (c) => {
    const gone = await removeSubscription(opts.db, c.get("user"), c.req.valid("json").endpoint);
    return gone ? c.body(null, 204) : c.json({ error: "no such subscription" }, 404);
  });
  return app;
}
