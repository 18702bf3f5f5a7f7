import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { vapidPairProblem } from "../../shared/push-keys.ts";
import { generateVapidKeys } from "../ws/push-sender.ts";

type Names = "JWT_SECRET" | "INTERNAL_SECRET";
type VapidKeys = { publicKey: string; privateKey: string };

/**
 * Development secrets: the environment's when set, else generated once and kept in
 * `<dataDir>/dev-secrets.json` (mode 0600) so tokens stay valid across restarts. The same for the
 * VAPID key pair of Web Push (`given.vapid` when the environment sets both keys).
 */
export function devSecrets(dataDir: string, given: Partial<Record<Names, string>> & { vapid?: VapidKeys }) {
  const file = join(dataDir, "dev-secrets.json");
  let stored: Partial<Record<Names, string>> & { VAPID?: VapidKeys } = {};
  if (existsSync(file)) {
    try {
      stored = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      stored = {};
    }
  }
  const generated = { JWT_SECRET: false, INTERNAL_SECRET: false, VAPID: false };
  const pick = (name: Names) => {
    if (given[name]) return given[name]!;
    generated[name] = true;
    if (typeof stored[name] === "string" && stored[name]!.length >= 16) return stored[name]!;
    return (stored[name] = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url"));
  };
  // The Web Push key pair: browsers' subscriptions are bound to it, so it is kept like the secrets.
  const kept = stored.VAPID;
  const keptOk = typeof kept?.publicKey === "string" && typeof kept.privateKey === "string" && vapidPairProblem(kept.publicKey, kept.privateKey) === null;
  if (!given.vapid) generated.VAPID = true;
  const VAPID: VapidKeys = given.vapid ?? (keptOk ? kept! : (stored.VAPID = generateVapidKeys()));
  const out = { JWT_SECRET: pick("JWT_SECRET"), INTERNAL_SECRET: pick("INTERNAL_SECRET"), VAPID };
  if (generated.JWT_SECRET || generated.INTERNAL_SECRET || generated.VAPID) writeFileSync(file, JSON.stringify(stored, null, 2), { mode: 0o600 });
  return { ...out, generated, file };
}
