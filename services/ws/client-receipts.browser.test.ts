import { expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import type { Page } from "playwright-core";
import { axeViolations, TEST_PASSWORD as PASSWORD, useBrowserCluster } from "../../test/browser.ts";

// Receipts and the server's conversation list in the browser client, in real Chromium against a
// real cluster (two ws instances): two users on two instances, and a user with two devices (two
// browser profiles). Every wait is on the DOM.

const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const tag = crypto.randomUUID().slice(0, 6);
const { env, signIn, pageErrors } = useBrowserCluster();

/** A new browser profile (a device) signed in as `name` on `base`; `register` creates the account. */
const device = (base: string, name: string, register: boolean) => signIn(base, name, register);

const connected = (page: Page) => page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
const conv = (page: Page, key: string) => page.locator(`[data-testid="conv-item"][data-conv="${key}"]`);
const message = (page: Page, text: string, status?: string) =>
  page.locator(`[data-testid="message"]${status ? `[data-status="${status}"]` : ""}`).filter({ hasText: text });
const unread = (page: Page, key: string) => conv(page, key).getByTestId("conv-unread");

async function send(page: Page, text: string): Promise<string> {
  await page.getByTestId("composer-input").fill(text);
  await page.getByTestId("composer-send").click();
  const sent = message(page, text, "sent");
  await sent.waitFor();
  return (await sent.getAttribute("data-msgid"))!;
}

async function openChat(page: Page, peer: string) {
  await page.getByTestId("new-chat-input").fill(peer);
  await page.getByTestId("new-chat-button").click();
  await page.locator(`[data-testid="conv-item"][data-conv="d:${peer}"].active`).waitFor();
}

const alice = `alice-${tag}`;
const bob = `bob-${tag}`;
const carol = `carol-${tag}`;
const pages: Record<string, Page> = {};
let groupKey = "";

test("the conversation list, unread counts and read markers come from the server: a new device of bob starts where his first left off", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const a = (pages.alice = await device(ws1, alice, true));
  const b1 = (pages.bob1 = await device(ws2, bob, true));
  const c = (pages.carol = await device(ws1, carol, true));

  await openChat(a, bob);
  for (const t of ["one", "two", "three"]) await send(a, t);
  await openChat(c, bob);
  await send(c, "from carol");
  await unread(b1, `d:${alice}`).filter({ hasText: "3" }).waitFor();
  await unread(b1, `d:${carol}`).filter({ hasText: "1" }).waitFor();

  // Bob reads alice's chat on his first device.
  await conv(b1, `d:${alice}`).click();
  await message(b1, "three", "received").waitFor();
  await unread(b1, `d:${alice}`).waitFor({ state: "detached" });

  // His second device (another profile, the other instance): alice's chat is read, carol's is not.
  const b2 = (pages.bob2 = await device(ws1, bob, false));
  await b2.locator('[data-testid="conv-list"][data-server="loaded"]').waitFor({ state: "attached" });
  await conv(b2, `d:${carol}`).getByTestId("conv-preview").filter({ hasText: "from carol" }).waitFor();
  await unread(b2, `d:${carol}`).filter({ hasText: "1" }).waitFor();
  await conv(b2, `d:${alice}`).getByTestId("conv-preview").filter({ hasText: "three" }).waitFor();
  expect(await unread(b2, `d:${alice}`).count()).toBe(0);
  // Newest activity first.
  expect(await b2.getByTestId("conv-item").evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.conv))).toEqual([`d:${carol}`, `d:${alice}`]);
  expect(pageErrors).toEqual([]);
}, 60_000);

test("live across instances and devices: ✓ sent, ✓✓ delivered, read; a read on one device clears the other; groups show read by N", async () => {
  const a = pages.alice!, b1 = pages.bob1!, b2 = pages.bob2!, c = pages.carol!;
  // Neither of bob's devices has alice's chat open: her next message is delivered, not read.
  await conv(b1, `d:${carol}`).click();
  await conv(a, `d:${bob}`).click();
  const mid = await send(a, "are you there?");
  const mine = a.locator(`[data-testid="message"][data-msgid="${mid}"]`);
  await mine.and(a.locator('[data-receipt="delivered"]')).waitFor();
  expect(await mine.getByTestId("message-status").textContent()).toBe("delivered ✓✓");
  for (const p of [b1, b2]) await unread(p, `d:${alice}`).filter({ hasText: "1" }).waitFor();

  // Bob reads on his second device (instance 1): the first (instance 2) clears live, alice sees it read.
  await conv(b2, `d:${alice}`).click();
  await message(b2, "are you there?", "received").waitFor();
  await unread(b2, `d:${alice}`).waitFor({ state: "detached" });
  await unread(b1, `d:${alice}`).waitFor({ state: "detached" });
  await mine.and(a.locator('[data-receipt="read"]')).waitFor();
  expect(await mine.getByTestId("message-status").textContent()).toBe("read ✓✓");
  await conv(a, `d:${bob}`).getByTestId("conv-preview").filter({ hasText: "✓✓ You: are you there?" }).waitFor();

  // A group of three: "read by N" as members read.
  await a.getByTestId("new-group-toggle").click();
  await a.getByTestId("new-group-name").fill("Readers");
  await a.getByTestId("new-group-members").fill(`${bob}, ${carol}`);
  await a.getByTestId("new-group-button").click();
  const active = a.locator('[data-testid="conv-item"][data-conv^="g:"].active');
  await active.waitFor();
  const key = (await active.getAttribute("data-conv"))!;
  const gid = await send(a, "who reads this?");
  const gm = a.locator(`[data-testid="message"][data-msgid="${gid}"]`);
  // Every other member has a device online: delivered to all first.
  await gm.and(a.locator('[data-receipt="delivered"]')).waitFor();
  expect(await gm.getByTestId("message-status").textContent()).toBe("delivered ✓✓");
  for (const [p, n] of [[b1, 1], [c, 2]] as const) {
    await conv(p, key).click();
    await message(p, "who reads this?", "received").waitFor();
    await gm.and(a.locator(`[data-read-by="${n}"]`)).waitFor();
    expect(await gm.getByTestId("message-status").textContent()).toBe(`✓✓ read by ${n}`);
  }
  await gm.and(a.locator('[data-receipt="read"]')).waitFor();
  groupKey = key;
  mkdirSync(ARTIFACTS, { recursive: true });
  await a.screenshot({ path: `${ARTIFACTS}receipts.png` });
  console.log(`screenshot of receipts: ${ARTIFACTS}receipts.png`);
  expect(pageErrors).toEqual([]);
}, 60_000);

test("after a reconnect the sender's device catches up on receipts it missed (sync), and a reload keeps them (server)", async () => {
  const a = pages.alice!, b1 = pages.bob1!, b2 = pages.bob2!;
  for (const p of [b1, b2]) await conv(p, `d:${carol}`).click();
  await conv(a, `d:${bob}`).click();
  const mid = await send(a, "read this while I am away");
  const mine = () => a.locator(`[data-testid="message"][data-msgid="${mid}"]`);
  await mine().and(a.locator('[data-receipt="delivered"]')).waitFor();
  // Alice goes offline; bob reads; alice comes back.
  await a.context().setOffline(true);
  await a.locator('[data-testid="conn-status"]:not([data-state="open"])').waitFor();
  await conv(b1, `d:${alice}`).click();
  await message(b1, "read this while I am away", "received").waitFor();
  await unread(b1, `d:${alice}`).waitFor({ state: "detached" });
  await a.context().setOffline(false);
  await a.getByTestId("conn-status").click(); // retry now
  await connected(a);
  await mine().and(a.locator('[data-receipt="read"]')).waitFor();
  await a.reload();
  await connected(a);
  await conv(a, `d:${bob}`).click();
  await mine().and(a.locator('[data-receipt="read"]')).waitFor();
  expect(pageErrors).toEqual([]);
}, 60_000);

test("no serious accessibility violations with receipts shown, light and dark", async () => {
  const { browser, cluster } = await env();
  for (const scheme of ["light", "dark"] as const) {
    // axe is injected as a script: this profile bypasses the Content-Security-Policy (only here).
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: scheme, bypassCSP: true });
    const p = await ctx.newPage();
    await p.goto(`${cluster.wsUrls[0]}/client`);
    await p.getByTestId("auth-username").fill(alice);
    await p.getByTestId("auth-password").fill(PASSWORD);
    await p.getByTestId("auth-login").click();
    await connected(p);
    await conv(p, groupKey).click();
    await p.locator('[data-testid="message"][data-receipt="read"]').first().waitFor();
    expect(await axeViolations(p), `group with read receipts, ${scheme}`).toEqual([]);
    await conv(p, `d:${bob}`).click();
    await p.locator('[data-testid="message"][data-receipt="read"]').first().waitFor();
    expect(await axeViolations(p), `direct chat with read receipts, ${scheme}`).toEqual([]);
    await ctx.close();
  }
  expect(pageErrors).toEqual([]);
}, 60_000);
