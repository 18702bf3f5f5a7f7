// What a `bun test` run needs, decided from its command line before any test file loads.
//
// Rule: the run needs the servers (Redis, RabbitMQ, PostgreSQL) unless every path on the command
// line is an existing test file that needs none, and it needs Chromium unless every such file does
// without it. A file needs the servers when it, or any repository file it imports (transitively),
// contains one of the rule's server markers (the preload passes the names through which a test
// learns where the servers are); it needs Chromium when it imports the rule's browser module.
// Whenever the command line leaves the set of files open (no path: the whole suite; a name
// filter, a directory, a file that cannot be read or parsed, --changed, a --parallel worker),
// the run needs everything. (The markers are not written in this file, so that importing it
// does not count as naming them.)

import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

export interface RunNeeds {
  servers: boolean;
  browser: boolean;
}

export interface NeedsRule {
  /** Identifiers whose mention in a file means it needs the servers. */
  serverMarkers: string[];
  /** The module whose import means a file needs Chromium. */
  browserImport: string;
}

export const EVERYTHING: Readonly<RunNeeds> = Object.freeze({ servers: true, browser: true });
// `bun test` flags whose value may follow as a separate argument
const VALUE_FLAGS = new Set([
  "--timeout",
  "--rerun-each",
  "--retry",
  "--seed",
  "--coverage-reporter",
  "--coverage-dir",
  "-t",
  "--test-name-pattern",
  "--reporter",
  "--reporter-outfile",
  "--max-concurrency",
  "--path-ignore-patterns",
  "--parallel-delay",
  "--shard",
  "--timings",
  "-r",
  "--preload",
  "--env-file",
  "-c",
  "--config",
]);
// flags that choose files by themselves
const OPEN_FLAGS = /^--(changed|test-worker|cwd)(=|$)/;

/** The arguments after `test` in a `bun test` command line, or null when unknown. */
export function testArgs(cmdline: string[]): string[] | null {
  const i = cmdline.indexOf("test", 1);
  return i < 0 ? null : cmdline.slice(i + 1);
}

/** What the files chosen by `bun test <args>` (run in cwd) need; args null: unknown, so everything. */
export function runNeeds(args: string[] | null, cwd: string, rule: NeedsRule): RunNeeds {
  if (!args) return EVERYTHING;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (OPEN_FLAGS.test(a)) return EVERYTHING;
    if (a.startsWith("-")) {
      if (VALUE_FLAGS.has(a)) i++;
      continue;
    }
    const path = resolve(cwd, a);
    if (!isFile(path)) return EVERYTHING;
    files.push(path);
  }
  if (!files.length) return EVERYTHING;
  const needs: RunNeeds = { servers: false, browser: false };
  const scan: Scan = { marker: new RegExp(`\\b(${rule.serverMarkers.join("|")})\\b`), browserImport: rule.browserImport, seen: new Map() };
  for (const f of files) {
    const n = fileNeeds(f, scan);
    needs.servers ||= n.servers;
    needs.browser ||= n.browser;
  }
  return needs;
}

const transpilers = { ts: new Bun.Transpiler({ loader: "ts" }), tsx: new Bun.Transpiler({ loader: "tsx" }), js: new Bun.Transpiler({ loader: "jsx" }) };
const transpilerFor = (path: string) => (path.endsWith(".ts") || path.endsWith(".mts") ? transpilers.ts : path.endsWith(".tsx") ? transpilers.tsx : transpilers.js);

interface Scan {
  marker: RegExp;
  browserImport: string;
  seen: Map<string, RunNeeds>;
}

function fileNeeds(path: string, scan: Scan): RunNeeds {
  const known = scan.seen.get(path);
  if (known) return known;
  const needs: RunNeeds = { servers: false, browser: false };
  scan.seen.set(path, needs); // an import cycle adds nothing
  let imports: string[];
  try {
    const text = readFileSync(path, "utf8");
    needs.servers = scan.marker.test(text);
    imports = transpilerFor(path).scanImports(text).map((i) => i.path);
  } catch {
    Object.assign(needs, EVERYTHING);
    return needs;
  }
  for (const spec of imports) {
    if (spec === scan.browserImport) needs.browser = true;
    if (!spec.startsWith(".")) continue;
    const target = resolve(dirname(path), spec);
    const n = isFile(target) ? fileNeeds(target, scan) : EVERYTHING;
    needs.servers ||= n.servers;
    needs.browser ||= n.browser;
  }
  return needs;
}

function isFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}
