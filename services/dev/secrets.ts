import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

type Names = "JWT_SECRET" | "INTERNAL_SECRET";

/**
 * Development secrets: the environment's when set, else generated once and kept in
 * `<dataDir>/dev-secrets.json` (mode 0600) so tokens stay valid across restarts.
 */
export function devSecrets(dataDir: string, given: Partial<Record<Names, string>>) {
  const file = join(dataDir, "dev-secrets.json");
  let stored: Partial<Record<Names, string>> = {};
  if (existsSync(file)) {
    try {
      stored = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      stored = {};
    }
  }
  const generated = { JWT_SECRET: false, INTERNAL_SECRET: false };
  const pick = (name: Names) => {
    if (given[name]) return given[name]!;
    generated[name] = true;
    if (typeof stored[name] === "string" && stored[name]!.length >= 16) return stored[name]!;
    return (stored[name] = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url"));
  };
  const out = { JWT_SECRET: pick("JWT_SECRET"), INTERNAL_SECRET: pick("INTERNAL_SECRET") };
  if (generated.JWT_SECRET || generated.INTERNAL_SECRET) writeFileSync(file, JSON.stringify(stored, null, 2), { mode: 0o600 });
  return { ...out, generated, file };
}
