import { afterAll, beforeAll, expect, test } from "bun:test";
import webpush from "web-push";
import { createWebPushSender, generateVapidKeys } from "../services/ws/push-sender.ts";
import { startPushService, verifyVapid, type TestPushService } from "./push-service.ts";

// The test push service accepts exactly what RFC 8291/8292 allow (so the push tests can trust it),
// driven by the gateway's real sender.
const vapid = { ...generateVapidKeys(), subject: "mailto:ops@example.com" };
const other = generateVapidKeys();
let svc: TestPushService;
beforeAll(async () => (svc = await startPushService(vapid.publicKey)));
afterAll(() => svc.stop());
const opts = { topic: "t0pic", ttlSec: 60, urgency: "high" as const };

test("a push from the real sender verifies and decrypts; topic, TTL and urgency arrive", async () => {
  const sub = svc.subscribe();
  const status = await createWebPushSender(vapid).send(sub.json, JSON.stringify({ hello: "wörld" }), opts);
  expect(status).toBe(201);
  expect(sub.received).toEqual([{ sub: sub.id, payload: { hello: "wörld" }, topic: "t0pic", ttl: "60", urgency: "high" }]);
  sub.status = 410;
  expect(await createWebPushSender(vapid).send(sub.json, "{}", opts)).toBe(410);
});

test("rejected: another server's key, a JWT signed by the wrong key, a payload for other keys", async () => {
  const sub = svc.subscribe();
  const before = svc.rejected.length;
  expect(await createWebPushSender({ ...other, subject: vapid.subject }).send(sub.json, "{}", opts)).toBe(401);
  expect(await createWebPushSender({ ...vapid, privateKey: other.privateKey }).send(sub.json, "{}", opts)).toBe(401);
  const stranger = svc.subscribe();
  expect(await createWebPushSender(vapid).send({ ...sub.json, keys: stranger.json.keys }, "{}", opts)).toBe(400);
  expect(sub.received).toEqual([]);
  expect(svc.rejected.slice(before)).toEqual(["vapid: k is not the application server's key", "vapid: bad signature", expect.stringMatching(/^payload: /)]);
});

test("rejected: a JWT for another audience, or expired", async () => {
  const origin = svc.origin;
  const header = (aud: string, exp?: number) => webpush.getVapidHeaders(aud, vapid.subject, vapid.publicKey, vapid.privateKey, "aes128gcm", exp).Authorization;
  await verifyVapid(header(origin), vapid.publicKey, origin);
  await expect(verifyVapid(header("https://push.example.net"), vapid.publicKey, origin)).rejects.toThrow(/aud/);
  await expect(verifyVapid(header(origin, Math.floor(Date.now() / 1000) - 10), vapid.publicKey, origin)).rejects.toThrow(/exp/);
});
