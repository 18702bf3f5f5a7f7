import { expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import type { BrowserContext, Page } from "playwright-core";
import { axeViolations, sendFromComposer as send, useBrowserCluster } from "../../test/browser.ts";
import { mintToken, TestClient } from "../../test/client.ts";

// Edit and delete in the browser client, in real Chromium against a real cluster (two ws
// instances): from the message's menu by keyboard and by mouse, live on the other user's instance
// and on a second device, after that device reconnects (sync), and after a reload. Every wait is on the DOM.

const ARTIFACTS = new URL("../../test-artifacts/", import.meta.url).pathname;
const tag = crypto.randomUUID().slice(0, 6);
const { env, openClient, signIn, pageErrors } = useBrowserCluster();

const connected = (page: Page) => page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
const conv = (page: Page, key: string) => page.locator(`[data-testid="conv-item"][data-conv="${key}"]`);
const byId = (page: Page, msgId: string) => page.locator(`[data-testid="message"][data-msgid="${msgId}"]`);
const bodyOf = (page: Page, msgId: string) => byId(page, msgId).getByTestId("message-body");

/** Waits until `msgId` shows `text` with the edited marker. */
async function showsEdited(page: Page, msgId: string, text: string) {
  await page.locator(`[data-testid="message"][data-msgid="${msgId}"][data-edited="true"]`).filter({ hasText: text }).waitFor();
  expect(await bodyOf(page, msgId).textContent()).toBe(text);
  expect(await byId(page, msgId).getByTestId("message-edited").textContent()).toBe("edited");
}
async function showsDeleted(page: Page, msgId: string) {
  await page.locator(`[data-testid="message"][data-msgid="${msgId}"][data-deleted="true"]`).waitFor();
  expect(await bodyOf(page, msgId).textContent()).toBe("message deleted");
  expect(await byId(page, msgId).getByTestId("message-menu-button").count()).toBe(0);
}

const alice = `alice-${tag}`;
const bob = `bob-${tag}`;

test("edit by keyboard and delete by mouse from the message menu: live on the other instance and on a second device, after its reconnect, and after a reload", async () => {
  const { browser, cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  const a = await signIn(ws1, alice, true);
  const b = await signIn(ws2, bob, true);
  const bobPhone = await browser.newContext({ viewport: { width: 390, height: 760 } });
  let b2 = await signIn(ws1, bob, false, bobPhone); // bob's second device, on the other instance

  await a.getByTestId("new-chat-input").fill(bob);
  await a.getByTestId("new-chat-button").click();
  const m1 = await send(a, "See you at 5");
  const m2 = await send(a, "My password is hunter2");
  const m3 = await send(a, "Third message");
  for (const p of [b, b2]) {
    await conv(p, `d:${alice}`).click();
    await bodyOf(p, m3).waitFor();
  }
  // Only one's own messages have a menu.
  expect(await byId(b, m1).getByTestId("message-menu-button").count()).toBe(0);

  // Edit with the keyboard alone: the menu button, arrow keys, Enter, type, Enter.
  await byId(a, m1).getByTestId("message-menu-button").focus();
  await a.keyboard.press("Enter");
  await byId(a, m1).getByTestId("message-menu").waitFor();
  expect(await byId(a, m1).getByTestId("message-menu-button").getAttribute("aria-expanded")).toBe("true");
  expect(await a.evaluate(() => document.activeElement?.textContent)).toBe("Edit");
  await a.keyboard.press("ArrowDown");
  expect(await a.evaluate(() => document.activeElement?.textContent)).toBe("Delete");
  await a.keyboard.press("Escape"); // closes, focus back on the button
  await byId(a, m1).getByTestId("message-menu").waitFor({ state: "detached" });
  expect(await a.evaluate(() => document.activeElement?.getAttribute("data-testid"))).toBe("message-menu-button");
  await a.keyboard.press("ArrowDown"); // opens on the first item
  await a.keyboard.press("Enter");
  const input = byId(a, m1).getByTestId("message-edit-input");
  await input.waitFor();
  expect(await a.evaluate(() => document.activeElement?.getAttribute("data-testid"))).toBe("message-edit-input");
  expect(await input.inputValue()).toBe("See you at 5");
  await a.keyboard.press("ControlOrMeta+A");
  await a.keyboard.type("See you at 6");
  await a.keyboard.press("Enter");
  await showsEdited(a, m1, "See you at 6");
  for (const p of [b, b2]) await showsEdited(p, m1, "See you at 6");

  // Escape leaves the editor without changing anything.
  await byId(a, m3).getByTestId("message-menu-button").click();
  await byId(a, m3).getByTestId("message-menu").waitFor();
  mkdirSync(ARTIFACTS, { recursive: true });
  await a.screenshot({ path: `${ARTIFACTS}message-menu.png` });
  await byId(a, m3).getByTestId("message-edit").click();
  await byId(a, m3).getByTestId("message-edit-input").fill("never sent");
  await a.keyboard.press("Escape");
  expect(await bodyOf(a, m3).textContent()).toBe("Third message");

  // Delete with the mouse, confirmed: a tombstone everywhere, the text gone.
  await byId(a, m2).getByTestId("message-menu-button").click();
  await byId(a, m2).getByTestId("message-delete").click();
  await byId(a, m2).getByTestId("message-delete-confirm").click();
  for (const p of [a, b, b2]) await showsDeleted(p, m2);

  // Bob's phone goes away; Alice edits and deletes meanwhile; it comes back and catches up by sync.
  await b2.close();
  await byId(a, m3).getByTestId("message-menu-button").click();
  await byId(a, m3).getByTestId("message-edit").click();
  await byId(a, m3).getByTestId("message-edit-input").fill("Third, edited while you were away");
  await byId(a, m3).getByTestId("message-edit-save").click();
  await showsEdited(a, m3, "Third, edited while you were away");
  await byId(a, m1).getByTestId("message-menu-button").click();
  await byId(a, m1).getByTestId("message-delete").click();
  await byId(a, m1).getByTestId("message-delete-confirm").click();
  await showsDeleted(a, m1);
  b2 = await openClient(ws1, bobPhone);
  await connected(b2);
  await conv(b2, `d:${alice}`).click();
  await showsEdited(b2, m3, "Third, edited while you were away");
  await showsDeleted(b2, m1);
  await showsDeleted(b2, m2);
  for (const p of [b]) {
    await showsEdited(p, m3, "Third, edited while you were away");
    await showsDeleted(p, m1);
  }

  // A reload (from the cache and the server's history) shows the same state, and a fresh device too.
  await a.reload();
  await connected(a);
  await conv(a, `d:${bob}`).click();
  await showsEdited(a, m3, "Third, edited while you were away");
  for (const m of [m1, m2]) await showsDeleted(a, m);
  const fresh = await signIn(ws2, bob, false);
  await conv(fresh, `d:${alice}`).click();
  await showsEdited(fresh, m3, "Third, edited while you were away");
  for (const m of [m1, m2]) await showsDeleted(fresh, m);

  await b.screenshot({ path: `${ARTIFACTS}edit-delete.png` });
  expect(pageErrors).toEqual([]);
}, 90_000);

test("an edit the server refuses is reported and changes nothing; an empty edit is not sent", async () => {
  const { browser, cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  // Alice's tab whose socket loses the deletion event (routed through the test), so that it still
  // offers to edit a message deleted elsewhere: the server answers not_found.
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const dropped = new Set<string>();
  await ctx.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      const f = JSON.parse(String(m));
      if (f.type === "event" && f.kind === "delete" && dropped.has(f.ref)) return;
      ws.send(m);
    });
  });
  const a = await signIn(ws1, alice, false, ctx);
  await conv(a, `d:${bob}`).click();
  const m = await send(a, "Short-lived");
  dropped.add(m);
  const other = await TestClient.connect(ws2, alice, await mintToken(alice, cluster.jwtSecret));
  other.send({ type: "delete", id: "d1", msgId: m });
  expect((await other.waitFor((f) => f.id === "d1")).type).toBe("ack");
  other.close();

  await byId(a, m).getByTestId("message-menu-button").click();
  await byId(a, m).getByTestId("message-edit").click();
  await byId(a, m).getByTestId("message-edit-input").fill("Too late");
  await a.keyboard.press("Enter");
  await a.getByTestId("toast").filter({ hasText: "Not edited: That message no longer exists" }).waitFor();
  expect(await bodyOf(a, m).textContent()).toBe("Short-lived");
  expect(await byId(a, m).getAttribute("data-edited")).toBeNull();

  // An empty edit is refused here, before the server.
  const m2 = await send(a, "Keep me");
  await byId(a, m2).getByTestId("message-menu-button").click();
  await byId(a, m2).getByTestId("message-edit").click();
  await byId(a, m2).getByTestId("message-edit-input").fill("   ");
  await a.keyboard.press("Enter");
  await a.getByTestId("toast").filter({ hasText: "cannot be empty" }).waitFor();
  await a.keyboard.press("Escape");
  expect(await bodyOf(a, m2).textContent()).toBe("Keep me");
  await ctx.close();
  expect(pageErrors).toEqual([]);
}, 60_000);

test("no serious accessibility violations with the message menu open, the editor and the deletion prompt", async () => {
  const { browser, cluster } = await env();
  for (const scheme of ["light", "dark"] as const) {
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 }, colorScheme: scheme, bypassCSP: true });
    const a = await signIn(cluster.wsUrls[0]!, alice, false, ctx);
    await conv(a, `d:${bob}`).click();
    const m = await send(a, `Accessible ${scheme}`);
    await byId(a, m).getByTestId("message-menu-button").click();
    await byId(a, m).getByTestId("message-menu").waitFor();
    expect(await axeViolations(a), `menu, ${scheme}`).toEqual([]);
    await byId(a, m).getByTestId("message-edit").click();
    await byId(a, m).getByTestId("message-edit-input").waitFor();
    expect(await axeViolations(a), `editor, ${scheme}`).toEqual([]);
    await a.keyboard.press("Escape");
    await byId(a, m).getByTestId("message-menu-button").click();
    await byId(a, m).getByTestId("message-delete").click();
    await byId(a, m).getByTestId("message-delete-confirm").waitFor();
    expect(await axeViolations(a), `deletion prompt and tombstones, ${scheme}`).toEqual([]);
    await ctx.close();
  }
}, 60_000);
