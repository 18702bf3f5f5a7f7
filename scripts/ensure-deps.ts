// `bun run dev` and `bun run test` run this first: it makes node_modules exactly what bun.lock
// and patches/ say, with `bun install --frozen-lockfile`, whenever node_modules is missing or was
// installed from another bun.lock, package.json or patch (a stamp in node_modules records which).
// Without node_modules Bun would auto-install at run time from its global cache, which ignores
// patchedDependencies: postgres.js would run unpatched. So this file imports only Bun and node: built-ins.

import { spawnSync } from "bun";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const STAMP = ".relay-chat-deps";

export interface EnsureDepsOptions {
  /** The project directory (holds package.json, bun.lock, patches/). */
  root: string;
  /** The install command; default `bun install --frozen-lockfile` with this Bun. */
  install?: string[];
  log?: (line: string) => void;
}

/** What node_modules must have been installed from: package.json, bun.lock and every patch. */
export function depsFingerprint(root: string): string {
  const hash = createHash("sha256");
  const patches = existsSync(join(root, "patches")) ? readdirSync(join(root, "patches")).sort().map((f) => join("patches", f)) : [];
  for (const f of ["package.json", "bun.lock", ...patches]) hash.update(`${f}\0`).update(readFileSync(join(root, f))).update("\0");
  return hash.digest("hex");
}

/** Installs when needed; returns whether it did. Throws when the install fails (nothing stamped then). */
export function ensureDeps(opts: EnsureDepsOptions): boolean {
  const modules = join(opts.root, "node_modules");
  const want = depsFingerprint(opts.root);
  const stamp = join(modules, STAMP);
  const have = existsSync(stamp) ? readFileSync(stamp, "utf8").trim() : null;
  if (have === want) return false;
  const install = opts.install ?? [process.execPath, "install", "--frozen-lockfile"];
  const why = !existsSync(modules) ? "there is no node_modules" : have === null ? "node_modules has no record of its install" : "bun.lock, package.json or a patch changed since the last install";
  (opts.log ?? console.error)(`installing the locked dependencies (${why}): bun install --frozen-lockfile`);
  // its output goes to stderr, keeping stdout for the command that follows (bench prints results there)
  const r = spawnSync(install, { cwd: opts.root, stdin: "ignore", stdout: 2, stderr: "inherit" });
  if (r.exitCode !== 0) {
    throw new Error(`bun install --frozen-lockfile failed (${r.exitCode === null ? `signal ${r.signalCode}` : `exit ${r.exitCode}`}); node_modules does not match bun.lock`);
  }
  if (!existsSync(modules)) throw new Error("bun install --frozen-lockfile succeeded but left no node_modules");
  writeFileSync(stamp, `${want}\n`);
  return true;
}

if (import.meta.main) {
  try {
    ensureDeps({ root: join(import.meta.dir, "..") });
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }
}
