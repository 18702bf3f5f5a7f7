import { expect, test } from "bun:test";
import { ConfigError, parseConfig, requireKeys } from "./config.ts";

test("environment values are parsed and a flag wins over the environment", () => {
  const c = parseConfig(["--port", "4000"], { PORT: "3000", REDIS_URL: "redis://127.0.0.1:6379", BATCH_SIZE: "200" });
  expect(c.PORT).toBe(4000);
  expect(c.REDIS_URL).toBe("redis://127.0.0.1:6379");
  expect(c.BATCH_SIZE).toBe(200);
  expect(parseConfig(["--port=5"], {}).PORT).toBe(5);
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
  [[], { CORS_ORIGINS: "https://ok.example, https://bad.example/path" }, /CORS_ORIGINS/],
  [[], { CORS_ORIGINS: "chat.example.com" }, /CORS_ORIGINS/],
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
});
