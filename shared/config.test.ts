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
])("bad input %p %p is refused naming it", (argv, env, re) => {
  expect(() => parseConfig(argv as string[], env as Record<string, string>)).toThrow(re);
});

test("requireKeys names every missing setting", () => {
  const c = parseConfig([], {});
  expect(() => requireKeys(c, ["REDIS_URL", "INTERNAL_SECRET"])).toThrow(new ConfigError("missing configuration: REDIS_URL, INTERNAL_SECRET must be set"));
});
