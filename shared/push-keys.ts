import { createECDH } from "node:crypto";

/** Unpadded base64url, as browsers and `web-push` write keys. */
const B64URL = /^[A-Za-z0-9_-]+$/;

/** The bytes of an unpadded base64url string, or null when it is not one. */
export function fromBase64url(s: string): Buffer | null {
  return B64URL.test(s) ? Buffer.from(s, "base64url") : null;
}

/** Whether `b` is an uncompressed point on P-256 (65 bytes, 0x04 first). */
export function isP256Point(b: Buffer): boolean {
  if (b.length !== 65 || b[0] !== 4) return false;
  try {
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(Buffer.alloc(32, 1));
    ecdh.computeSecret(b);
    return true;
  } catch {
    return false;
  }
}

/** What is wrong with a VAPID key pair (base64url), or null when the private key yields the public one. */
export function vapidPairProblem(publicKey: string, privateKey: string): string | null {
  const pub = fromBase64url(publicKey);
  if (!pub || !isP256Point(pub)) return "VAPID_PUBLIC_KEY must be an uncompressed P-256 point, 65 bytes in unpadded base64url";
  const priv = fromBase64url(privateKey);
  if (!priv || priv.length !== 32) return "VAPID_PRIVATE_KEY must be 32 bytes in unpadded base64url";
  try {
    const derived = createECDH("prime256v1");
    derived.setPrivateKey(priv);
    if (!derived.getPublicKey().equals(pub)) return "VAPID_PRIVATE_KEY does not belong to VAPID_PUBLIC_KEY";
  } catch {
    return "VAPID_PRIVATE_KEY is not a valid P-256 private key";
  }
  return null;
}
