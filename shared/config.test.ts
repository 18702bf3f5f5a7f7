import { expect, test } from "bun:test";
import { createECDH } from "node:crypto";
import { ConfigError, parseConfig, requireKeys, splitList } from "./config.ts";

const vapidPair = () => {
  const k = createECDH("prime256v1");
  k.generateKeys();
  const priv = k.getPrivateKey();
  return { publicKey: k.getPublicKey().toString("base64url"), privateKey: Buffer.concat([Buffer.alloc(32 - priv.length), priv]).toString("base64url") };
};
const [v1, v2] = [vapidPair(), vapidPair()];

test("environment values are parsed and a flag wins over the environment", () => {
  const c = parseConfig(["--port", "4000"], { PORT: "3000", REDIS_URL: "redis://127.0.0.1:6379", BATCH_SIZE: "200" });
  expect(c.PORT).toBe(4000);
  expect(c.REDIS_URL).toBe("redis://127.0.0.1:6379");
  expect(c.BATCH_SIZE).toBe(200);
  expect(parseConfig(["--port=5"], {}).PORT).toBe(5);
  expect(parseConfig([], {}).EDIT_WINDOW_SEC).toBe(172800);
  expect(parseConfig([], { EDIT_WINDOW_SEC: "0" }).EDIT_WINDOW_SEC).toBe(0);
});

test.each([
  [["--port", "abc"], {}, /PORT/],
  [["--port", "70000"], {}, /PORT/],
  [["--port"], {}, /--port needs a value/],
  [["--nope", "1"], {}, /unknown flag --nope/],
  [["stray"], {}, /unexpected argument/],
  [[], { REDIS_URL: "not a url" }, /REDIS_URL/],
  [[], { AMQP_URL: "http://x" }, /AMQP_URL/],
  [[], { DATABASE_URL: "mysql://x" }, /DATABASE_URL/],
  [[], { JWT_SECRET: "short" }, /JWT_SECRET/],
  [[], { BATCH_SIZE: "0" }, /BATCH_SIZE/],
  [[], { BATCH_CONCURRENCY: "9" }, /BATCH_CONCURRENCY/],
  [[], { BATCH_CONCURRENCY: "two" }, /BATCH_CONCURRENCY/],
  [[], { LOG_LEVEL: "loud" }, /LOG_LEVEL/],
  [[], { LOGIN_USER_MAX_FAILURES: "0" }, /LOGIN_USER_MAX_FAILURES/],
  [[], { LOGIN_USER_MAX_FAILURES: "five" }, /LOGIN_USER_MAX_FAILURES/],
  [[], { LOGIN_ADDR_MAX_FAILURES: "-3" }, /LOGIN_ADDR_MAX_FAILURES/],
  [[], { LOGIN_WINDOW_SEC: "1.5" }, /LOGIN_WINDOW_SEC/],
  [[], { LOGIN_LOCK_SEC: "0" }, /LOGIN_LOCK_SEC/],
  [[], { LOGIN_LOCK_MAX_SEC: "1e9" }, /LOGIN_LOCK_MAX_SEC/],
  [[], { REGISTER_ADDR_MAX: "abc" }, /REGISTER_ADDR_MAX/],
  [[], { REGISTER_WINDOW_SEC: "0" }, /REGISTER_WINDOW_SEC/],
  [[], { TRUSTED_PROXY_HOPS: "-1" }, /TRUSTED_PROXY_HOPS/],
  [[], { TRUSTED_PROXY_HOPS: "all" }, /TRUSTED_PROXY_HOPS/],
  [[], { ACCESS_TOKEN_TTL_SEC: "5" }, /ACCESS_TOKEN_TTL_SEC/],
  [[], { REFRESH_TOKEN_TTL_SEC: "forever" }, /REFRESH_TOKEN_TTL_SEC/],
  [[], { REVOCATION_CACHE_MS: "-1" }, /REVOCATION_CACHE_MS/],
  [[], { CORS_ORIGINS: "*" }, /CORS_ORIGINS/],
  [[], { PASSWORD_MEMORY_KIB: "32" }, /PASSWORD_MEMORY_KIB/],
  [[], { PASSWORD_MEMORY_KIB: "64MiB" }, /PASSWORD_MEMORY_KIB/],
  [[], { PASSWORD_MEMORY_KIB: "5000000" }, /PASSWORD_MEMORY_KIB/],
  [[], { PASSWORD_TIME_COST: "0" }, /PASSWORD_TIME_COST/],
  [[], { PASSWORD_TIME_COST: "2.5" }, /PASSWORD_TIME_COST/],
  [[], { CORS_ORIGINS: "https://ok.example, https://bad.example/path" }, /CORS_ORIGINS/],
  [[], { CORS_ORIGINS: "chat.example.com" }, /CORS_ORIGINS/],
  [[], { VAPID_PUBLIC_KEY: v1.publicKey }, /VAPID_PRIVATE_KEY: VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are set together/],
  [[], { VAPID_PRIVATE_KEY: v1.privateKey }, /VAPID_PUBLIC_KEY: VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are set together/],
  [[], { VAPID_PUBLIC_KEY: "not a key", VAPID_PRIVATE_KEY: v1.privateKey }, /VAPID_PUBLIC_KEY: VAPID_PUBLIC_KEY must be an uncompressed P-256 point/],
  [[], { VAPID_PUBLIC_KEY: v1.publicKey, VAPID_PRIVATE_KEY: "c2hvcnQ" }, /VAPID_PRIVATE_KEY: VAPID_PRIVATE_KEY must be 32 bytes .*\(got \(hidden\)\)/],
  [[], { VAPID_PUBLIC_KEY: v1.publicKey, VAPID_PRIVATE_KEY: v2.privateKey }, /VAPID_PRIVATE_KEY does not belong to VAPID_PUBLIC_KEY \(got \(hidden\)\)/],
  [[], { VAPID_SUBJECT: "admin@example.com" }, /VAPID_SUBJECT: must be a mailto: address or an https: URL/],
  [[], { PUSH_DELAY_MS: "-1" }, /PUSH_DELAY_MS/],
  [[], { PUSH_DELAY_MS: "61000" }, /PUSH_DELAY_MS/],
  [[], { PUSH_ALLOW_HTTP: "yes" }, /PUSH_ALLOW_HTTP/],
  [[], { INTERNAL_PORT: "70000" }, /INTERNAL_PORT/],
  [[], { INTERNAL_PORT: "x" }, /INTERNAL_PORT/],
  [["--port", "3001"], { INTERNAL_PORT: "3001" }, /INTERNAL_PORT: must differ from PORT/],
  [[], { REUSE_PORT: "yes" }, /REUSE_PORT: must be 1, 0, true or false/],
  [[], { FORWARD_OVER: "udp" }, /FORWARD_OVER: must be link or http/],
  [["--port", "3001"], { REUSE_PORT: "1" }, /REUSE_PORT: needs INTERNAL_PORT/],
  [["--port", "0"], { REUSE_PORT: "1", INTERNAL_PORT: "0" }, /REUSE_PORT: needs a fixed PORT/],
  [[], { EDIT_WINDOW_SEC: "-1" }, /EDIT_WINDOW_SEC/],
  [[], { EDIT_WINDOW_SEC: "48h" }, /EDIT_WINDOW_SEC/],
  [[], { EDIT_WINDOW_SEC: "31536001" }, /EDIT_WINDOW_SEC/],
  [[], { MIMALLOC_PURGE_DELAY: "never" }, /MIMALLOC_PURGE_DELAY/],
  [[], { MIMALLOC_PURGE_DELAY: "-2" }, /MIMALLOC_PURGE_DELAY: must be -1 \(never\) or a delay in ms/],
  [[], { MIMALLOC_PURGE_DELAY: "0.5" }, /MIMALLOC_PURGE_DELAY: must be a whole number/],
  [[], { MIMALLOC_PURGE_HOLES: "off" }, /MIMALLOC_PURGE_HOLES: must be 0 or 1/],
])("bad input %p %p is refused naming it", (argv, env, re) => {
  expect(() => parseConfig(argv as string[], env as Record<string, string>)).toThrow(re);
});

test("requireKeys names every missing setting", () => {
  const c = parseConfig([], {});
  expect(() => requireKeys(c, ["REDIS_URL", "INTERNAL_SECRET"])).toThrow(new ConfigError("missing configuration: REDIS_URL, INTERNAL_SECRET must be set"));
});

test("account settings: defaults, and values from the environment", () => {
  const d = parseConfig([], {});
  expect([d.LOGIN_USER_MAX_FAILURES, d.LOGIN_ADDR_MAX_FAILURES, d.REGISTER_ADDR_MAX, d.REGISTER_WINDOW_SEC, d.TRUSTED_PROXY_HOPS]).toEqual([5, 50, 60, 600, 0]);
  expect([d.ACCESS_TOKEN_TTL_SEC, d.REFRESH_TOKEN_TTL_SEC, d.CORS_ORIGINS]).toEqual([900, 30 * 86_400, []]);
  const c = parseConfig([], { TRUSTED_PROXY_HOPS: "2", CORS_ORIGINS: " https://a.example ,http://127.0.0.1:8080,", LOGIN_LOCK_SEC: "10" });
  expect(c.TRUSTED_PROXY_HOPS).toBe(2);
  expect(c.CORS_ORIGINS).toEqual(["https://a.example", "http://127.0.0.1:8080"]);
  expect(c.LOGIN_LOCK_SEC).toBe(10);
  expect([d.PASSWORD_MEMORY_KIB, d.PASSWORD_TIME_COST]).toEqual([65_536, 2]);
  const p = parseConfig([], { PASSWORD_MEMORY_KIB: "19456", PASSWORD_TIME_COST: "3" });
  expect([p.PASSWORD_MEMORY_KIB, p.PASSWORD_TIME_COST]).toEqual([19_456, 3]);
});

test("cluster settings: comma-separated Redis seeds, RabbitMQ nodes and discover URLs, a multi-host DATABASE_URL, HOST", () => {
  const env = {
    REDIS_URL: "redis://127.0.1.1:7001, redis://127.0.2.1:7002,redis://127.0.3.1:7003",
    AMQP_URL: "amqp://guest:guest@127.0.1.1:5672,amqp://guest:guest@127.0.2.1:5672",
    DATABASE_URL: "postgres://u:p@127.0.1.1:5432,127.0.2.1:5433/chat?target_session_attrs=read-write",
    DISCOVER_URL: "http://127.0.1.1:3000,http://127.0.2.1:3000",
    HOST: "127.0.2.1",
  };
  const c = parseConfig([], env);
  expect(splitList(c.REDIS_URL!)).toEqual(["redis://127.0.1.1:7001", "redis://127.0.2.1:7002", "redis://127.0.3.1:7003"]);
  expect(splitList(c.AMQP_URL!)).toHaveLength(2);
  expect(splitList(c.DISCOVER_URL!)).toEqual(["http://127.0.1.1:3000", "http://127.0.2.1:3000"]);
  expect(c.DATABASE_URL).toBe(env.DATABASE_URL);
  expect(c.HOST).toBe("127.0.2.1");
  expect(parseConfig([], {}).HOST).toBe("0.0.0.0");
  for (const db of ["postgresql://h1,h2/chat", "postgres://u@[::1]:5432,db.example:6432/chat?target_session_attrs=primary", "postgres://u:p@127.0.0.1:5432/chat"])
    expect(parseConfig([], { DATABASE_URL: db }).DATABASE_URL).toBe(db);
  for (const host of ["::", "::1", "localhost", "gw-1.example.org", "127.0.3.1"]) expect(parseConfig([], { HOST: host }).HOST).toBe(host);
});

test.each([
  [{ REDIS_URL: "redis://127.0.0.1:7001,,redis://127.0.0.1:7002" }, /REDIS_URL: item 2 of the comma-separated list is empty/],
  [{ REDIS_URL: "redis://127.0.0.1:7001,http://127.0.0.1:7002" }, /REDIS_URL: item 2 \("http:\/\/127.0.0.1:7002"\) must be a URL starting with redis:\/\//],
  [{ REDIS_URL: "redis://127.0.0.1:7001," }, /REDIS_URL: item 2 of the comma-separated list is empty/],
  [{ AMQP_URL: "amqp://a:5672,127.0.0.1:5673" }, /AMQP_URL: item 2/],
  [{ DISCOVER_URL: "http://a:3000,ws://b:3000" }, /DISCOVER_URL: item 2/],
  [{ DATABASE_URL: "postgres://u:p@h1:5432,,h2:5432/chat" }, /DATABASE_URL: host 2 \(""\) must be host or host:port/],
  [{ DATABASE_URL: "postgres://u:p@h1:5432,h2:99999/chat" }, /DATABASE_URL: host 2/],
  [{ DATABASE_URL: "postgres://u:p@h1:5432,h 2/chat" }, /DATABASE_URL: host 2/],
  [{ DATABASE_URL: "postgres://h1,h2/chat?target_session_attrs=writable" }, /DATABASE_URL: target_session_attrs must be one of/],
  [{ DATABASE_URL: "redis://h1,h2/chat" }, /DATABASE_URL: must be a URL starting with postgres:\/\//],
  [{ HOST: "127.0.0.300" }, /HOST: must be an IP address or a host name/],
  [{ HOST: "a host" }, /HOST/],
  [{ HOST: "http://127.0.0.1" }, /HOST/],
])("malformed cluster setting %p is refused with a clear message", (env, re) => {
  expect(() => parseConfig([], env as Record<string, string>)).toThrow(re);
});

test("push settings: a matching VAPID pair, a subject, the window and http endpoints", () => {
  const c = parseConfig([], { VAPID_PUBLIC_KEY: v1.publicKey, VAPID_PRIVATE_KEY: v1.privateKey, VAPID_SUBJECT: "https://chat.example.com/contact", PUSH_DELAY_MS: "500", PUSH_ALLOW_HTTP: "true" });
  expect([c.VAPID_PUBLIC_KEY, c.VAPID_PRIVATE_KEY, c.VAPID_SUBJECT, c.PUSH_DELAY_MS, c.PUSH_ALLOW_HTTP]).toEqual([v1.publicKey, v1.privateKey, "https://chat.example.com/contact", 500, true]);
  const d = parseConfig([], {});
  expect([d.VAPID_PUBLIC_KEY, d.VAPID_SUBJECT, d.PUSH_DELAY_MS, d.PUSH_ALLOW_HTTP]).toEqual([undefined, "mailto:push@relay-chat.invalid", 2000, false]);
});

test("FORWARD_OVER: link by default, http on request", () => {
  expect(parseConfig([], {}).FORWARD_OVER).toBe("link");
  expect(parseConfig([], { FORWARD_OVER: "http" }).FORWARD_OVER).toBe("http");
});

test("INTERNAL_PORT and REUSE_PORT: unset by default (one port, not shared); set together with a fixed PORT", () => {
  const d = parseConfig([], {});
  expect([d.INTERNAL_PORT, d.REUSE_PORT]).toEqual([undefined, false]);
  const c = parseConfig(["--port", "3001"], { INTERNAL_PORT: "0", REUSE_PORT: "1" });
  expect([c.PORT, c.INTERNAL_PORT, c.REUSE_PORT]).toEqual([3001, 0, true]);
  expect(parseConfig([], { INTERNAL_PORT: "4001", REUSE_PORT: "false" }).REUSE_PORT).toBe(false);
});

test("MIMALLOC_PURGE_DELAY: unset by default (mimalloc's own default); -1 or a delay in ms", () => {
  expect(parseConfig([], {}).MIMALLOC_PURGE_DELAY).toBeUndefined();
  expect(parseConfig([], { MIMALLOC_PURGE_DELAY: "-1" }).MIMALLOC_PURGE_DELAY).toBe(-1);
  expect(parseConfig([], { MIMALLOC_PURGE_DELAY: "100" }).MIMALLOC_PURGE_DELAY).toBe(100);
  expect(parseConfig([], { MIMALLOC_PURGE_HOLES: "0" }).MIMALLOC_PURGE_HOLES).toBe("0");
});
