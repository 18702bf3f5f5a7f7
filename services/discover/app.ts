import { zValidator } from "@hono/zod-validator";
import { Hono, type Context, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { matchedRoutes } from "hono/route";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { DirectoryUnavailable, type Directory, type DirectoryFeed, type Ledger } from "../../shared/directory/directory.ts";
import { DIRECTORY_MAX_BATCH, FEED_KEEPALIVE_MS } from "../../shared/directory/directory-http.ts";
import { silentLogger, type Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { describeIssues, UserId } from "../../shared/protocol.ts";
import { bearer, secretMatches } from "../../shared/secret.ts";

export interface DiscoverAppDeps {
  directory: Directory;
  ledger: Ledger;
  internalSecret: string;
  /** True while the backing store is connected. */
  health: () => boolean;
  metrics: Metrics;
  log?: Logger;
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;

const InstanceParams = z.object({
  id: z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, "an instance id is 1 to 128 characters of A-Z a-z 0-9 _ . : -"),
});
const HttpUrl = z.string().refine((v) => {
  try {
    return ["http:", "https:"].includes(new URL(v).protocol);
  } catch {
    return false;
  }
}, "must be an http:// or https:// URL");
const MsgId = z.string().min(1).max(256);
const users = z.array(UserId).max(DIRECTORY_MAX_BATCH);
const msgIds = z.array(MsgId).max(DIRECTORY_MAX_BATCH);

const HeartbeatBody = z.object({ url: HttpUrl, ttlMs: z.number().int().min(100).max(600_000) });
const PresenceBody = z.object({ online: users.default([]), offline: users.default([]) });
const LookupBody = z.object({ users });
const ClaimsBody = z.object({ msgIds });
const CompleteBody = z.object({
  done: z.array(z.object({ msgId: MsgId, ts: z.number().int().nonnegative() })).max(DIRECTORY_MAX_BATCH),
});

const validationHook = (result: { success: boolean; error?: unknown }, c: Context) => {
  if (!result.success) return c.json({ error: "bad_request", message: describeIssues(result.error as z.ZodError) }, 400);
};
const valid = <T extends z.ZodType, Target extends "json" | "param">(target: Target, schema: T) => zValidator(target, schema, validationHook);

function requireSecret(secret: string): MiddlewareHandler {
  return async (c, next) => {
    if (!secretMatches(bearer(c.req.header("authorization")), secret)) return c.json({ error: "unauthorized" }, 401);
    await next();
  };
}

export function createDiscoverApp(deps: DiscoverAppDeps) {
  const { directory, ledger, health, metrics } = deps;
  const log = deps.log ?? silentLogger;
  const requests = metrics.counter("discover_requests_total", "HTTP requests by route and status", ["method", "route", "status"]);
  const latency = metrics.histogram(
    "discover_request_duration_seconds",
    "HTTP request latency by route",
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    ["method", "route"],
  );
  const lookups = metrics.counter("discover_lookup_users_total", "Users looked up");
  const found = metrics.counter("discover_lookup_online_total", "Looked-up users found on at least one instance");

  const auth = requireSecret(deps.internalSecret);
  const app = new Hono();

  // The change feed: one upstream watch on the directory, shared by every subscribed gateway,
  // opened with the first subscriber and closed with the last.
  type Subscriber = (event: "ready" | "down" | "change", users?: string[]) => void;
  const subscribers = new Set<Subscriber>();
  let upstream: DirectoryFeed | null = null;
  const feedSubscribers = metrics.gauge("discover_feed_subscribers", "Gateways subscribed to the change feed");
  const subscribe = (s: Subscriber) => {
    subscribers.add(s);
    feedSubscribers.set(subscribers.size);
    upstream ??= directory.watch((users) => {
      if (users !== null) for (const x of subscribers) x("change", users);
      else for (const x of subscribers) x(upstream?.live() ? "ready" : "down");
    });
    s(upstream.live() ? "ready" : "down");
    return () => {
      subscribers.delete(s);
      feedSubscribers.set(subscribers.size);
      if (subscribers.size === 0) {
        upstream?.stop();
        upstream = null;
      }
    };
  };

  app.use(async (c, next) => {
    const start = performance.now();
    await next();
    const route = matchedRoutes(c).findLast((r) => r.method !== "ALL")?.path ?? "unmatched";
    requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    latency.observe({ method: c.req.method, route }, (performance.now() - start) / 1000);
  });

  app.get("/health", (c) => (health() ? c.json({ ok: true }) : c.json({ ok: false }, 503)));
  app.get("/metrics", () => metrics.render());

  app.use(
    "/v1/*",
    bodyLimit({ maxSize: MAX_BODY_BYTES, onError: (c) => c.json({ error: "too_large", message: `body over ${MAX_BODY_BYTES} bytes` }, 413) }),
  );

  app.put("/v1/instances/:id", auth, valid("param", InstanceParams), valid("json", HeartbeatBody), async (c) => {
    const { id } = c.req.valid("param");
    const { url, ttlMs } = c.req.valid("json");
    return c.json({ known: await directory.heartbeat({ id, url }, ttlMs) });
  });

  app.delete("/v1/instances/:id", auth, valid("param", InstanceParams), async (c) => {
    await directory.removeInstance(c.req.valid("param").id);
    return c.body(null, 204);
  });

  app.post("/v1/instances/:id/presence", auth, valid("param", InstanceParams), valid("json", PresenceBody), async (c) => {
    const { online, offline } = c.req.valid("json");
    await directory.setPresence(c.req.valid("param").id, online, offline);
    return c.body(null, 204);
  });

  app.get("/v1/changes", auth, (c) =>
    streamSSE(c, async (stream) => {
      let wake: (() => void) | null = null;
      const queue: Array<{ event: string; data: string }> = [];
      const unsubscribe = subscribe((event, users) => {
        // coalesce: a change while the last one is still being written joins it
        const last = queue[queue.length - 1];
        if (event === "change" && last?.event === "change" && last.data.length < 64_000) last.data = last.data.slice(0, -1) + "," + JSON.stringify(users).slice(1);
        else queue.push({ event, data: event === "change" ? JSON.stringify(users) : "{}" });
        wake?.();
      });
      let closed = false;
      stream.onAbort(() => {
        closed = true;
        wake?.();
      });
      try {
        while (!closed) {
          const next = queue.shift();
          if (next) {
            await stream.writeSSE(next);
            continue;
          }
          const t = setTimeout(() => wake?.(), FEED_KEEPALIVE_MS);
          await new Promise<void>((r) => (wake = r));
          wake = null;
          clearTimeout(t);
          if (!queue.length && !closed) await stream.write(": keepalive\n\n");
        }
      } finally {
        unsubscribe();
      }
    }),
  );

  app.post("/v1/lookup", auth, valid("json", LookupBody), async (c) => {
    const result = await directory.lookup(c.req.valid("json").users);
    let online = 0;
    for (const k in result) if (result[k]!.length) online++;
    lookups.inc(c.req.valid("json").users.length);
    found.inc(online);
    return c.json({ users: result });
  });

  app.post("/v1/claims", auth, valid("json", ClaimsBody), async (c) => {
    return c.json({ claims: await ledger.claim(c.req.valid("json").msgIds) });
  });

  app.post("/v1/claims/complete", auth, valid("json", CompleteBody), async (c) => {
    await ledger.complete(c.req.valid("json").done);
    return c.body(null, 204);
  });

  app.post("/v1/claims/release", auth, valid("json", ClaimsBody), async (c) => {
    await ledger.release(c.req.valid("json").msgIds);
    return c.body(null, 204);
  });

  app.notFound((c) => c.json({ error: "not_found" }, 404));

  app.onError((err, c: Context) => {
    if (err instanceof HTTPException) {
      const status = err.status;
      return c.json({ error: status === 400 ? "bad_request" : "error", message: err.message }, status);
    }
    if (err instanceof DirectoryUnavailable || !health()) {
      log.debug("directory unavailable", { route: c.req.path, err });
      return c.json({ error: "unavailable" }, 503);
    }
    log.error("request failed", { route: c.req.path, err, stack: err.stack });
    return c.json({ error: "internal" }, 500);
  });

  return app;
}
