import { expect, test } from "bun:test";
import { Hono } from "hono";
import type { Db } from "../../shared/db/index.ts";
import type { ApiEnv } from "./accounts.ts";
import { createPushApi } from "./push-api.ts";
import { generateVapidKeys } from "./push-sender.ts";

// What the push routes refuse before touching storage (the rest: push.integration.test.ts).
const noDb = new Proxy({}, { get: () => { throw new Error("storage must not be reached"); } }) as Db;
const as = (api: Hono<ApiEnv>) => new Hono<ApiEnv>().use(async (c, next) => (c.set("user", "ann"), next())).route("/", api);
const sub = { endpoint: "http://127.0.0.1:9/push/x", keys: { p256dh: generateVapidKeys().publicKey, auth: "AAAAAAAAAAAAAAAAAAAAAA" } };
const post = (app: Hono<ApiEnv>, body: unknown) => app.request("/api/push/subscriptions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

test("by default an endpoint must be https:", async () => {
  const app = as(createPushApi({ db: noDb, publicKey: "k", allowHttp: false }));
  const r = await post(app, sub);
  expect(r.status).toBe(400);
  expect(((await r.json()) as { error: string }).error).toContain("must be an https: URL");
});

test("without a VAPID key every push route is 404 saying so", async () => {
  const app = as(createPushApi({ db: noDb, publicKey: null, allowHttp: true }));
  for (const r of [await app.request("/api/push/key"), await post(app, sub), await app.request("/api/push/subscriptions", { method: "DELETE" })]) {
    expect(r.status).toBe(404);
    expect(await r.json()).toEqual({ error: "push notifications are not configured on this server" });
  }
});
