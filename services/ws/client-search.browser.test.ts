import { afterAll, expect, test } from "bun:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { mintToken, TestClient } from "../../test/client.ts";
import { DEFAULT_CHROMIUM } from "../../test/env.ts";
import { startCluster, type Cluster } from "../../scripts/cluster.ts";

// Search and typing in the browser client, in real Chromium against two gateways: users on
// different instances, and one user on two devices. Every wait is on the DOM.

const CHROMIUM = process.env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM;
const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const tag = crypto.randomUUID().slice(0, 6);
const [ann, bob, cat] = [`ann-${tag}`, `bob-${tag}`, `cat-${tag}`];
const errors: string[] = [];

let started: Promise<{ browser: Browser; cluster: Cluster }> | null = null;
const env = () =>
  (started ??= (async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
    return { browser, cluster: await startCluster({ ws: 2 }).catch(async (e) => (await browser.close(), Promise.reject(e))) };
  })());
const sockets: TestClient[] = [];
afterAll(async () => {
  for (const s of sockets) s.close();
  const e = await started?.catch(() => null);
  await e?.browser.close();
  await e?.cluster.stop();
}, 30_000);

/** `user` signed in (registered on first use) in a new browser profile on `base`. */
async function device(base: string, user: string, register: boolean): Promise<Page> {
  const { browser } = await env();
  const page = await (await browser.newContext({ viewport: { width: 1200, height: 760 } })).newPage();
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (e) => errors.push(`${user}: ${e.message}`));
  await page.goto(`${base}/client/`);
  await page.getByTestId("auth-username").fill(user);
  await page.getByTestId("auth-password").fill("correct horse battery");
  await page.getByTestId(register ? "auth-register" : "auth-login").click();
  await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  return page;
}
const open = async (page: Page, key: string) => {
  await page.locator(`[data-testid="conv-item"][data-conv="${key}"]`).click();
  await page.locator(`[data-testid="conv-item"][data-conv="${key}"].active`).waitFor();
};
const typing = (page: Page) => page.getByTestId("typing");
const results = (page: Page) => page.getByTestId("search-result");

const pages = {} as { ann: Page; bob: Page; bob2: Page; cat: Page };

test("typing: the other party's devices on both instances show '… is typing' while the user types; it goes when the message comes, or by itself", async () => {
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  pages.ann = await device(ws1, ann, true);
  pages.bob = await device(ws2, bob, true);
  pages.cat = await device(ws1, cat, true);
  pages.bob2 = await device(ws1, bob, false); // bob's second device, on the other instance
  const { ann: a, bob: b, bob2: b2 } = pages;

  await a.getByTestId("new-chat-input").fill(bob);
  await a.getByTestId("new-chat-button").click();
  await a.getByTestId("composer-input").fill("First, the lighthouse");
  await a.getByTestId("composer-send").click();
  for (const p of [b, b2]) await open(p, `d:${ann}`);

  // typing shows on both of bob's devices, not on ann's own page
  await a.getByTestId("composer-input").pressSequentially("Meet at");
  for (const p of [b, b2]) await typing(p).filter({ hasText: `${ann} is typing…` }).waitFor();
  await b.screenshot({ path: `${ARTIFACTS}client-typing.png` });
  expect(await typing(a).isHidden()).toBe(true);
  // the message ends it
  await a.getByTestId("composer-input").pressSequentially(" the harbour");
  await a.getByTestId("composer-send").click();
  for (const p of [b, b2]) {
    await p.locator('[data-testid="message"]').filter({ hasText: "Meet at the harbour" }).waitFor();
    await typing(p).waitFor({ state: "hidden" });
  }
  // typing without sending: it expires by itself (the frame's ttlMs)
  await a.getByTestId("composer-input").pressSequentially("hmm");
  await typing(b).filter({ hasText: `${ann} is typing…` }).waitFor();
  await typing(b).waitFor({ state: "hidden" });
  // another conversation open: not shown there
  await b.getByTestId("new-chat-input").fill(cat);
  await b.getByTestId("new-chat-button").click();
  await typing(b2).waitFor({ state: "hidden" });
  await a.getByTestId("composer-input").fill("");
  await a.getByTestId("composer-input").pressSequentially("still here");
  await typing(b2).filter({ hasText: `${ann} is typing…` }).waitFor();
  expect(await typing(b).isHidden()).toBe(true);
  expect(errors).toEqual([]);
}, 60_000);

test("search: results from the caller's conversations only, newest first, paged; a result opens its conversation", async () => {
  const { cluster } = await env();
  const { ann: a, bob: b, cat: c } = pages;
  // a group with the word, and enough direct messages for a second page (sent over a socket)
  const res = await fetch(`${cluster.wsUrls[0]}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${await mintToken(ann, cluster.jwtSecret)}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "Keepers", members: [bob] }),
  });
  const { groupId } = (await res.json()) as { groupId: string };
  const s = await TestClient.connect(cluster.wsUrls[1]!, ann, await mintToken(ann, cluster.jwtSecret));
  sockets.push(s);
  for (let i = 1; i <= 21; i++) expect((await s.sendMessage({ to: bob }, `lighthouse log ${i}`)).type).toBe("ack");
  expect((await s.sendMessage({ group: groupId }, "The lighthouse crew meets tonight")).type).toBe("ack");

  await b.getByTestId("search-input").fill("LIGHTHOUSE");
  await b.getByTestId("search-input").press("Enter");
  await results(b).nth(19).waitFor();
  expect(await results(b).count()).toBe(20);
  const first = results(b).first();
  expect(await first.getAttribute("data-conv")).toBe(`g:${groupId}`);
  expect(await first.textContent()).toContain("Keepers");
  expect(await first.locator("mark").first().textContent()).toBe("lighthouse");
  expect(await results(b).nth(1).textContent()).toContain(`${ann}: lighthouse log 21`);
  // the conversation list gives way to the results
  expect(await b.getByTestId("conv-list").isHidden()).toBe(true);
  await b.getByTestId("search-more").click();
  await results(b).nth(22).waitFor();
  expect(await results(b).count()).toBe(23); // 21 + the group's + "First, the lighthouse"
  expect(await b.getByTestId("search-more").isHidden()).toBe(true);
  expect(await results(b).last().textContent()).toContain("First, the lighthouse");

  // a result opens its conversation
  await first.click();
  // (the list is hidden behind the results: the conversation is active there all the same)
  await b.locator(`[data-testid="conv-item"][data-conv="g:${groupId}"].active`).waitFor({ state: "attached" });
  expect(await b.getByTestId("conv-title").textContent()).toBe("Keepers");
  await b.locator('[data-testid="message"]').filter({ hasText: "The lighthouse crew meets tonight" }).waitFor();
  await results(b).filter({ hasText: "lighthouse log 3" }).click();
  await b.getByTestId("conv-title").filter({ hasText: ann }).waitFor();
  await b.locator('[data-testid="message"].found').filter({ hasText: "lighthouse log 3" }).waitFor();
  await b.screenshot({ path: `${ARTIFACTS}client-search.png` });

  // cat was in none of these conversations
  await c.getByTestId("search-input").fill("lighthouse");
  await c.getByTestId("search-status").filter({ hasText: "No messages found." }).waitFor();
  expect(await results(c).count()).toBe(0);
  // closing the search brings the conversation list back
  await b.getByTestId("search-clear").click();
  await b.getByTestId("conv-list").waitFor();
  expect(await b.getByTestId("search-panel").isHidden()).toBe(true);
  expect(errors).toEqual([]);
}, 60_000);

test("typing: the line it adds above the composer keeps a list that was at the bottom there, so the newest message (and its receipt) stays in view", async () => {
  const { ann: a, bob: b } = pages;
  await open(b, `d:${ann}`);
  await a.getByTestId("composer-input").fill("The last word");
  await a.getByTestId("composer-send").click();
  await b.locator('[data-testid="message"]').filter({ hasText: "The last word" }).waitFor();
  await typing(b).waitFor({ state: "hidden" });
  // bob goes to the bottom of the list (his search left him at an older message)
  await b.getByTestId("message-list").press("End");
  await b.waitForFunction(() => {
    const s = document.getElementById("message-scroll")!;
    return s.scrollHeight > s.clientHeight && s.scrollHeight - s.scrollTop - s.clientHeight < 1;
  });
  const lastShown = () =>
    b.evaluate(async () => {
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const s = document.getElementById("message-scroll")!.getBoundingClientRect();
      const last = document.querySelector("#message-items > li:last-child")!;
      return { text: last.textContent, inView: last.getBoundingClientRect().bottom <= s.bottom };
    });
  expect(await lastShown()).toEqual({ text: expect.stringContaining("The last word"), inView: true });
  await a.getByTestId("composer-input").pressSequentially("Also");
  await typing(b).filter({ hasText: `${ann} is typing…` }).waitFor();
  expect(await lastShown()).toEqual({ text: expect.stringContaining("The last word"), inView: true });
  expect(errors).toEqual([]);
}, 60_000);
