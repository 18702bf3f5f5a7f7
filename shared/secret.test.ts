import { describe, expect, test } from "bun:test";
import { bearer, secretMatches } from "./secret.ts";

describe("secretMatches", () => {
  const SECRET = "s3cret-s3cret-s3cret";
  test.each([
    ["the secret", SECRET, true],
    ["another secret of the same length", "x".repeat(SECRET.length), false],
    ["a prefix", SECRET.slice(0, -1), false],
    ["the secret with a suffix", `${SECRET}x`, false],
    ["empty", "", false],
    ["nothing", null, false],
    ["undefined", undefined, false],
  ] as const)("%s", (_, given, want) => {
    expect(secretMatches(given, SECRET)).toBe(want);
  });
});

describe("bearer", () => {
  test.each([
    ["Bearer abc", "abc"],
    ["bearer  abc  ", "abc"],
    ["Bearer ", null],
    ["abc", null],
    ["Bearer a b", null],
    [undefined, null],
  ] as const)("%p", (header, want) => {
    expect(bearer(header)).toBe(want);
  });
});
