import { z } from "zod";
import { vapidPairProblem } from "./push-keys.ts";

/**
 * Configuration: environment variables, overridden by command-line flags where a flag exists.
 * Parsed once at start-up; a bad value stops the process with a message naming it.
 */

const port = z.coerce.number().int().min(0).max(65535);
const url = (protocols: string[]) =>
  z.string().refine((v) => {
    try {
      return protocols.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, `must be a URL starting with ${protocols.map((p) => p + "//").join(" or ")}`);
/** Several URLs, comma-separated (spaces around commas allowed); each must be a URL of `protocols`. */
const urlList = (protocols: string[]) =>
  z.string().superRefine((v, ctx) => {
    const items = v.split(",").map((s) => s.trim());
    items.forEach((item, i) => {
      if (!item) return ctx.addIssue({ code: "custom", message: `item ${i + 1} of the comma-separated list is empty` });
      let ok = false;
      try {
        const u = new URL(item);
        ok = protocols.includes(u.protocol) && u.hostname !== "";
      } catch {}
      if (!ok)
        ctx.addIssue({
          code: "custom",
          message: `${items.length > 1 ? `item ${i + 1} (${JSON.stringify(item)}) ` : ""}must be a URL starting with ${protocols.map((p) => p + "//").join(" or ")}`,
        });
    });
  });

/** The libpq forms postgres.js accepts: one host, or `postgres://u:p@h1:5432,h2:5432/db?target_session_attrs=…`. */
const TARGET_SESSION_ATTRS = ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"];
const postgresUrl = z.string().superRefine((v, ctx) => {
  const m = /^(postgres(?:ql)?):\/\/(?:([^@/]*)@)?([^/?#]*)(.*)$/.exec(v);
  if (!m) return ctx.addIssue({ code: "custom", message: "must be a URL starting with postgres:// or postgresql://" });
  const hosts = m[3]!.split(",");
  for (const [i, h] of hosts.entries()) {
    const hm = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(h);
    if (!hm || (hm[2] !== undefined && Number(hm[2]) > 65535))
      ctx.addIssue({ code: "custom", message: `host ${i + 1} (${JSON.stringify(h)}) must be host or host:port` });
  }
  let rest: URL;
  try {
    rest = new URL(`postgres://${m[2] ? m[2] + "@" : ""}h${m[4]}`);
  } catch {
    return ctx.addIssue({ code: "custom", message: "must be a URL starting with postgres:// or postgresql://" });
  }
  const tsa = rest.searchParams.get("target_session_attrs");
  if (tsa !== null && !TARGET_SESSION_ATTRS.includes(tsa))
    ctx.addIssue({ code: "custom", message: `target_session_attrs must be one of ${TARGET_SESSION_ATTRS.join(", ")}` });
});

/** An address to bind: an IPv4 or IPv6 address or a host name. */
const bindHost = z
  .string()
  .regex(/^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$/, "must be an IP address or a host name")
  .refine((h) => !/^[0-9.]+$/.test(h) || h.split(".").every((o) => Number(o) <= 255), "must be an IP address or a host name");

/** Splits a comma-separated list setting (REDIS_URL, AMQP_URL, DISCOVER_URL) into its items. */
export function splitList(v: string): string[] {
  return v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The URL a local client reaches a server bound to `host` at (a wildcard address means loopback). */
export function localUrl(host: string, port: number): string {
  const h = !host || host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `http://${h.includes(":") ? `[${h}]` : h}:${port}`;
}

const secret = z.string().min(16, "must be at least 16 characters");
const positiveInt = z.coerce.number().int().positive();

export const ConfigSchema = z.object({
  PORT: port.optional(),
  /**
   * ws: a second listener for the gateways' internal API (`/internal/*`, plus `/health` and
   * `/metrics` of this one process); unset: everything on PORT. 0: any free port.
   */
  INTERNAL_PORT: port.optional(),
  /** ws: share PORT with other gateway processes on this host (SO_REUSEPORT); needs INTERNAL_PORT. */
  REUSE_PORT: z.enum(["0", "1", "false", "true"], { message: "must be 1, 0, true or false" }).default("0").transform((v) => v === "1" || v === "true"),
  /** The address every service binds to. */
  HOST: bindHost.default("0.0.0.0"),
  /** One URL: a single Redis; several (comma-separated): seed nodes of one Redis Cluster. */
  REDIS_URL: urlList(["redis:", "rediss:"]).optional(),
  /** Comma-separated nodes of one RabbitMQ cluster (or one broker). */
  AMQP_URL: urlList(["amqp:", "amqps:"]).optional(),
  /** One host, or several the libpq way with target_session_attrs (postgres.js follows the primary). */
  DATABASE_URL: postgresUrl.optional(),
  /** Comma-separated discover instances; a gateway uses any healthy one. */
  DISCOVER_URL: urlList(["http:", "https:"]).optional(),
  PUBLIC_URL: url(["http:", "https:"]).optional(),
  JWT_SECRET: secret.optional(),
  INTERNAL_SECRET: secret.optional(),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  /** Sends per user per second (token bucket refill) and burst. */
  RATE_LIMIT_PER_SEC: positiveInt.default(1000),
  RATE_LIMIT_BURST: positiveInt.default(2000),
  /** persist: rows per INSERT and the longest a batch waits. */
  BATCH_SIZE: positiveInt.max(5000).default(1000),
  BATCH_MS: z.coerce.number().int().min(0).max(10_000).default(20),
  /** persist: batches written at once (each on its own database connection). */
  BATCH_CONCURRENCY: positiveInt.max(8).default(2),
  /**
   * persist: unacked broker messages (not chat messages: each broker message carries up to
   * MAX_PUBLISH_BATCH = 500 of them). Bounds what one persist holds while PostgreSQL is down:
   * at most PREFETCH × 500 messages (50 × 500 × 4 KiB bodies ≈ 100 MiB worst case).
   */
  PREFETCH: positiveInt.max(1000).default(50),
  /** Isolation for tests and side-by-side stacks: the queue's name and the directory's Redis key prefix. */
  QUEUE_NAME: z.string().regex(/^[A-Za-z0-9_.:-]{1,200}$/, "letters, digits and _ . : - only").default("chat.stream"),
  REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9_.:-]{0,100}$/, "letters, digits and _ . : - only").default("chat:"),
  /** ws: login throttling (per username and per client address) and the register rate per address. */
  LOGIN_USER_MAX_FAILURES: positiveInt.max(1000).default(5),
  LOGIN_ADDR_MAX_FAILURES: positiveInt.max(100_000).default(50),
  LOGIN_WINDOW_SEC: positiveInt.max(86_400).default(900),
  LOGIN_LOCK_SEC: positiveInt.max(86_400).default(30),
  LOGIN_LOCK_MAX_SEC: positiveInt.max(7 * 86_400).default(3600),
  REGISTER_ADDR_MAX: positiveInt.max(100_000).default(60),
  REGISTER_WINDOW_SEC: positiveInt.max(86_400).default(600),
  /**
   * ws: the cost of a password hash (argon2id, one lane): memory in KiB and passes. The defaults
   * (64 MiB, 2 passes) are Bun's and above OWASP's minimum (19,456 KiB, 2 passes); anything below
   * that minimum is logged as a warning at start (the test suite runs that way, docs/operations.md).
   * A stored hash made with other values is redone at the user's next login.
   */
  PASSWORD_MEMORY_KIB: z.coerce.number().int().min(64).max(4_194_304).default(65_536),
  PASSWORD_TIME_COST: z.coerce.number().int().min(1).max(20).default(2),
  /** ws: how many reverse proxies in front of the gateway append to X-Forwarded-For (0: use the socket's address). */
  TRUSTED_PROXY_HOPS: z.coerce.number().int().min(0).max(10).default(0),
  /** ws: lifetime of access tokens and of refresh tokens (sliding: each refresh renews it). */
  ACCESS_TOKEN_TTL_SEC: positiveInt.min(10).max(86_400).default(900),
  REFRESH_TOKEN_TTL_SEC: positiveInt.min(60).max(365 * 86_400).default(30 * 86_400),
  /** ws: how long a user's token version and a token's revocation state may be served from the local cache. */
  REVOCATION_CACHE_MS: z.coerce.number().int().min(0).max(60_000).default(5000),
  /** ws: comma-separated origins allowed to call /api from other sites (CORS); empty: none. */
  CORS_ORIGINS: z
    .string()
    .transform((v) => v.split(",").map((o) => o.trim()).filter(Boolean))
    .refine((os) => os.every((o) => /^https?:\/\/[^/\s]+$/.test(o)), "comma-separated origins like https://chat.example.com (scheme and host, no path)")
    .default([]),
  /**
   * ws: how forwards to other gateways travel: `link` (a WebSocket kept open to each peer, HTTP for
   * a peer that cannot take one) or `http` (one POST per forward).
   */
  FORWARD_OVER: z.enum(["link", "http"], { message: "must be link or http" }).default("link"),
  /** ws: how long after sending a message its sender may edit or delete it, in seconds (default 48 h, at most a year; 0: never). */
  EDIT_WINDOW_SEC: z.coerce.number().int().min(0).max(365 * 86_400).default(48 * 3600),
  /**
   * Read by Bun's allocator (mimalloc) when the process starts, not by the code: how long, in ms,
   * freed memory is kept before it goes back to the system; -1: never (RSS stays at its high-water
   * mark). The launchers set -1 for persist and discover, which hold no client connections, and
   * leave gateways at mimalloc's 100 (docs/operations.md "Memory allocator"). Checked here so that
   * a typo stops the process instead of being ignored by the allocator.
   */
  MIMALLOC_PURGE_DELAY: z.coerce.number().int("must be a whole number of milliseconds or -1").min(-1, "must be -1 (never) or a delay in ms").optional(),
  /** Read by Bun's allocator at start: 0 turns off its purging of free runs inside pages in use (docs/operations.md). */
  MIMALLOC_PURGE_HOLES: z.enum(["0", "1"], { message: "must be 0 or 1" }).optional(),
  /** dev: where PGlite keeps its files. */
  DATA_DIR: z.string().min(1).default("./.data"),
  /**
   * ws: the VAPID key pair for Web Push (base64url; `bunx web-push generate-vapid-keys`), the same
   * on every gateway. Both or neither: without them the push routes answer 404 (dev generates a pair).
   */
  VAPID_PUBLIC_KEY: z.string().optional(),
  VAPID_PRIVATE_KEY: z.string().optional(),
  /** ws: the contact push services see in the VAPID JWT (`mailto:` or `https:`). */
  VAPID_SUBJECT: z
    .string()
    .refine((v) => /^(mailto:[^\s@]+@[^\s@]+|https:\/\/[^\s/]+\S*)$/.test(v), "must be a mailto: address or an https: URL")
    .default("mailto:push@relay-chat.invalid"),
  /** ws: how long a conversation's pushes to an offline user are collected into one (ms). */
  PUSH_DELAY_MS: z.coerce.number().int().min(0).max(60_000).default(2000),
  /** ws: admit http: push endpoints (tests and local push-service emulators only; browsers' services are https). */
  PUSH_ALLOW_HTTP: z.enum(["true", "false"]).default("false").transform((v) => v === "true"),
}).superRefine((c, ctx) => {
  if (c.REUSE_PORT && c.INTERNAL_PORT === undefined)
    ctx.addIssue({ code: "custom", path: ["REUSE_PORT"], message: "needs INTERNAL_PORT: on a shared port a forward addressed to this process could reach another one" });
  if (c.REUSE_PORT && !c.PORT) ctx.addIssue({ code: "custom", path: ["REUSE_PORT"], message: "needs a fixed PORT (not 0) to share" });
  if (c.INTERNAL_PORT && c.INTERNAL_PORT === c.PORT) ctx.addIssue({ code: "custom", path: ["INTERNAL_PORT"], message: "must differ from PORT" });
  if ((c.VAPID_PUBLIC_KEY === undefined) !== (c.VAPID_PRIVATE_KEY === undefined))
    return ctx.addIssue({ code: "custom", path: [c.VAPID_PUBLIC_KEY === undefined ? "VAPID_PUBLIC_KEY" : "VAPID_PRIVATE_KEY"], message: "VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are set together" });
  if (c.VAPID_PUBLIC_KEY === undefined) return;
  const problem = vapidPairProblem(c.VAPID_PUBLIC_KEY, c.VAPID_PRIVATE_KEY!);
  if (problem) ctx.addIssue({ code: "custom", path: [problem.startsWith("VAPID_PUBLIC_KEY") ? "VAPID_PUBLIC_KEY" : "VAPID_PRIVATE_KEY"], message: problem });
});
export type Config = z.infer<typeof ConfigSchema>;
export type ConfigKey = keyof Config;

export class ConfigError extends Error {}

/** Flags map `--port 3001` / `--port=3001` to a variable name. Unknown flags are an error. */
export function parseConfig(
  argv: string[],
  env: Record<string, string | undefined>,
  flags: Record<string, ConfigKey> = { port: "PORT" },
): Config {
  const merged: Record<string, string | undefined> = {};
  for (const key of Object.keys(ConfigSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== "") merged[key] = v;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) throw new ConfigError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const key = flags[name];
    if (!key) throw new ConfigError(`unknown flag --${name}; known: ${Object.keys(flags).map((f) => "--" + f).join(", ")}`);
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || value.startsWith("--")) throw new ConfigError(`flag --${name} needs a value`);
    merged[key] = value;
  }
  const r = ConfigSchema.safeParse(merged);
  if (!r.success) {
    // A private key's value stays out of the message (it ends up in logs).
    const shown = (k: string) => (k === "VAPID_PRIVATE_KEY" ? "(hidden)" : JSON.stringify(merged[k]));
    const msg = r.error.issues.map((i) => `${String(i.path[0])}: ${i.message} (got ${shown(String(i.path[0]))})`);
    throw new ConfigError(`invalid configuration: ${msg.join("; ")}`);
  }
  return r.data;
}

/** Demands that a service's required settings are present, naming the missing ones. */
export function requireKeys<K extends ConfigKey>(cfg: Config, keys: K[], exitAs?: string): Config & { [P in K]-?: NonNullable<Config[P]> } {
  const missing = keys.filter((k) => cfg[k] === undefined);
  if (missing.length) {
    const msg = `missing configuration: ${missing.join(", ")} must be set`;
    if (exitAs === undefined) throw new ConfigError(msg);
    console.error(`${exitAs}: config error: ${msg}`);
    process.exit(2);
  }
  return cfg as Config & { [P in K]-?: NonNullable<Config[P]> };
}

/** Entry-point helper: parse or print the reason and exit(2). */
export function loadConfigOrExit(flags?: Record<string, ConfigKey>): Config {
  try {
    return parseConfig(Bun.argv.slice(2), process.env, flags);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`config error: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
}
