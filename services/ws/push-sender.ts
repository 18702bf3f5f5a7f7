import webpush from "web-push";
import type { PushSubscription } from "./push-subscriptions.ts";

/** The application server's VAPID identity (RFC 8292): a P-256 key pair (base64url) and a contact. */
export interface Vapid {
  publicKey: string;
  privateKey: string;
  /** `mailto:` or `https:` contact for the push services' operators. */
  subject: string;
}

export interface PushOptions {
  /** Push services replace an undelivered message of the same topic (RFC 8030 §5.4): ≤ 32 base64url characters. */
  topic: string;
  ttlSec: number;
  urgency: "very-low" | "low" | "normal" | "high";
}

/**
 * The push-service role: delivers one encrypted message to one subscription and answers the push
 * service's HTTP status (201 accepted; 404/410 the subscription is gone). Rejects only when the
 * push service could not be reached.
 */
export interface PushSender {
  send(sub: PushSubscription, payload: string, opts: PushOptions): Promise<number>;
}

/**
 * The real sender: `web-push` builds the request (payload encrypted per RFC 8291 as aes128gcm,
 * a VAPID JWT signed ES256 for the endpoint's origin), `fetch` sends it (so a timeout applies, and
 * an http: endpoint works where the configuration admits one).
 */
export function createWebPushSender(vapid: Vapid, opts: { timeoutMs?: number; fetch?: typeof fetch } = {}): PushSender {
  const doFetch = opts.fetch ?? fetch;
  return {
    async send(sub, payload, o) {
      const req = webpush.generateRequestDetails(sub, payload, {
        vapidDetails: vapid,
        TTL: o.ttlSec,
        topic: o.topic,
        urgency: o.urgency,
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (k.toLowerCase() !== "content-length") headers[k] = String(v);
      const res = await doFetch(req.endpoint, {
        method: req.method,
        headers,
        body: req.body as unknown as BodyInit | null,
        signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
      });
      await res.arrayBuffer().catch(() => {});
      return res.status;
    },
  };
}

/** A new VAPID key pair (base64url: the 65-byte public point, the 32-byte private scalar). */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  return webpush.generateVAPIDKeys();
}

/** The gateway's push settings from the configuration, or undefined (push off) without a key pair. */
export function pushSettings(
  cfg: { VAPID_SUBJECT: string; PUSH_DELAY_MS: number; PUSH_ALLOW_HTTP: boolean },
  keys: { publicKey: string; privateKey: string } | undefined,
) {
  if (!keys) return undefined;
  return {
    publicKey: keys.publicKey,
    sender: createWebPushSender({ ...keys, subject: cfg.VAPID_SUBJECT }),
    delayMs: cfg.PUSH_DELAY_MS,
    allowHttp: cfg.PUSH_ALLOW_HTTP,
  };
}
