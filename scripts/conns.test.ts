import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { HELP, MAX_PER_DRIVER, parseConnsOptions, UsageError } from "./conns/options.ts";

const ROOT = join(import.meta.dir, "..");

/** Runs bench:conns' entry with `args`; a usage error must answer before any stack starts (bounded by the timeout). */
async function conns(...args: string[]) {
  const proc = Bun.spawn(["bun", "run", "scripts/conns.ts", ...args], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: 15_000, killSignal: "SIGKILL" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

describe("bench:conns command line", () => {
  test("--help documents every option and exits 0", async () => {
    const r = await conns("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${HELP}\n`);
    for (const o of ["--connections", "--gateways", "--drivers", "--addresses", "--concurrency", "--storm", "--storm-window", "--settle", "--timeout", "--json", "--help"]) {
      expect(HELP).toMatch(new RegExp(`^  ${o} `, "m"));
    }
  });

  test("a bad option exits 2 with its message before starting anything", async () => {
    const r = await conns("--connections", "lots");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--connections must be a whole number from 1 to 100000 (got "lots")');
    expect(r.stdout).toBe("");
  });

  test("defaults: 10,000 connections on one gateway, drivers and addresses sized to the limits", () => {
    expect(parseConnsOptions([])).toEqual({ connections: 10_000, gateways: 1, drivers: 1, addresses: 1, concurrency: 500, storm: false, stormWindowMs: 1000, settleSec: 15, timeoutSec: 600, json: false, help: false });
    const big = parseConnsOptions(["--connections", "50000", "--gateways", "3"]);
    expect([big.drivers, big.addresses]).toEqual([Math.ceil(50_000 / MAX_PER_DRIVER), 3]);
    const storm = parseConnsOptions(["--connections=30000", "--gateways=3", "--storm", "--storm-window", "0", "--json"]);
    expect([storm.storm, storm.stormWindowMs, storm.json]).toEqual([true, 0, true]);
  });

  test.each([
    [["--bad"], /Unknown option '--bad'/],
    [["stray"], /Unexpected argument 'stray'/],
    [["--connections", "0"], /--connections must be a whole number from 1 to 100000 \(got "0"\)/],
    [["--connections", "1.5"], /--connections must be a whole number/],
    [["--gateways", "17"], /--gateways must be a whole number from 1 to 16/],
    [["--drivers", "0"], /--drivers must be a whole number from 1 to 32/],
    [["--addresses", "251"], /--addresses must be a whole number from 1 to 250/],
    [["--concurrency", ""], /--concurrency must be a whole number from 1 to 10000 \(got ""\)/],
    [["--storm-window=-1"], /--storm-window must be a whole number from 0 to 60000/],
    [["--storm-window", "61000"], /--storm-window must be a whole number from 0 to 60000/],
    [["--settle", "0"], /--settle must be a whole number from 1 to 600/],
    [["--timeout", "5"], /--timeout must be a whole number from 10 to 3600/],
    [["--connections", "40000", "--drivers", "2"], /--drivers 2 would put 20000 connections on one driver \(at most 19000/],
    [["--connections", "60000", "--addresses", "2"], /--addresses 2 would put 30000 connections on one destination address \(at most 25000/],
    [["--connections", "3", "--drivers", "4"], /--drivers 4 is more than --connections 3/],
    [["--storm"], /--storm needs --gateways 2 or more/],
    [["--storm", "--gateways", "1"], /--storm needs --gateways 2 or more/],
  ])("rejects %j", (argv, message) => {
    expect(() => parseConnsOptions(argv as string[])).toThrow(UsageError);
    expect(() => parseConnsOptions(argv as string[])).toThrow(message);
  });
});
