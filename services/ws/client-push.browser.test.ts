import { afterAll, expect, test } from "bun:test";
import postgres from "postgres";
import type { BrowserContext, Page } from "playwright-core";
import { mintToken, TestClient } from "../../test/client.ts";
import { useBrowserCluster } from "../../test/browser.ts";
import { startPushService, type TestPushService } from "../../test/push-service.ts";

// The browser client's notifications in real Chromium against a real cluster (two ws instances).
// Headless Chromium has no push service to subscribe with, so the page's PushManager hands out a
// subscription to the test's local push service instead (that is the one stand-in); the server's
// push then goes there, is verified and decrypted, and is delivered to the page's real service
// worker through the DevTools protocol (ServiceWorker.deliverPushMessage).

const PASSWORD = "correct horse battery";
const tag = crypto.randomUUID().slice(0, 6);

const pageErrors: string[] = [];
const base = useBrowserCluster({ env: { PUSH_ALLOW_HTTP: "true" } }).env;
let extra: Promise<{ svc: TestPushService; sql: postgres.Sql }> | null = null;

/** Chromium, the cluster, the local push service and a database client, started once. */
async function env() {
  const { browser, cluster } = await base();
  extra ??= (async () => ({ svc: await startPushService(cluster.vapid.publicKey), sql: postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} }) }))();
  return { browser, cluster, ...(await extra) };
}

afterAll(async () => {
  const e = await extra?.catch(() => null);
  e?.svc.stop();
  await e?.sql.end();
});

async function signUp(ctx: BrowserContext, base: string, name: string): Promise<Page> {
  const page = await ctx.newPage();
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (e) => pageErrors.push(`${base}: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && /Content Security Policy/i.test(m.text()) && pageErrors.push(`${base}: ${m.text()}`));
  await page.goto(`${base}/client/`);
  await page.getByTestId("auth-username").fill(name);
  await page.getByTestId("auth-password").fill(PASSWORD);
  await page.getByTestId("auth-register").click();
  await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  return page;
}

async function endpointsOf(user: string): Promise<string[]> {
  const { sql } = await env();
  return (await sql<Array<{ endpoint: string }>>`select endpoint from push_subscriptions where user_id = ${user}`).map((r) => r.endpoint);
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await Bun.sleep(50);
  }
}

test("the prompt: shown after sign-in while the browser has not decided, and 'Not now' is remembered", async () => {
  const { browser, cluster } = await env();
  const ctx = await browser.newContext();
  const page = await signUp(ctx, cluster.wsUrls[0]!, `nina-${tag}`);
  await page.getByTestId("push-prompt").waitFor({ state: "visible" });
  expect(await page.getByTestId("push-prompt").textContent()).toContain("notification");
  await page.getByTestId("push-dismiss").click();
  await page.getByTestId("push-prompt").waitFor({ state: "hidden" });
  await page.reload();
  await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  // The worker is registered again on every start; wait for it, then the prompt must stay hidden.
  await page.evaluate(() => navigator.serviceWorker.ready);
  expect(await page.getByTestId("push-prompt").isHidden()).toBe(true);
  expect(pageErrors).toEqual([]);
  await ctx.close();
});

test("turning notifications on subscribes this browser; an offline user's messages come as one notification; logout unsubscribes", async () => {
  const { browser, cluster, svc } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const bob = `bob-${tag}`;
  const alice = `alice-${tag}`;
  const sub = svc.subscribe();
  const ctx = await browser.newContext();
  // The stand-in for the browser's push service: a subscription to the local one, with its keys.
  await ctx.addInitScript((json) => {
    const state = { sub: null as any, key: null as string | null };
    (window as any).__push = state;
    PushManager.prototype.subscribe = async function (opts?: PushSubscriptionOptionsInit) {
      const key = new Uint8Array(opts!.applicationServerKey as ArrayBuffer);
      state.key = btoa(String.fromCharCode(...key)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
      state.sub = { endpoint: json.endpoint, options: { applicationServerKey: key.buffer }, toJSON: () => json, unsubscribe: async () => ((state.sub = null), true) };
      return state.sub;
    };
    PushManager.prototype.getSubscription = async () => state.sub;
  }, sub.json);

  const page = await signUp(ctx, ws2, bob);
  await page.getByTestId("push-prompt").waitFor({ state: "visible" });
  await ctx.grantPermissions(["notifications"], { origin: ws2 });
  await page.getByTestId("push-enable").click();
  await page.getByTestId("push-prompt").waitFor({ state: "hidden" });
  expect(await until(() => endpointsOf(bob), (e) => e.length === 1, "bob's subscription")).toEqual([sub.json.endpoint]);
  expect(await page.evaluate(() => (window as any).__push.key)).toBe(cluster.vapid.publicKey);

  // Bob closes the tab: offline. Alice writes twice from the other instance.
  await page.close();
  const a = await TestClient.connect(ws1, alice, await mintToken(alice, cluster.jwtSecret));
  await until(async () => (await (await fetch(`${ws1}/api/presence?users=${bob}`, { headers: { authorization: `Bearer ${await mintToken(alice, cluster.jwtSecret)}` } })).json()) as any, (r) => r.online[bob] === false, "bob offline");
  const acks = await Promise.all([a.sendMessage({ to: bob }, "are you there?"), a.sendMessage({ to: bob }, "call me")]);
  await svc.until(() => sub.received.length > 0, "bob's push");
  expect(sub.received).toHaveLength(1);
  const payload = sub.received[0]!.payload;
  expect(payload).toMatchObject({ conv: `d:${alice}`, from: alice, count: 2, body: "call me", msgId: acks[1]!.msgId });
  a.close();

  // The push reaches bob's service worker, which shows it.
  const again = await ctx.newPage();
  await again.goto(`${ws2}/client/`);
  const cdp = await ctx.newCDPSession(again);
  // The push goes to the registration whose worker is activated (one still installing drops it).
  const registration = new Promise<string>((resolve) =>
    cdp.on("ServiceWorker.workerVersionUpdated", (e: { versions: Array<{ registrationId: string; scriptURL: string; status: string }> }) => {
      const v = e.versions.find((x) => x.scriptURL.startsWith(`${ws2}/client/`) && x.status === "activated");
      if (v) resolve(v.registrationId);
    }),
  );
  await cdp.send("ServiceWorker.enable");
  await cdp.send("ServiceWorker.deliverPushMessage", { origin: ws2, registrationId: await registration, data: JSON.stringify(payload) });
  const shown = await until(
    () => again.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag }))),
    (ns) => ns.length > 0,
    "the notification",
  );
  expect(shown).toEqual([{ title: `${alice} (2 new messages)`, body: "call me", tag: `d:${alice}` }]);

  // Logging out removes this browser's subscription on the server and in the browser.
  await again.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  await again.getByTestId("logout").click();
  await until(() => endpointsOf(bob), (e) => e.length === 0, "the subscription removed");
  // the browser's own subscription goes after the server's (docs/client.md): wait for it too
  expect(await until(() => again.evaluate(() => (window as any).__push.sub), (v) => v === null, "the browser's subscription removed")).toBeNull();
  expect(svc.rejected).toEqual([]);
  expect(pageErrors).toEqual([]);
  await ctx.close();
}, 60_000);
