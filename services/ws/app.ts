import { Hono, type Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { z } from "zod";
import type { Db } from "../../shared/db/index.ts";
import { conversationKey, legacyPosition, readConversation } from "../../shared/db/messages.ts";
import { searchMessages } from "../../shared/db/search.ts";
import { DirectoryUnavailable, type Directory } from "../../shared/directory/directory.ts";
import type { Logger } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { HISTORY_KINDS, streamFrame } from "../../shared/events/registry.ts";
import { Body, ClientMsgId, Cursor, GROUP_ROLES, GroupId, messageFrame, MsgId, SendError, storableText, UserId, type ErrorCode } from "../../shared/protocol.ts";
import { bearer, secretMatches } from "../../shared/secret.ts";
import type { ApiEnv, createAccounts } from "./accounts.ts";
import { BadForwardedFor } from "./client-address.ts";
import type { Delivery as StreamDelivery } from "./delivery.ts";
import type { Groups } from "./groups.ts";
import { apiCors, securityHeaders } from "./headers.ts";
import { changeRecord, type Pipeline } from "./pipeline.ts";
import { FORWARD_SHAPE, parseForward, type LinkData } from "./links.ts";
import type { Router } from "./router.ts";
import { formatPosition, parseCursor, type Position } from "../../shared/stream/position.ts";
import { receiptRoutes } from "./receipts-api.ts";
import * as store from "./store.ts";
import { json, query } from "./validation.ts";

type Accounts = ReturnType<typeof createAccounts>;

const CLIENT_DIR = new URL("./client/", import.meta.url).pathname;
const CLIENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  json: "application/json",
};

const HistoryQuery = z
  .object({
    with: UserId.optional(),
    group: GroupId.optional(),
    before: Cursor.optional(),
    limit: z.coerce.number().int().min(1).optional(),
  })
  .refine((q) => (q.with === undefined) !== (q.group === undefined), "give exactly one of with= or group=");
/** Search: `q` is 1 to MAX_SEARCH_CHARS characters after trimming; pages of at most MAX_SEARCH_LIMIT. */
export const MAX_SEARCH_CHARS = 200;
export const MAX_SEARCH_LIMIT = 100;
const SearchQuery = z.object({
  q: z
    .string({ error: "q is required" })
    .trim()
    .min(1, "q must not be empty")
    .max(MAX_SEARCH_CHARS, `q is at most ${MAX_SEARCH_CHARS} characters`)
    .refine(storableText, "q must be Unicode text without U+0000"),
  before: Cursor.optional(),
  limit: z.coerce.number().int().min(1).optional(),
});
/** A query parameter listing 1 to 1000 user ids, comma-separated. */
const UserList = z
  .string()
  .min(1)
  .transform((s) => s.split(","))
  .pipe(z.array(UserId).max(1000, "at most 1000 users"));
/**
 * The gateway's HTTP surface: /api (users' bearer tokens), /internal (INTERNAL_SECRET),
 * /client (static browser client), /health and /metrics.
 */
export function createApp(opts: {
  db: Db;
  directory: Directory;
  router: Router;
  stream: StreamDelivery;
  /** The send path, for edits and deletions made over HTTP. */
  pipeline: Pipeline;
  jwtSecret: string;
  internalSecret: string;
  accounts: Accounts;
  /** Web Push subscription routes (`/api/push/*`, behind the user-token check). */
  push?: Hono<ApiEnv>;
  groups: Groups;
  /** Origins allowed to call /api cross-origin (CORS); none when empty. */
  corsOrigins: string[];
  health: () => Promise<Record<string, boolean>>;
  metrics: Metrics;
  log: Logger;
}) {
  const { db } = opts;
  const app = new Hono<ApiEnv>();

  app.onError((err, c) => {
    if (err instanceof HTTPException) return c.json({ error: err.message }, err.status);
    if (err instanceof store.GroupRefused) return c.json({ error: err.message }, err.status);
    if (err instanceof BadForwardedFor) return c.json({ error: err.message }, 400);
    if (err instanceof DirectoryUnavailable) return c.json({ error: "unavailable" }, 503);
    opts.log.error("request failed", { err, path: c.req.path });
    return c.json({ error: "unavailable" }, 503);
  });
  app.notFound((c) => c.json({ error: "not found" }, 404));
  app.use(securityHeaders());
  const cors = apiCors(opts.corsOrigins);
  if (cors) app.use("/api/*", cors);

  app.get("/health", async (c) => {
    const deps = await opts.health();
    const ok = Object.values(deps).every(Boolean);
    return c.json({ ok, deps }, ok ? 200 : 503);
  });
  app.get("/metrics", () => opts.metrics.render());

  app.get("/client", (c) => c.redirect("/client/", 302));
  app.get("/client/:file{.*}", async (c) => {
    const name = c.req.param("file") || "index.html";
    if (name.includes("..") || name.startsWith("/")) return c.json({ error: "not found" }, 404);
    const file = Bun.file(CLIENT_DIR + name);
    if (!(await file.exists())) return c.json({ error: "not found" }, 404);
    const ext = name.slice(name.lastIndexOf(".") + 1);
    return new Response(file, { headers: { "content-type": CLIENT_TYPES[ext] ?? "application/octet-stream", "cache-control": "no-cache" } });
  });

  // Service-to-service: forwarded deliveries.
  app.use("/internal/*", async (c, next) => {
    if (!secretMatches(bearer(c.req.header("authorization")), opts.internalSecret)) return c.json({ error: "unauthorized" }, 401);
    await next();
  });
  app.post("/internal/push", async (c) => {
    const body = await c.req.json().catch(() => null);
    const users = body?.users;
    const frame = body?.frame;
    if (!Array.isArray(users) || users.length > 100_000 || !users.every((u) => typeof u === "string") || typeof frame?.type !== "string") {
      return c.json({ error: "expected {users:[user], frame:{type, …}}" }, 400);
    }
    return c.json({ missing: opts.router.pushLocal(users, frame) });
  });
  app.post("/internal/deliver", async (c) => {
    const f = parseForward(await c.req.json().catch(() => null));
    if (!f) return c.json({ error: FORWARD_SHAPE }, 400);
    return c.json({ missing: opts.router.deliverForward(f, "http") });
  });
  // The same forwards over a WebSocket a peer keeps open (services/ws/links.ts).
  app.get("/internal/link", (c) => {
    const srv = c.env as { upgrade?: (req: Request, o: { data: LinkData }) => boolean } | undefined;
    if (srv?.upgrade?.(c.req.raw, { data: { link: true } })) return new Response(null);
    return c.json({ error: "expected a WebSocket upgrade" }, 426);
  });

  // Accounts: register, login and refresh need no token; every other /api route does.
  app.route("/", opts.accounts.open);
  app.use("/api/*", opts.accounts.requireUser);
  app.route("/", opts.accounts.signedIn);
  if (opts.push) app.route("/", opts.push);

  // Groups.
  app.post("/api/groups", json(z.object({ name: z.string().trim().min(1).max(100), members: z.array(UserId).max(1000).default([]) })), async (c) => {
    const { name, members } = c.req.valid("json");
    return c.json(await opts.groups.create(c.get("user"), name, members), 201);
  });
  app.get("/api/groups", async (c) => c.json({ groups: await store.groupsOf(db, c.get("user")) }));
  const groupParam = (id: string) => {
    if (!GroupId.safeParse(id).success) throw new HTTPException(404, { message: "no such group" });
    return id;
  };
  const memberParam = (id: string) => {
    if (!UserId.safeParse(id).success) throw new HTTPException(400, { message: "not a user id" });
    return id;
  };
  app.post("/api/groups/:groupId/members", json(z.object({ userId: UserId })), async (c) => {
    await opts.groups.add(groupParam(c.req.param("groupId")), c.req.valid("json").userId, c.get("user"));
    return c.body(null, 204);
  });
  app.delete("/api/groups/:groupId/members/:userId", async (c) => {
    await opts.groups.remove(groupParam(c.req.param("groupId")), memberParam(c.req.param("userId")), c.get("user"));
    return c.body(null, 204);
  });
  app.put("/api/groups/:groupId/members/:userId/role", json(z.strictObject({ role: z.enum(GROUP_ROLES) })), async (c) => {
    await opts.groups.setRole(groupParam(c.req.param("groupId")), memberParam(c.req.param("userId")), c.req.valid("json").role, c.get("user"));
    return c.body(null, 204);
  });

  // History.
  app.get("/api/messages", query(HistoryQuery), async (c) => {
    const q = c.req.valid("query");
    const me = c.get("user");
    if (q.group !== undefined) {
      const g = await store.groupInfo(db, q.group);
      if (!g || !g.members.includes(me)) return c.json({ error: "you are not a member of this group" }, 403);
    }
    const conv = conversationKey(q.group !== undefined ? { from: me, group: q.group } : { from: me, to: q.with! });
    const limit = Math.min(q.limit ?? 50, 200);
    // Reads its own writes: every entry of the caller's stream allocated before now is stored first.
    await opts.stream.awaitWritten(me);
    // Messages in their current state (edited text and editedAt, or a deletion's tombstone), and
    // the events whose kind belongs in history.
    const page = await readConversation(db, me, conv, await positionBefore(me, q.before), limit, HISTORY_KINDS);
    const frames = page.messages.map((m) => streamFrame(m, formatPosition(m.position)));
    return c.json({ messages: frames, before: page.more ? frames[0]!.cursor : null });
  });

  // Search: the caller's readable messages, newest first (shared/db/search.ts says which).
  app.get("/api/search", query(SearchQuery), async (c) => {
    const q = c.req.valid("query");
    const me = c.get("user");
    await opts.stream.awaitWritten(me);
    const page = await searchMessages(db, me, q.q, await positionBefore(me, q.before), Math.min(q.limit ?? 20, MAX_SEARCH_LIMIT));
    const frames = page.messages.map((m) => messageFrame(m, formatPosition(m.position)));
    return c.json({ messages: frames, before: page.more ? frames.at(-1)!.cursor : null });
  });

  /** A `before=` cursor as a position of `user`'s stream. */
  async function positionBefore(user: string, cursor: string | undefined): Promise<Position | undefined> {
    if (cursor === undefined) return undefined;
    const c = parseCursor(cursor);
    // A previous version's cursor is a commit sequence: older than it means up to the one before.
    return "legacy" in c ? { epoch: 0, pos: (await legacyPosition(db, user, c.legacy - 1)).pos + 1 } : c;
  }

  receiptRoutes(app, { db, awaitWritten: (u) => opts.stream.awaitWritten(u) });

  // Edits and deletions over HTTP: the same events as the WebSocket frames (docs/api.md).
  const STATUS: Record<ErrorCode, 400 | 403 | 404 | 429 | 503> = { bad_request: 400, too_large: 400, forbidden: 403, not_found: 404, too_old: 403, rate_limited: 429, unavailable: 503 };
  const change = async (c: Context<ApiEnv>, kind: "edit" | "delete", clientId: string | undefined, body?: string) => {
    const ref = MsgId.safeParse(c.req.param("msgId"));
    if (!ref.success) return c.json({ error: "not a message id", code: "bad_request" }, 400);
    const m = changeRecord(c.get("user"), kind, clientId ?? crypto.randomUUID(), ref.data, body);
    try {
      const a = await opts.pipeline.send(m);
      return c.json({ msgId: m.msgId, ts: a.ts, cursor: a.cursor });
    } catch (err) {
      const e = err instanceof SendError ? err : new SendError("unavailable", "temporarily unavailable; retry");
      return c.json({ error: e.message, code: e.code }, STATUS[e.code]);
    }
  };
  app.patch("/api/messages/:msgId", json(z.strictObject({ body: Body, id: ClientMsgId.optional() })), async (c) => {
    const { body, id } = c.req.valid("json");
    return change(c, "edit", id, body);
  });
  app.delete("/api/messages/:msgId", query(z.strictObject({ id: ClientMsgId.optional() })), async (c) => change(c, "delete", c.req.valid("query").id));

  // Users: registered or not, and the registered spelling of an id given in any case.
  app.get("/api/users", query(z.object({ ids: UserList })), async (c) => {
    const list = c.req.valid("query").ids;
    const canonical = await store.canonicalIds(db, list);
    const users: Record<string, { registered: true; userId: string } | { registered: false }> = {};
    for (const u of list) {
      const id = canonical.get(u.toLowerCase());
      users[u] = id === undefined ? { registered: false } : { registered: true, userId: id };
    }
    return c.json({ users });
  });

  // Presence.
  app.get("/api/presence", query(z.object({ users: UserList })), async (c) => {
    const list = c.req.valid("query").users;
    const where = await opts.directory.lookup([...new Set(list)]);
    const online: Record<string, boolean> = {};
    for (const u of list) online[u] = (where[u]?.length ?? 0) > 0;
    return c.json({ online });
  });

  return app;
}
