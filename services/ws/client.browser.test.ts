import { expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import type { BrowserContext, Page } from "playwright-core";
import { axeViolations, useBrowserCluster } from "../../test/browser.ts";

// The browser client (services/ws/client/) in real Chromium against a real cluster: discover, two
// ws instances and persist over Redis, RabbitMQ and PostgreSQL. Every wait is on the DOM.

const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const PASSWORD = "correct horse battery";
const tag = crypto.randomUUID().slice(0, 6);

const { env, openClient, pageErrors } = useBrowserCluster();

async function signUp(base: string, name: string): Promise<Page> {
  const page = await openClient(base);
  await page.getByTestId("auth-username").fill(name);
  await page.getByTestId("auth-password").fill(PASSWORD);
  await page.getByTestId("auth-register").click();
  await connected(page);
  expect(await page.getByTestId("me").textContent()).toBe(name);
  return page;
}

const connected = (page: Page) => page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
const conv = (page: Page, key: string) => page.locator(`[data-testid="conv-item"][data-conv="${key}"]`);
const message = (page: Page, text: string, status?: string) =>
  page.locator(`[data-testid="message"]${status ? `[data-status="${status}"]` : ""}`).filter({ hasText: text });

async function send(page: Page, text: string) {
  await page.getByTestId("composer-input").fill(text);
  await page.getByTestId("composer-send").click();
  const sent = message(page, text, "sent");
  await sent.waitFor();
  // Acked; by now possibly delivered or read too (receipts: client-receipts.browser.test.ts).
  expect(await sent.getByTestId("message-status").textContent()).toMatch(/^(sent ✓|delivered ✓✓|read ✓✓|✓✓? read by \d+)$/);
  return (await sent.getAttribute("data-msgid"))!;
}

/** Every message of the open conversation, as [msgId, body]; asserts none is shown twice. */
async function shown(page: Page): Promise<Array<[string, string]>> {
  const rows = await page.getByTestId("message").evaluateAll((els) =>
    els.map((e) => [(e as HTMLElement).dataset.msgid ?? "", e.querySelector('[data-testid="message-body"]')?.textContent ?? ""] as [string, string]),
  );
  expect(new Set(rows.map((r) => r[0])).size).toBe(rows.length);
  return rows;
}

/**
 * The open conversation's messages once they equal `expected` (or after 10 s, whatever they are):
 * a page may show the newest message (pushed live or from the cache) before older ones (history)
 * have been read, so the list is read until it settles, never only once.
 */
async function settled<T>(read: () => Promise<T>, expected: T): Promise<T> {
  const until = Date.now() + 10_000;
  for (;;) {
    const got = await read();
    if (Bun.deepEquals(got, expected) || Date.now() > until) return got;
    await Bun.sleep(100);
  }
}
const bodies = async (page: Page) => (await shown(page)).map((r) => r[1]);

const alice = `alice-${tag}`;
const bob = `bob-${tag}`;
const carol = `carol-${tag}`;
const pages: Record<string, Page> = {};
let groupKey = "";

test("two users on different ws instances chat both ways", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  expect(ws1).not.toBe(ws2);
  pages.alice = await signUp(ws1, alice);
  pages.bob = await signUp(ws2, bob);
  const a = pages.alice, b = pages.bob;

  await a.getByTestId("new-chat-input").fill(bob);
  await a.getByTestId("new-chat-button").click();
  await a.locator(`[data-testid="conv-item"][data-conv="d:${bob}"].active`).waitFor();
  const mid = await send(a, "Hi Bob <b>plain text</b>");

  // Bob sees it arrive live: the conversation, its unread count and preview, then the message.
  await conv(b, `d:${alice}`).getByTestId("conv-unread").filter({ hasText: "1" }).waitFor();
  expect(await conv(b, `d:${alice}`).getByTestId("conv-preview").textContent()).toBe("Hi Bob <b>plain text</b>");
  await conv(b, `d:${alice}`).click();
  const got = message(b, "Hi Bob", "received");
  await got.waitFor();
  expect(await got.getAttribute("data-msgid")).toBe(mid);
  expect(await got.locator("b").count()).toBe(0); // user text is never parsed as HTML
  await conv(b, `d:${alice}`).getByTestId("conv-unread").waitFor({ state: "detached" });

  await send(b, "Hello Alice!\nTwo lines.");
  await message(a, "Hello Alice!", "received").waitFor();
  await send(a, "Great, it works across instances.");
  await message(b, "Great, it works across instances.", "received").waitFor();

  // Presence: each sees the other online.
  await conv(b, `d:${alice}`).locator('[data-testid="presence-dot"][data-online="true"]').waitFor();
  await conv(a, `d:${bob}`).locator('[data-testid="presence-dot"][data-online="true"]').waitFor();
  const chat = ["Hi Bob <b>plain text</b>", "Hello Alice!\nTwo lines.", "Great, it works across instances."];
  expect(await settled(() => bodies(a), chat)).toEqual(chat);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("a group of three across instances", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const a = pages.alice!, b = pages.bob!;
  const c = (pages.carol = await signUp(ws1, carol));

  await a.getByTestId("new-group-toggle").click();
  await a.getByTestId("new-group-name").fill("Launch crew");
  await a.getByTestId("new-group-members").fill(`${bob}, ${carol}`);
  await a.getByTestId("new-group-button").click();
  const active = a.locator('[data-testid="conv-item"][data-conv^="g:"].active');
  await active.waitFor();
  const key = (groupKey = (await active.getAttribute("data-conv"))!);
  expect(await a.getByTestId("conv-title").textContent()).toBe("Launch crew");
  await send(a, "Welcome to the crew");

  for (const p of [b, c]) {
    await conv(p, key).getByTestId("conv-name").filter({ hasText: "Launch crew" }).waitFor();
    await conv(p, key).getByTestId("conv-unread").filter({ hasText: "1" }).waitFor();
    await conv(p, key).click();
    await message(p, "Welcome to the crew", "received").waitFor();
  }
  await send(c, "Carol here");
  await send(b, "Bob here, on the other instance");
  for (const p of [a, b]) await message(p, "Carol here", "received").locator(".sender", { hasText: carol }).waitFor();
  for (const p of [a, c]) await message(p, "Bob here, on the other instance", "received").waitFor();
  const crew = ["Welcome to the crew", "Carol here", "Bob here, on the other instance"];
  expect(await settled(() => bodies(c), crew)).toEqual(crew);

  // The group's member list, from GET /api/groups.
  await a.getByTestId("members-toggle").click();
  expect((await a.getByTestId("members-list").locator("li").evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.user))).sort()).toEqual(
    [alice, bob, carol].sort(),
  );
  await a.getByTestId("members-toggle").click();
  expect(ws2).toBe(new URL(b.url()).origin);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("a reload keeps the history, and messages sent while away arrive once", async () => {
  const { cluster } = await env();
  const a = pages.alice!, b = pages.bob!;
  await conv(b, `d:${alice}`).click();
  const before = await shown(b);
  expect(before.length).toBe(3);

  await b.reload();
  await connected(b);
  await conv(b, `d:${alice}`).click();
  await message(b, "Great, it works across instances.").waitFor();
  expect(await settled(() => shown(b), before)).toEqual(before);

  // Bob goes away; Alice writes; Bob comes back (same browser profile) and catches up by sync.
  const profile = b.context();
  await b.close();
  await conv(a, `d:${bob}`).click();
  const mid = await send(a, "Sent while you were away");
  const back = (pages.bob = await openClient(cluster.wsUrls[1]!, profile));
  await connected(back);
  await conv(back, `d:${alice}`).getByTestId("conv-unread").filter({ hasText: "1" }).waitFor();
  await conv(back, `d:${alice}`).click();
  await message(back, "Sent while you were away", "received").waitFor();
  const after: Array<[string, string]> = [...before, [mid, "Sent while you were away"]];
  expect(await settled(() => shown(back), after)).toEqual(after);

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = `${ARTIFACTS}chat.png`;
  await conv(a, groupKey).click();
  await message(a, "Bob here, on the other instance").waitFor();
  await a.screenshot({ path: shot });
  console.log(`screenshot of the chat view: ${shot}`);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("the owner removes and re-adds a member; the removed member can no longer write", async () => {
  const a = pages.alice!, b = pages.bob!, c = pages.carol!;
  const members = (p: Page) => p.getByTestId("members-list").locator("li");
  const memberIds = async (p: Page) => (await members(p).evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.user!))).sort();

  // Only the owner (and admins) get a remove control, and never for themself.
  await conv(b, groupKey).click();
  await b.getByTestId("members-toggle").click();
  await members(b).first().waitFor();
  expect(await b.getByTestId("member-remove").count()).toBe(0);
  await conv(a, groupKey).click();
  await a.getByTestId("members-toggle").click();
  await members(a).first().waitFor();
  expect(await a.getByTestId("member-remove").count()).toBe(2);
  expect(await members(a).filter({ hasText: alice }).getByTestId("member-remove").count()).toBe(0);

  // Carol has the group open when Alice removes her: her chat says so at once and cannot be written to.
  await conv(c, groupKey).click();
  await members(a).filter({ hasText: carol }).getByTestId("member-remove").click();
  await members(a).filter({ hasText: carol }).waitFor({ state: "detached" });
  expect(await memberIds(a)).toEqual([alice, bob].sort());
  await c.locator('[data-testid="conv-sub"]', { hasText: `removed from this group by ${alice}` }).waitFor();
  expect(await c.getByTestId("conv-title").textContent()).toBe("Launch crew");
  expect(await c.getByTestId("composer-input").isDisabled()).toBe(true);
  expect(await c.getByTestId("conv-gone").isVisible()).toBe(true);
  await conv(c, groupKey).waitFor({ state: "detached" });

  // Alice adds her back; Carol sees the group again.
  await a.getByTestId("add-member-input").fill(carol);
  await a.getByTestId("add-member-button").click();
  await members(a).filter({ hasText: carol }).waitFor();
  await a.getByTestId("members-toggle").click();
  await send(a, "Welcome back, Carol");
  await conv(c, groupKey).waitFor();
  await message(c, "Welcome back, Carol", "received").waitFor();
  expect(await c.getByTestId("composer-input").isDisabled()).toBe(false);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("log out forgets the local state; logging in again restores every conversation from the server", async () => {
  const a = pages.alice!;
  await a.getByTestId("logout").click();
  await a.getByTestId("auth-form").waitFor();
  expect(await a.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("relay-chat:")))).toEqual([]);

  await a.getByTestId("auth-username").fill(alice);
  await a.getByTestId("auth-password").fill("not the password");
  await a.getByTestId("auth-login").click();
  await a.getByTestId("auth-error").filter({ hasText: "Wrong username or password" }).waitFor();

  await a.getByTestId("auth-password").fill(PASSWORD);
  await a.getByTestId("auth-login").click();
  await connected(a);
  expect(await a.getByTestId("me").textContent()).toBe(alice);
  await conv(a, `d:${bob}`).click();
  await message(a, "Sent while you were away", "sent").waitFor();
  const all = ["Hi Bob <b>plain text</b>", "Hello Alice!\nTwo lines.", "Great, it works across instances.", "Sent while you were away"];
  expect(await settled(() => bodies(a), all)).toEqual(all);
  await conv(a, groupKey).click();
  await message(a, "Welcome back, Carol", "sent").waitFor();
  expect(pageErrors).toEqual([]);
}, 30_000);

/** The session the page keeps in localStorage. */
const storedSession = (page: Page) =>
  page.evaluate(() => JSON.parse(localStorage.getItem("relay-chat:session") ?? "null") as { userId: string; token: string; refreshToken?: string } | null);

test("the client stays signed in across an access-token expiry: it refreshes silently", async () => {
  const { cluster } = await env();
  const name = `dana-${tag}`;
  const page = await signUp(cluster.wsUrls[0]!, name);
  const before = (await storedSession(page))!;
  expect(typeof before.refreshToken).toBe("string");
  // Make the stored access token one that expired a minute ago (same user, same version), then reload:
  // the WebSocket is refused, the client refreshes and connects again without asking for a password.
  const { sign } = await import("hono/jwt");
  const expired = await sign({ sub: name, ver: 0, exp: Math.floor(Date.now() / 1000) - 60 }, cluster.jwtSecret, "HS256");
  await page.evaluate((t) => {
    const s = JSON.parse(localStorage.getItem("relay-chat:session")!);
    localStorage.setItem("relay-chat:session", JSON.stringify({ ...s, token: t }));
  }, expired);
  await page.reload();
  await connected(page);
  expect(await page.getByTestId("me").textContent()).toBe(name);
  const after = (await storedSession(page))!;
  expect(after.token).not.toBe(expired);
  expect(after.refreshToken).not.toBe(before.refreshToken);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("log out everywhere from another device signs this tab out", async () => {
  const { cluster } = await env();
  const name = `fern-${tag}`;
  const page = await signUp(cluster.wsUrls[1]!, name);
  const elsewhere = (await (await fetch(`${cluster.wsUrls[0]}/api/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: name, password: PASSWORD }),
  })).json()) as { token: string };
  const res = await fetch(`${cluster.wsUrls[0]}/api/logout-all`, { method: "POST", headers: { authorization: `Bearer ${elsewhere.token}` } });
  expect(res.status).toBe(204);
  await page.getByTestId("auth-form").waitFor();
  await page.getByTestId("auth-error").filter({ hasText: "You were signed out on all devices." }).waitFor();
  expect(await storedSession(page)).toBeNull();
  expect(pageErrors).toEqual([]);
}, 30_000);

/** Logs `name` in on a new page; `ctx` as in openClient. */
async function logIn(base: string, name: string, password: string, ctx?: BrowserContext): Promise<Page> {
  const page = await openClient(base, ctx);
  await page.getByTestId("auth-username").fill(name);
  await page.getByTestId("auth-password").fill(password);
  await page.getByTestId("auth-login").click();
  await connected(page);
  return page;
}

async function changePasswordInUi(page: Page, current: string, next: string, confirm = next) {
  await page.getByTestId("password-current").fill(current);
  await page.getByTestId("password-new").fill(next);
  await page.getByTestId("password-confirm").fill(confirm);
  await page.getByTestId("password-submit").click();
}

test("change password in the account dialog: other devices are signed out, this browser stays in, only the new password works", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const name = `gus-${tag}`;
  const friend = `ivy-${tag}`;
  const NEW = "a brand new passphrase";
  const registered = await fetch(`${ws1}/api/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: friend, password: PASSWORD }),
  });
  expect(registered.status).toBe(201);
  const page = await signUp(ws1, name);
  const sameBrowser = await openClient(ws1, page.context()); // a second tab: shares the session
  await connected(sameBrowser);
  const otherDevice = await logIn(ws2, name, PASSWORD);
  const before = (await storedSession(page))!;

  // Reachable by keyboard from the header; the form checks before asking the server.
  await page.bringToFront(); // a background tab's animation frames are throttled: clicks wait for them
  await page.getByTestId("account").focus();
  await page.keyboard.press("Enter");
  await page.getByTestId("account-dialog").waitFor();
  expect(await page.getByRole("dialog", { name: "Account" }).isVisible()).toBe(true);
  await changePasswordInUi(page, PASSWORD, "short");
  await page.getByTestId("password-error").filter({ hasText: "8 to 128 characters" }).waitFor();
  await changePasswordInUi(page, PASSWORD, NEW, `${NEW}!`);
  await page.getByTestId("password-error").filter({ hasText: "do not match" }).waitFor();
  await changePasswordInUi(page, "not the password", NEW);
  await page.getByTestId("password-error").filter({ hasText: "Wrong current password." }).waitFor();

  await changePasswordInUi(page, PASSWORD, NEW);
  await page.getByTestId("password-done").filter({ hasText: "Password changed" }).waitFor();
  expect(await page.getByTestId("password-current").inputValue()).toBe("");

  // The other device's socket is closed (4401) and its refresh token is revoked: it is signed out.
  await otherDevice.getByTestId("auth-error").filter({ hasText: "You were signed out on all devices." }).waitFor();
  expect(await storedSession(otherDevice)).toBeNull();

  // This browser took the new session (as a refresh) and both of its tabs reconnect with it.
  const after = (await storedSession(page))!;
  expect(after.userId).toBe(name);
  expect(after.token).not.toBe(before.token);
  expect(after.refreshToken).not.toBe(before.refreshToken);
  await page.keyboard.press("Escape");
  await page.getByTestId("account-dialog").waitFor({ state: "hidden" });
  await connected(page);
  await connected(sameBrowser);
  await sameBrowser.getByTestId("new-chat-input").fill(friend);
  await sameBrowser.getByTestId("new-chat-button").click();
  await send(sameBrowser, "still signed in after the password change");
  expect(await sameBrowser.getByTestId("auth-form").isVisible()).toBe(false);
  expect((await storedSession(sameBrowser))?.userId).toBe(name);

  // On the signed-out device: the old password is refused, the new one works.
  await otherDevice.getByTestId("auth-username").fill(name);
  await otherDevice.getByTestId("auth-password").fill(PASSWORD);
  await otherDevice.getByTestId("auth-login").click();
  await otherDevice.getByTestId("auth-error").filter({ hasText: "Wrong username or password" }).waitFor();
  await otherDevice.getByTestId("auth-password").fill(NEW);
  await otherDevice.getByTestId("auth-login").click();
  await connected(otherDevice);
  expect(await otherDevice.getByTestId("me").textContent()).toBe(name);
  expect(pageErrors).toEqual([]);
  await Promise.all([page.context().close(), otherDevice.context().close()]);
}, 30_000);

test("log out everywhere from the account dialog signs out this tab and another device", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const name = `hana-${tag}`;
  const page = await signUp(ws1, name);
  const otherDevice = await logIn(ws2, name, PASSWORD);

  await page.getByTestId("account").click();
  await page.getByTestId("logout-all").click();
  await page.getByTestId("auth-error").filter({ hasText: "You signed out on all devices." }).waitFor();
  expect(await page.getByTestId("account-dialog").isVisible()).toBe(false);
  expect(await storedSession(page)).toBeNull();

  await otherDevice.getByTestId("auth-error").filter({ hasText: "You were signed out on all devices." }).waitFor();
  expect(await storedSession(otherDevice)).toBeNull();
  expect(pageErrors).toEqual([]);
  await Promise.all([page.context().close(), otherDevice.context().close()]);
}, 30_000);

test("messages typed offline are sent in the order typed and shown in the server's order on both sides", async () => {
  const a = pages.alice!, b = pages.bob!;
  await conv(a, `d:${bob}`).click();
  await conv(b, `d:${alice}`).click();
  const before = (await shown(a)).map((r) => r[1]);
  const typed = Array.from({ length: 8 }, (_, i) => `offline ${i + 1}`);

  await a.context().setOffline(true);
  await a.locator('[data-testid="conn-status"][data-state="offline"]').waitFor();
  // Cut off, Alice cannot know who is online: Bob's presence shows as unknown, not "online".
  await conv(a, `d:${bob}`).locator('[data-testid="presence-dot"][data-online="unknown"]').waitFor();
  await a.locator('[data-testid="conv-sub"][data-online="unknown"]', { hasText: "unknown" }).waitFor();
  for (const t of typed) {
    await a.getByTestId("composer-input").fill(t);
    await a.getByTestId("composer-send").click();
    await message(a, t, "sending").waitFor();
  }
  // Pending messages stay after the positioned ones, in the order typed, and the list previews the last.
  expect(await a.getByTestId("message-body").allTextContents()).toEqual([...before, ...typed]);
  expect(await conv(a, `d:${bob}`).getByTestId("conv-preview").textContent()).toBe(`You: ${typed.at(-1)}`);
  await a.context().setOffline(false);
  await connected(a);
  await conv(a, `d:${bob}`).locator('[data-testid="presence-dot"][data-online="true"]').waitFor();
  await message(a, typed.at(-1)!, "sent").waitFor();
  await message(b, typed.at(-1)!, "received").waitFor();
  expect(await a.locator('[data-testid="message"]:not([data-status="sent"]):not([data-status="received"])').count()).toBe(0);

  for (const p of [a, b]) expect(await settled(() => bodies(p), [...before, ...typed])).toEqual([...before, ...typed]);
  // Acked now: the preview carries its receipt tick (✓ sent, ✓✓ delivered or read).
  expect(await conv(a, `d:${bob}`).getByTestId("conv-preview").textContent()).toMatch(new RegExp(`^✓✓? You: ${typed.at(-1)}$`));
  expect(await conv(b, `d:${alice}`).getByTestId("conv-preview").textContent()).toBe(typed.at(-1)!);

  // The same order after a reload (from the cache and a sync), and on a fresh device (from history).
  await b.reload();
  await connected(b);
  await conv(b, `d:${alice}`).click();
  await message(b, typed.at(-1)!).waitFor();
  expect(await settled(() => bodies(b), [...before, ...typed])).toEqual([...before, ...typed]);
  const { cluster } = await env();
  const fresh = await openClient(cluster.wsUrls[0]!);
  await fresh.getByTestId("auth-username").fill(bob);
  await fresh.getByTestId("auth-password").fill(PASSWORD);
  await fresh.getByTestId("auth-login").click();
  await connected(fresh);
  await conv(fresh, `d:${alice}`).click();
  await message(fresh, typed.at(-1)!).waitFor();
  expect(await settled(() => bodies(fresh), [...before, ...typed])).toEqual([...before, ...typed]);
  await fresh.context().close();
  expect(pageErrors).toEqual([]);
}, 30_000);

test("usernames ignore case; unknown users are flagged before writing; a chat can be closed for good", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const a = pages.alice!;
  const dave = `dave-${tag}`;
  const d = await signUp(ws2, dave);

  // "DAVE-…" is taken by "dave-…".
  const other = await openClient(ws1);
  await other.getByTestId("auth-username").fill(dave.toUpperCase());
  await other.getByTestId("auth-password").fill(PASSWORD);
  await other.getByTestId("auth-register").click();
  await other.getByTestId("auth-error").filter({ hasText: "taken" }).waitFor();
  await other.context().close();

  // Opening "DAVE-…" opens the chat with "dave-…", with no warning.
  await a.getByTestId("new-chat-input").fill(dave.toUpperCase());
  await a.getByTestId("new-chat-button").click();
  await conv(a, `d:${dave}`).and(a.locator(".active")).waitFor();
  expect(await a.getByTestId("conv-title").textContent()).toBe(dave);
  expect(await conv(a, `d:${dave.toUpperCase()}`).count()).toBe(0);
  await send(a, "Hi Dave");
  expect(await a.getByTestId("peer-warning").isVisible()).toBe(false);

  // A never-registered id: warned, and the composer waits for "Write anyway".
  const ghost = `ghost-${tag}`;
  await a.getByTestId("new-chat-input").fill(ghost);
  await a.getByTestId("new-chat-button").click();
  await a.getByTestId("peer-warning").filter({ hasText: "not a registered user" }).waitFor();
  expect(await a.getByTestId("composer-input").isDisabled()).toBe(true);
  await a.getByTestId("peer-warning-confirm").click();
  expect(await a.getByTestId("composer-input").isDisabled()).toBe(false);
  await send(a, "Anyone there?");

  // Closing removes it from the list, also after a reload.
  await conv(a, `d:${ghost}`).hover();
  await conv(a, `d:${ghost}`).getByTestId("conv-close").click();
  await conv(a, `d:${ghost}`).waitFor({ state: "detached" });
  await a.getByTestId("conv-pane").waitFor({ state: "hidden" });
  await conv(a, `d:${dave}`).hover();
  await conv(a, `d:${dave}`).getByTestId("conv-close").click();
  await conv(a, `d:${dave}`).waitFor({ state: "detached" });
  await a.reload();
  await connected(a);
  await conv(a, `d:${bob}`).waitFor();
  expect(await conv(a, `d:${ghost}`).count()).toBe(0);
  expect(await conv(a, `d:${dave}`).count()).toBe(0);
  // …until a new message arrives.
  await conv(d, `d:${alice}`).click();
  await send(d, "Dave again");
  await conv(a, `d:${dave}`).getByTestId("conv-preview").filter({ hasText: "Dave again" }).waitFor();
  expect(await conv(a, `d:${ghost}`).count()).toBe(0);

  // Groups: unknown members are refused before anything is created; known ones in any case are found.
  await a.getByTestId("new-group-toggle").click();
  await a.getByTestId("new-group-name").fill("Ghost club");
  await a.getByTestId("new-group-members").fill(`${dave.toUpperCase()}, ${ghost}`);
  await a.getByTestId("new-group-button").click();
  await a.getByTestId("side-error").filter({ hasText: ghost }).waitFor();
  expect(await a.locator('[data-testid="conv-item"][data-conv^="g:"]').filter({ hasText: "Ghost club" }).count()).toBe(0);
  await a.getByTestId("new-group-members").fill(dave.toUpperCase());
  await a.getByTestId("new-group-button").click();
  await a.locator('[data-testid="conv-item"][data-conv^="g:"].active').filter({ hasText: "Ghost club" }).waitFor();
  await a.getByTestId("members-toggle").click();
  const members = a.getByTestId("members-list").locator("li");
  await members.filter({ hasText: dave }).waitFor();
  expect((await members.evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.user))).sort()).toEqual([alice, dave].sort());
  await a.getByTestId("add-member-input").fill(ghost);
  await a.getByTestId("add-member-button").click();
  await a.locator("#members-error", { hasText: ghost }).waitFor();
  expect(await members.count()).toBe(2);
  await a.getByTestId("members-toggle").click();

  // A group made through the API with a never-registered member lists it as not registered.
  const made = await a.evaluate(async (ghostId) => {
    const { token } = JSON.parse(localStorage.getItem("relay-chat:session")!);
    const res = await fetch("/api/groups", { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ name: "Made elsewhere", members: [ghostId] }) });
    return ((await res.json()) as { groupId: string }).groupId;
  }, ghost);
  await a.reload(); // the group list is fetched at start (else every 15 s)
  await connected(a);
  await conv(a, `g:${made}`).click();
  await a.getByTestId("members-toggle").click();
  await members.filter({ hasText: ghost }).getByTestId("member-unknown").waitFor();
  expect(await members.filter({ hasText: alice }).getByTestId("member-unknown").count()).toBe(0);
  await a.getByTestId("members-toggle").click();
  await d.close();
  expect(pageErrors).toEqual([]);
}, 30_000);

test("logging out in one tab logs out every tab, and no tab writes the message cache back", async () => {
  const { cluster } = await env();
  const erin = `erin-${tag}`;
  const t1 = await signUp(cluster.wsUrls[0]!, erin);
  const t2 = await openClient(cluster.wsUrls[0]!, t1.context()); // a second tab of the same profile and origin
  await connected(t2);
  expect(await t2.getByTestId("me").textContent()).toBe(erin);
  await t2.getByTestId("new-chat-input").fill(alice);
  await t2.getByTestId("new-chat-button").click();
  await send(t2, "Written in the second tab");
  await conv(t1, `d:${alice}`).getByTestId("conv-preview").filter({ hasText: "Written in the second tab" }).waitFor();
  const cacheKey = `relay-chat:state:${erin}`;
  await t2.waitForFunction((k) => (localStorage.getItem(k) ?? "").includes("Written in the second tab"), cacheKey);

  // The second tab keeps changing its state (a draft, an open chat) up to the moment of the logout.
  await t2.getByTestId("composer-input").fill("a draft");
  await t1.getByTestId("logout").click();
  await t1.getByTestId("auth-form").waitFor();
  await t2.getByTestId("auth-form").waitFor();
  const saved = (p: Page) => p.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("relay-chat:")));
  for (const p of [t1, t2]) expect(await saved(p)).toEqual([]);
  expect(await t2.getByTestId("auth-error").textContent()).toContain("logged out in another tab");
  expect(await t2.getByTestId("conv-list").locator("li").count()).toBe(0);

  // Leaving or reloading the second tab writes nothing back either.
  await t2.reload();
  await t2.getByTestId("auth-form").waitFor();
  for (const p of [t1, t2]) expect(await saved(p)).toEqual([]);

  // Logging in again in one tab logs the other in too.
  await t1.getByTestId("auth-username").fill(erin);
  await t1.getByTestId("auth-password").fill(PASSWORD);
  await t1.getByTestId("auth-login").click();
  await connected(t1);
  await connected(t2);
  expect(await t2.getByTestId("me").textContent()).toBe(erin);
  await t1.context().close();
  expect(pageErrors).toEqual([]);
}, 30_000);

test("the small things: newest activity first, new-messages hint, links, long text, drafts, Escape, labels", async () => {
  const { cluster } = await env();
  const [ws1] = cluster.wsUrls as [string, string];
  const a = pages.alice!, b = pages.bob!, c = pages.carol!;

  // An empty group made earlier stays below a direct chat with newer messages, on a fresh device too.
  await c.getByTestId("new-group-toggle").click();
  await c.getByTestId("new-group-name").fill("Quiet corner");
  await c.getByTestId("new-group-members").fill(alice);
  await c.getByTestId("new-group-button").click();
  const quiet = (await c.locator('[data-testid="conv-item"][data-conv^="g:"].active').getAttribute("data-conv"))!;
  await conv(a, quiet).waitFor({ timeout: 20_000 });
  await conv(b, `d:${alice}`).click();
  await send(b, "Newest news");
  await conv(a, `d:${bob}`).getByTestId("conv-preview").filter({ hasText: "Newest news" }).waitFor();
  const device = await openClient(ws1);
  await device.getByTestId("auth-username").fill(alice);
  await device.getByTestId("auth-password").fill(PASSWORD);
  await device.getByTestId("auth-login").click();
  await connected(device);
  await conv(device, quiet).waitFor();
  await conv(device, `d:${bob}`).getByTestId("conv-preview").filter({ hasText: "Newest news" }).waitFor();
  const order = await device.getByTestId("conv-item").evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.conv));
  expect(order.indexOf(`d:${bob}`)).toBeLessThan(order.indexOf(quiet));
  // The list says unread counts in words, and presence in words.
  expect(await conv(device, `d:${bob}`).getByTestId("conv-unread").textContent()).toContain("unread message");
  expect(await conv(device, `d:${bob}`).getByTestId("presence-dot").textContent()).toMatch(/^(online|offline|status unknown)$/);
  await device.context().close();

  // Scrolled up, a new message shows a hint and is not marked read; the hint scrolls down and reads it.
  await conv(a, `d:${bob}`).click();
  for (let i = 1; i <= 6; i++) await send(b, `filler #${i}#\n${"line\n".repeat(8)}end`);
  await message(a, "filler #6#", "received").waitFor();
  await a.getByTestId("message-list").evaluate((el) => (el.scrollTop = 0));
  await send(b, "Look down");
  await a.getByTestId("new-below").waitFor();
  await conv(a, `d:${bob}`).getByTestId("conv-unread").waitFor();
  await a.getByTestId("new-below").click();
  await conv(a, `d:${bob}`).getByTestId("conv-unread").waitFor({ state: "detached" });
  await a.getByTestId("new-below").waitFor({ state: "hidden" });

  // Links are clickable and safe; other schemes stay text.
  await send(b, "See https://example.com/a?b=1. Not javascript:alert(1)");
  const link = message(a, "See https://example.com").locator("a");
  await link.waitFor();
  expect(await link.count()).toBe(1);
  expect(await link.getAttribute("href")).toBe("https://example.com/a?b=1");
  expect(await link.getAttribute("rel")).toContain("noopener");
  expect(await link.getAttribute("target")).toBe("_blank");

  // The title is a heading.
  await a.getByRole("heading", { name: bob }).waitFor();

  // Over 4096 characters: said before sending, nothing cut.
  await a.getByTestId("composer-input").fill("x".repeat(4100));
  await a.getByTestId("composer-limit").filter({ hasText: "4096" }).waitFor();
  expect(await a.getByTestId("composer-send").isDisabled()).toBe(true);
  expect((await a.getByTestId("composer-input").inputValue()).length).toBe(4100);

  // Drafts survive a reload.
  await a.getByTestId("composer-input").fill("half-written thought");
  await a.waitForFunction((k) => (localStorage.getItem(k) ?? "").includes("half-written thought"), `relay-chat:state:${alice}`);
  await a.reload();
  await connected(a);
  await conv(a, `d:${bob}`).click();
  expect(await a.getByTestId("composer-input").inputValue()).toBe("half-written thought");
  await a.getByTestId("composer-input").fill("");

  // Note to self: the avatar shows the user's initials, not "A(".
  await a.getByTestId("new-chat-input").fill(alice);
  await a.getByTestId("new-chat-button").click();
  await conv(a, `d:${alice}`).and(a.locator(".active")).waitFor();
  expect(await a.locator("#conv-avatar").textContent()).toBe(`A${tag[0]!.toUpperCase()}`);

  // Escape closes the new-group form.
  await a.getByTestId("new-group-toggle").click();
  await a.getByTestId("new-group-name").focus();
  await a.keyboard.press("Escape");
  expect(await a.locator("#new-group").evaluate((e) => (e as HTMLDetailsElement).open)).toBe(false);

  // A new user's empty list puts its hint right under the tools, not at the bottom.
  const fresh = await signUp(ws1, `fay-${tag}`);
  expect((await fresh.getByTestId("conv-list").boundingBox())!.height).toBe(0);
  await fresh.context().close();
  expect(pageErrors).toEqual([]);
}, 60_000);

test("no serious accessibility violations in the main views, light and dark, wide and phone-sized", async () => {
  const { browser, cluster } = await env();
  for (const scheme of ["light", "dark"] as const) {
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: scheme, bypassCSP: true });
    const p = await ctx.newPage();
    p.setDefaultTimeout(10_000);
    await p.goto(`${cluster.wsUrls[0]}/client`);
    await p.getByTestId("auth-form").waitFor();
    expect(await axeViolations(p), `auth view, ${scheme}`).toEqual([]);
    await p.getByTestId("auth-username").fill(alice);
    await p.getByTestId("auth-password").fill(PASSWORD);
    await p.getByTestId("auth-login").click();
    await connected(p);
    await conv(p, `d:${bob}`).click();
    await message(p, "Look down").waitFor();
    expect(await axeViolations(p), `conversation, ${scheme}`).toEqual([]);
    await conv(p, groupKey).click();
    await p.getByTestId("members-toggle").click();
    await p.getByTestId("members-list").locator("li").first().waitFor();
    expect(await axeViolations(p), `group with members, ${scheme}`).toEqual([]);
    await p.setViewportSize({ width: 390, height: 760 });
    expect(await axeViolations(p), `phone-sized conversation, ${scheme}`).toEqual([]);
    await p.getByTestId("back").click();
    await p.getByTestId("conv-list").waitFor();
    expect(await axeViolations(p), `phone-sized list, ${scheme}`).toEqual([]);
    await p.getByTestId("account").click();
    await p.getByTestId("password-form").waitFor();
    expect(await axeViolations(p), `phone-sized account dialog, ${scheme}`).toEqual([]);
    await p.keyboard.press("Escape");
    await p.getByTestId("account-dialog").waitFor({ state: "hidden" });
    // Long previews are cut with an ellipsis, never widen the page.
    expect(await p.evaluate(() => document.documentElement.scrollWidth)).toBe(390);
    await ctx.close();
  }
  expect(pageErrors).toEqual([]);
}, 60_000);
