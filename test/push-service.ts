import { createDecipheriv, createECDH, createHmac, type ECDH } from "node:crypto";

/**
 * A local Web Push service for tests (Bun.serve on 127.0.0.1). Each subscription it hands out has
 * its own endpoint and its own browser-side keys (a P-256 key pair and a 16-byte auth secret), made
 * here as a browser would. A push request is accepted (201, or the status the test chose) only when:
 * - `Authorization: vapid t=<JWT>, k=<key>` names the expected VAPID public key, and the JWT is
 *   ES256, signed by it (verified with WebCrypto), with `aud` = the endpoint's origin, an `exp` in
 *   the future and at most 24 h away, and a `mailto:`/`https:` `sub` (RFC 8292);
 * - the body is `Content-Encoding: aes128gcm` and decrypts with the subscription's private key and
 *   auth secret (RFC 8291 key derivation, RFC 8188 record), and the plaintext is JSON.
 * Anything else is answered 400/401/403 and recorded in `rejected`.
 */

export interface ReceivedPush {
  sub: string;
  payload: any;
  topic: string | null;
  ttl: string | null;
  urgency: string | null;
}

export interface TestSubscription {
  id: string;
  /** The JSON a browser's PushSubscription gives (what the client POSTs). */
  json: { endpoint: string; expirationTime: null; keys: { p256dh: string; auth: string } };
  /** Status answered to pushes after verifying them (default 201). */
  status: number;
  received: ReceivedPush[];
}

const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
const hmac = (key: Uint8Array, ...data: Uint8Array[]) => {
  const h = createHmac("sha256", key);
  for (const d of data) h.update(d);
  return h.digest();
};

/** RFC 8291 section 3.4 / RFC 8188: the plaintext of an aes128gcm body for the subscription's keys. */
export function decryptAes128gcm(body: Uint8Array, ua: ECDH, authSecret: Uint8Array): Buffer {
  const buf = Buffer.from(body);
  const salt = buf.subarray(0, 16);
  const rs = buf.readUInt32BE(16);
  const idlen = buf[20]!;
  const asPublic = buf.subarray(21, 21 + idlen);
  const ciphertext = buf.subarray(21 + idlen);
  if (idlen !== 65) throw new Error(`keyid must be the 65-byte sender key, got ${idlen}`);
  if (ciphertext.length > rs) throw new Error("more than one record");
  const uaPublic = ua.getPublicKey();
  const ecdhSecret = ua.computeSecret(asPublic);
  const prkKey = hmac(authSecret, ecdhSecret);
  const ikm = hmac(prkKey, Buffer.from("WebPush: info\0"), uaPublic, asPublic, Buffer.from([1]));
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from("Content-Encoding: aes128gcm\0"), Buffer.from([1])).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from("Content-Encoding: nonce\0"), Buffer.from([1])).subarray(0, 12);
  const d = createDecipheriv("aes-128-gcm", cek, nonce);
  d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]);
  // The last record ends with the delimiter 0x02, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) throw new Error("missing the last-record delimiter");
  return padded.subarray(0, end);
}

/** Verifies a VAPID `Authorization` header for `origin`; returns the JWT's claims or throws. */
export async function verifyVapid(header: string | null, publicKey: string, origin: string): Promise<Record<string, unknown>> {
  const m = /^vapid t=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+), k=([A-Za-z0-9_-]+)$/.exec(header ?? "");
  if (!m) throw new Error(`not a vapid Authorization header: ${header}`);
  const [, jwt, k] = m;
  if (k !== publicKey) throw new Error("k is not the application server's key");
  const [h, p, s] = jwt!.split(".");
  const head = JSON.parse(Buffer.from(h!, "base64url").toString());
  if (head.alg !== "ES256") throw new Error(`alg ${head.alg}`);
  const key = await crypto.subtle.importKey("raw", Buffer.from(publicKey, "base64url"), { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, Buffer.from(s!, "base64url"), new TextEncoder().encode(`${h}.${p}`));
  if (!ok) throw new Error("bad signature");
  const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
  if (claims.aud !== origin) throw new Error(`aud ${claims.aud}, expected ${origin}`);
  const now = Date.now() / 1000;
  if (typeof claims.exp !== "number" || claims.exp <= now || claims.exp > now + 24 * 3600) throw new Error(`exp ${claims.exp}`);
  if (typeof claims.sub !== "string" || !/^(mailto:|https:)/.test(claims.sub)) throw new Error(`sub ${claims.sub}`);
  return claims;
}

export async function startPushService(vapidPublicKey: string) {
  const subs = new Map<string, TestSubscription & { ua: ECDH; auth: Buffer }>();
  const rejected: string[] = [];
  const waiters: Array<() => void> = [];
  const changed = () => waiters.splice(0).forEach((w) => w());

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      const sub = subs.get(url.pathname.slice("/push/".length));
      if (req.method !== "POST" || !url.pathname.startsWith("/push/")) return new Response("not found", { status: 404 });
      const reject = (status: number, why: string) => {
        rejected.push(why);
        changed();
        return new Response(why, { status });
      };
      if (!sub) return reject(404, `unknown subscription ${url.pathname}`);
      try {
        await verifyVapid(req.headers.get("authorization"), vapidPublicKey, url.origin);
      } catch (e) {
        return reject(401, `vapid: ${(e as Error).message}`);
      }
      if (req.headers.get("content-encoding") !== "aes128gcm") return reject(400, `content-encoding ${req.headers.get("content-encoding")}`);
      let payload: unknown;
      try {
        payload = JSON.parse(decryptAes128gcm(new Uint8Array(await req.arrayBuffer()), sub.ua, sub.auth).toString("utf8"));
      } catch (e) {
        return reject(400, `payload: ${(e as Error).message}`);
      }
      sub.received.push({ sub: sub.id, payload, topic: req.headers.get("topic"), ttl: req.headers.get("ttl"), urgency: req.headers.get("urgency") });
      changed();
      return new Response(null, { status: sub.status });
    },
  });
  const origin = `http://127.0.0.1:${server.port}`;

  return {
    origin,
    rejected,
    /** A new subscription, as a browser's pushManager.subscribe() would make. */
    subscribe(): TestSubscription {
      const id = crypto.randomUUID();
      const ua = createECDH("prime256v1");
      ua.generateKeys();
      const auth = Buffer.from(crypto.getRandomValues(new Uint8Array(16)));
      const s = { id, json: { endpoint: `${origin}/push/${id}`, expirationTime: null, keys: { p256dh: b64u(ua.getPublicKey()), auth: b64u(auth) } }, status: 201, received: [], ua, auth };
      subs.set(id, s);
      return s;
    },
    /** Resolves once `pred()` holds, checked after every request (rejects after `ms`). */
    async until(pred: () => boolean, what: string, ms = 20_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`push service: timed out waiting for ${what} (rejected: ${rejected.join("; ") || "none"})`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 250);
        });
      }
    },
    stop: () => server.stop(true),
  };
}
export type TestPushService = Awaited<ReturnType<typeof startPushService>>;
