import { expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import type { Page } from "playwright-core";
import { axeViolations, useBrowserCluster } from "../../test/browser.ts";

// Group membership in the browser client (issue 15 item 5), in real Chromium against a real
// cluster: discover, two ws instances and persist over Redis, RabbitMQ and PostgreSQL. Every wait
// is on the DOM; "at once" means without the client asking the server for the group list again.

const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const PASSWORD = "correct horse battery";
const tag = crypto.randomUUID().slice(0, 6);

const { env, openClient, pageErrors } = useBrowserCluster();

/** Each page's requests for the group list (GET /api/groups), counted as they are sent. */
const groupListRequests = new Map<Page, number>();

/** A tab on `base`/client in a new browser profile, signed up (or, with `login`, signed in) as `name`. */
async function signUp(base: string, name: string, { login = false, colorScheme = "light" as "light" | "dark", width = 1200, axe = false } = {}): Promise<Page> {
  const { browser } = await env();
  // axe-core is loaded into the page by a script tag, which the Content-Security-Policy forbids.
  const page = await openClient(base, await browser.newContext({ viewport: { width, height: 760 }, colorScheme, bypassCSP: axe }));
  groupListRequests.set(page, 0);
  page.on("request", (r) => r.method() === "GET" && new URL(r.url()).pathname === "/api/groups" && groupListRequests.set(page, groupListRequests.get(page)! + 1));
  await page.getByTestId("auth-username").fill(name);
  await page.getByTestId("auth-password").fill(PASSWORD);
  await page.getByTestId(login ? "auth-login" : "auth-register").click();
  await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  return page;
}

const conv = (page: Page, key: string) => page.locator(`[data-testid="conv-item"][data-conv="${key}"]`);
const message = (page: Page, text: string, status?: string) =>
  page.locator(`[data-testid="message"]${status ? `[data-status="${status}"]` : ""}`).filter({ hasText: text });
const members = (p: Page) => p.getByTestId("members-list").locator("li");
const member = (p: Page, user: string) => p.locator(`[data-testid="members-list"] li[data-user="${user}"]`);
const notices = (p: Page) => p.getByTestId("notice").evaluateAll((els) => els.map((e) => e.textContent!.replace(/ · .*$/, "")));
const notice = (p: Page, action: string, user: string) => p.locator(`[data-testid="notice"][data-action="${action}"][data-user="${user}"]`);

async function send(page: Page, text: string) {
  await page.getByTestId("composer-input").fill(text);
  await page.getByTestId("composer-send").click();
  await message(page, text, "sent").waitFor();
}

/** Runs `change` and returns how many times `page` asked for the group list meanwhile and until `shown` resolved. */
async function listRequestsDuring(page: Page, change: () => Promise<unknown>, shown: () => Promise<unknown>): Promise<number> {
  const before = groupListRequests.get(page)!;
  await change();
  await shown();
  return groupListRequests.get(page)! - before;
}

const [alice, bob, carol] = [`alice-${tag}`, `bob-${tag}`, `carol-${tag}`];
let key = "";

test("membership changes show at once on every member's client; a new member sees the history; the owner's role passes on; a removed member cannot write", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const a = await signUp(ws1, alice);
  const b = await signUp(ws2, bob);
  const c = await signUp(ws1, carol);

  // Alice makes a group with Bob: it shows in Bob's list at once.
  await a.getByTestId("new-group-toggle").click();
  await a.getByTestId("new-group-name").fill("Crew");
  await a.getByTestId("new-group-members").fill(bob);
  const createdAsked = await listRequestsDuring(
    b,
    async () => {
      await a.getByTestId("new-group-button").click();
      const active = a.locator('[data-testid="conv-item"][data-conv^="g:"].active');
      await active.waitFor();
      key = (await active.getAttribute("data-conv"))!;
    },
    () => conv(b, key).getByTestId("conv-name").filter({ hasText: "Crew" }).waitFor(),
  );
  expect(createdAsked).toBe(0);
  await send(a, "Before Carol, one");
  await send(a, "Before Carol, two");
  await conv(b, key).click();
  await message(b, "Before Carol, two", "received").waitFor();
  await b.getByTestId("members-toggle").click();
  await member(b, alice).waitFor();
  expect(await member(b, alice).getByTestId("member-role").textContent()).toBe("owner");
  expect(await b.getByTestId("member-remove").count()).toBe(0);

  // Alice adds Carol: Bob's open member list shows her at once; Carol gets the group with its history.
  await a.getByTestId("members-toggle").click();
  const addedAsked = await listRequestsDuring(
    b,
    async () => {
      await a.getByTestId("add-member-input").fill(carol);
      await a.getByTestId("add-member-button").click();
    },
    () => member(b, carol).waitFor(),
  );
  expect(addedAsked).toBe(0);
  await conv(c, key).getByTestId("conv-name").filter({ hasText: "Crew" }).waitFor();
  await conv(c, key).click();
  await message(c, "Before Carol, one", "received").waitFor();
  await message(c, "Before Carol, two", "received").waitFor();
  expect(await c.getByTestId("history-status").textContent()).not.toContain("No messages yet");
  expect(await c.getByTestId("message-body").allTextContents()).toEqual(["Before Carol, one", "Before Carol, two"]);
  // The notice of her joining, after the history she was given.
  await notice(c, "added", carol).waitFor();
  expect(await notices(c)).toEqual([`${alice} added you`]);
  await notice(b, "added", carol).waitFor();
  expect(await notices(b)).toEqual([`${alice} created the group`, `${alice} added ${carol}`]);
  // The notices sit in stream order between the messages.
  const order = await b.locator('[data-testid="message"], [data-testid="notice"]').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.testid));
  expect(order).toEqual(["notice", "message", "message", "notice"]);

  // The owner makes Carol an admin and takes it back: Bob's panel follows at once.
  await member(a, carol).getByTestId("member-role-toggle").filter({ hasText: "Make admin" }).click();
  await member(b, carol).getByTestId("member-role").filter({ hasText: "admin" }).waitFor();
  await notice(b, "role", carol).waitFor();
  await member(a, carol).getByTestId("member-role-toggle").filter({ hasText: "Remove admin" }).click();
  await member(b, carol).getByTestId("member-role").waitFor({ state: "detached" });
  // The member list (a pushed frame) and the notice (a stream event) travel separately: the
  // notice may come a moment after the panel changed.
  await b.locator('[data-testid="notice"]', { hasText: `${carol} is no longer an admin` }).waitFor();
  expect((await notices(b)).slice(-2)).toEqual([`${alice} made ${carol} an admin`, `${carol} is no longer an admin`]);
  expect(await member(b, carol).getByTestId("member-role-toggle").count()).toBe(0); // only the owner sees it

  // Alice leaves: Bob, the longest-standing member, becomes the owner and can remove members.
  const leftAsked = await listRequestsDuring(
    b,
    async () => {
      await a.getByTestId("leave-group").click();
      await a.getByTestId("leave-group").click();
      await conv(a, key).waitFor({ state: "detached" });
    },
    () => member(b, alice).waitFor({ state: "detached" }),
  );
  expect(leftAsked).toBe(0);
  await member(b, bob).getByTestId("member-role").filter({ hasText: "owner" }).waitFor();
  await member(b, carol).getByTestId("member-remove").waitFor();
  await notice(b, "role", bob).waitFor();
  expect((await notices(b)).slice(-2)).toEqual([`${alice} left`, "You are now the owner"]);
  expect((await notices(c)).slice(-2)).toEqual([`${alice} left`, `${bob} is now the owner`]);

  // Bob removes Carol, who has the group open: her chat says so at once, keeps its name, and cannot be written to.
  await send(c, "Carol says hi");
  await message(b, "Carol says hi", "received").waitFor();
  await member(b, carol).getByTestId("member-remove").click();
  await member(b, carol).waitFor({ state: "detached" });
  await c.locator('[data-testid="conv-sub"]', { hasText: `removed from this group by ${bob}` }).waitFor();
  expect(await c.getByTestId("conv-title").textContent()).toBe("Crew");
  expect(await c.getByTestId("composer-input").isDisabled()).toBe(true);
  expect(await c.getByTestId("composer-send").isDisabled()).toBe(true);
  expect(await c.getByTestId("conv-gone").isVisible()).toBe(true);
  await notice(c, "removed", carol).waitFor();
  expect((await notices(c)).at(-1)).toBe(`${bob} removed you`);
  // Nothing was sent and refused to find out.
  expect(await c.locator('[data-testid="message"][data-status="failed"]').count()).toBe(0);
  // A reload keeps the chat's name and the notice (the group is no longer in her list).
  await c.reload();
  await c.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  await c.locator('[data-testid="conv-sub"]', { hasText: `removed from this group by ${bob}` }).waitFor();
  expect(await c.getByTestId("conv-title").textContent()).toBe("Crew");
  expect(await c.getByTestId("composer-input").isDisabled()).toBe(true);
  expect((await notices(c)).at(-1)).toBe(`${bob} removed you`);
  // Bob's other device, started now, gets every notice through sync and history.
  const b2 = await signUp(ws1, bob, { login: true });
  await conv(b2, key).click();
  await notice(b2, "removed", carol).waitFor();
  expect(await notices(b2)).toEqual(await notices(b));

  mkdirSync(ARTIFACTS, { recursive: true });
  await b.screenshot({ path: `${ARTIFACTS}members-owner.png` });
  await c.screenshot({ path: `${ARTIFACTS}members-removed.png` });
  expect(pageErrors).toEqual([]);
}, 60_000);

test("no serious accessibility violations: a group with notices and roles, a removed member's chat; light and dark, wide and phone-sized", async () => {
  const { cluster } = await env();
  expect(key).not.toBe("");
  for (const colorScheme of ["light", "dark"] as const) {
    for (const width of [1200, 390]) {
      const b = await signUp(cluster.wsUrls[0]!, bob, { login: true, colorScheme, width, axe: true });
      await b.goto(`${cluster.wsUrls[0]}/client/#${encodeURIComponent(key)}`);
      await notice(b, "removed", carol).waitFor();
      await b.getByTestId("members-toggle").click();
      await member(b, bob).getByTestId("member-role").waitFor();
      expect(await axeViolations(b), `group, ${colorScheme}, ${width}px`).toEqual([]);
      const c = await signUp(cluster.wsUrls[1]!, carol, { login: true, colorScheme, width, axe: true });
      await c.goto(`${cluster.wsUrls[1]}/client/#${encodeURIComponent(key)}`);
      await c.getByTestId("conv-gone").waitFor();
      expect(await axeViolations(c), `removed, ${colorScheme}, ${width}px`).toEqual([]);
      await b.context().close();
      await c.context().close();
    }
  }
  expect(pageErrors).toEqual([]);
}, 90_000);
