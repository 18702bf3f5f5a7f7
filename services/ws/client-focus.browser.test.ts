import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { Page } from "playwright-core";
import { axeViolations, sendFromComposer as send, TEST_PASSWORD, useBrowserCluster } from "../../test/browser.ts";
import { type Frame, mintToken, TestClient } from "../../test/client.ts";

// Keyboard focus survives a message row's change, in real Chromium against a real cluster (two ws
// instances): alice (browser, instance 1) has the focus in one of her messages while bob's read
// receipt for it arrives (bob is a TestClient on instance 2 that sends `read` frames). The row
// shows the new state and the focus, an open menu and an edit in progress stay where they were.
// Then what a change takes away: a confirmed deletion (the row becomes a tombstone), Retry and
// Discard of a failed message, and a row that moves up the list when it is acked; alice's socket
// goes through the test (routeWebSocket), which refuses the sends it is told to ("unavailable",
// once) and holds the server's acks while told to, so each step can be looked at.
// Last, dom.js's reconcile in the page: a node that stays is not moved when one before it goes,
// and the focused node is not moved when it comes earlier. Every wait is on the DOM or on frames.

const tag = crypto.randomUUID().slice(0, 6);
const { env, signIn, pageErrors } = useBrowserCluster();

/** Bodies whose first `send` alice's socket answers with `unavailable` itself (the server never sees it). */
const refuse = new Set<string>();
/** While set, the server's acks to alice wait here (released by `releaseAcks`). */
let held: Array<() => void> | null = null;
const holdAcks = () => (held = []);
function releaseAcks() {
  const h = held ?? [];
  held = null;
  for (const send of h) send();
}
afterEach(releaseAcks); // a test that failed while holding them does not stall the next

const alice = `alice-${tag}`;
const bob = `bob-${tag}`;

const byId = (page: Page, msgId: string) => page.locator(`[data-testid="message"][data-msgid="${msgId}"]`);
const withReceipt = (page: Page, msgId: string, state: string) => page.locator(`[data-testid="message"][data-msgid="${msgId}"][data-receipt="${state}"]`);

/** Where the focus is: the element's test id (or text) and the msgid of the message row holding it. */
const focus = (page: Page) =>
  page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    const row = el?.closest('[data-testid="message"]') as HTMLElement | null;
    return {
      testid: el?.getAttribute("data-testid") ?? el?.tagName.toLowerCase() ?? null,
      text: el?.getAttribute("role") === "menuitem" ? el.textContent : null,
      // A sent message's msgid; one not sent yet has its client id.
      row: row ? row.dataset.msgid || row.dataset.id || null : null,
    };
  });

async function register(base: string, username: string) {
  const res = await fetch(`${base}/api/register`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: TEST_PASSWORD }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

let a: Page;
let b: TestClient;
let jwtSecret: string;
let ws2url: string;
const msgs: string[] = [];
const cursorOf = new Map<string, string>(); // alice's message -> its cursor in bob's stream

/** Bob reads alice's messages up to `msgId`; resolves once alice's row shows it read. */
async function bobReads(msgId: string) {
  b.send({ type: "read", to: alice, cursor: cursorOf.get(msgId) });
  await withReceipt(a, msgId, "read").waitFor();
}

/** Escape closes `msgId`'s open menu and returns the focus to its button. */
async function escapeToButton(msgId: string) {
  await a.keyboard.press("Escape");
  await byId(a, msgId).getByTestId("message-menu").waitFor({ state: "detached" });
  expect(await focus(a)).toEqual({ testid: "message-menu-button", text: null, row: msgId });
}

test("setup: alice's three messages, delivered to bob", async () => {
  const { browser, cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  b = await TestClient.connect(ws2, bob, await register(ws2, bob));
  jwtSecret = cluster.jwtSecret;
  ws2url = ws2;
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  await ctx.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const f = JSON.parse(String(m));
      if (f.type === "send" && refuse.delete(f.body)) ws.send(JSON.stringify({ type: "error", id: f.id, code: "unavailable", message: "refused by the test" }));
      else server.send(m);
    });
    server.onMessage((m) => {
      if (held && JSON.parse(String(m)).type === "ack") held.push(() => ws.send(m));
      else ws.send(m);
    });
  });
  a = await signIn(ws1, alice, true, ctx);
  await a.getByTestId("new-chat-input").fill(bob);
  await a.getByTestId("new-chat-button").click();
  for (const text of ["first", "second", "third"]) {
    const id = await send(a, text);
    const f: Frame = await b.waitFor((f) => f.type === "message" && f.msgId === id, `message ${text}`);
    cursorOf.set(id, f.cursor);
    msgs.push(id);
  }
  // The delivered receipts have arrived: the next change of these rows is bob's read.
  for (const id of msgs) await withReceipt(a, id, "delivered").waitFor();
}, 60_000);

test("a read receipt keeps the focus on the message's menu button", async () => {
  const [m1] = msgs as [string];
  const button = byId(a, m1).getByTestId("message-menu-button");
  await button.focus();
  expect(await focus(a)).toEqual({ testid: "message-menu-button", text: null, row: m1 });
  const before = await button.elementHandle();
  await bobReads(m1);
  expect(await byId(a, m1).getByTestId("message-status").textContent()).toBe("read ✓✓");
  expect(await focus(a)).toEqual({ testid: "message-menu-button", text: null, row: m1 });
  // The very same button (the row was updated, not rebuilt), and the keyboard goes on from there.
  expect(await before!.evaluate((el) => el === document.activeElement)).toBe(true);
  await a.keyboard.press("Enter");
  await byId(a, m1).getByTestId("message-menu").waitFor();
  expect(await focus(a)).toEqual({ testid: "message-edit", text: "Edit", row: m1 });
  await escapeToButton(m1);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("an open menu stays open, focused and usable by keyboard across a read receipt", async () => {
  const [, m2] = msgs as [string, string];
  await byId(a, m2).getByTestId("message-menu-button").focus();
  await a.keyboard.press("Enter");
  await byId(a, m2).getByTestId("message-menu").waitFor();
  await a.keyboard.press("ArrowDown");
  expect(await focus(a)).toEqual({ testid: "message-delete", text: "Delete", row: m2 });
  await bobReads(m2);
  expect(await byId(a, m2).getByTestId("message-status").textContent()).toBe("read ✓✓");
  expect(await byId(a, m2).getByTestId("message-menu-button").getAttribute("aria-expanded")).toBe("true");
  expect(await focus(a)).toEqual({ testid: "message-delete", text: "Delete", row: m2 });
  await a.keyboard.press("ArrowUp");
  expect(await focus(a)).toEqual({ testid: "message-edit", text: "Edit", row: m2 });
  await escapeToButton(m2);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("an edit in progress survives a read receipt: the editor stays open and focused, the typed text and the caret are kept", async () => {
  const [, , m3] = msgs as [string, string, string];
  await byId(a, m3).getByTestId("message-menu-button").focus();
  await a.keyboard.press("ArrowDown");
  await a.keyboard.press("Enter");
  const input = byId(a, m3).getByTestId("message-edit-input");
  await input.waitFor();
  await a.keyboard.press("ControlOrMeta+A");
  await a.keyboard.type("third, typed");
  for (let i = 0; i < 5; i++) await a.keyboard.press("ArrowLeft"); // the caret before "typed"
  await bobReads(m3);
  expect(await byId(a, m3).getByTestId("message-status").textContent()).toBe("read ✓✓");
  expect(await focus(a)).toEqual({ testid: "message-edit-input", text: null, row: m3 });
  expect(await input.inputValue()).toBe("third, typed");
  // Typing goes on at the caret, and Enter saves the whole text.
  await a.keyboard.type("half ");
  expect(await input.inputValue()).toBe("third, half typed");
  await a.keyboard.press("Enter");
  await a.locator(`[data-testid="message"][data-msgid="${m3}"][data-edited="true"]`).waitFor();
  expect(await byId(a, m3).getByTestId("message-body").textContent()).toBe("third, half typed");
  expect(await focus(a)).toEqual({ testid: "message-menu-button", text: null, row: m3 });
  await b.waitFor((f) => f.type === "event" && f.kind === "edit" && f.ref === m3, "the edit");
  expect(pageErrors).toEqual([]);
}, 30_000);

const byClientId = (page: Page, id: string) => page.locator(`[data-testid="message"][data-id="${id}"]`);
const announced = (page: Page) => page.getByTestId("thread-announce").textContent();
/** Empties the thread's status region, so that the next announcement (the same words again) shows. */
const clearAnnounced = (page: Page) =>
  page.evaluate(() => {
    const el = document.getElementById("thread-announce");
    if (el) el.textContent = "";
  });
/** The client ids of the message rows, in the page's order. */
const rowIds = (page: Page) => page.evaluate(() => [...document.querySelectorAll<HTMLElement>('#message-items [data-testid="message"]')].map((e) => e.dataset.id));

/** Sends `text` from the composer, which the test's socket refuses; resolves with the failed row's client id. */
async function sendRefused(text: string) {
  refuse.add(text);
  await a.getByTestId("composer-input").fill(text);
  await a.getByTestId("composer-send").click();
  const row = a.locator('[data-testid="message"][data-status="failed"]').filter({ hasText: text });
  await row.getByTestId("message-retry").waitFor();
  return (await row.getAttribute("data-id"))!;
}

test("a confirmed deletion: the focus waits on the ⋯ button while it is deleted, then goes to the tombstone's row, announced", async () => {
  const m = await send(a, "to be deleted");
  await byId(a, m).getByTestId("message-menu-button").focus();
  await a.keyboard.press("Enter");
  await a.keyboard.press("ArrowDown");
  expect(await focus(a)).toEqual({ testid: "message-delete", text: "Delete", row: m });
  await a.keyboard.press("Enter");
  expect(await focus(a)).toEqual({ testid: "message-delete-confirm", text: null, row: m });
  holdAcks();
  await a.keyboard.press("Enter");
  // In flight: the prompt is gone, the focus is on the (disabled) button, as after saving an edit.
  await byId(a, m).getByTestId("message-pending").filter({ hasText: "deleting…" }).waitFor();
  expect(await byId(a, m).getByTestId("message-delete-ask").count()).toBe(0);
  expect(await focus(a)).toEqual({ testid: "message-menu-button", text: null, row: m });
  expect(await byId(a, m).getByTestId("message-menu-button").getAttribute("aria-disabled")).toBe("true");
  releaseAcks();
  // Done: the row is a tombstone with nothing focusable in it, and holds the focus itself.
  await a.locator(`[data-testid="message"][data-msgid="${m}"][data-deleted="true"]`).waitFor();
  expect(await byId(a, m).locator("button, textarea, a").count()).toBe(0);
  expect(await focus(a)).toEqual({ testid: "message", text: null, row: m });
  expect(await byId(a, m).getAttribute("tabindex")).toBe("-1");
  expect(await announced(a)).toBe("Message deleted.");
  expect(await a.getByTestId("thread-announce").getAttribute("role")).toBe("status");
  await b.waitFor((f) => f.type === "event" && f.kind === "delete" && f.ref === m, "the deletion");
  // axe-core evaluated in the page (a script tag would be refused by the page's CSP, which stays on).
  await a.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  expect(await axeViolations(a)).toEqual([]);
  expect(pageErrors).toEqual([]);
}, 30_000);

test("a deletion from alice's other device while she is in the message's menu: the focus goes to the tombstone's row, announced", async () => {
  const m = await send(a, "deleted elsewhere");
  await byId(a, m).getByTestId("message-menu-button").focus();
  await a.keyboard.press("Enter");
  expect(await focus(a)).toEqual({ testid: "message-edit", text: "Edit", row: m });
  await clearAnnounced(a);
  const other = await TestClient.connect(ws2url, alice, await mintToken(alice, jwtSecret));
  other.send({ type: "delete", id: "d1", msgId: m });
  expect((await other.waitFor((f) => f.id === "d1", "the ack")).type).toBe("ack");
  other.close();
  await a.locator(`[data-testid="message"][data-msgid="${m}"][data-deleted="true"]`).waitFor();
  expect(await focus(a)).toEqual({ testid: "message", text: null, row: m });
  expect(await announced(a)).toBe("Message deleted.");
  expect(pageErrors).toEqual([]);
}, 30_000);

test("Retry puts the focus on the row; acked, the row moves above an earlier failed message and keeps it, never blurred", async () => {
  const p1 = await sendRefused("refused first");
  const p2 = await sendRefused("refused second");
  expect((await rowIds(a)).slice(-2)).toEqual([p1, p2]);
  await byClientId(a, p2).getByTestId("message-retry").focus();
  expect(await focus(a)).toEqual({ testid: "message-retry", text: null, row: p2 });
  holdAcks();
  await a.keyboard.press("Enter");
  await a.locator(`[data-testid="message"][data-id="${p2}"][data-status="sending"]`).waitFor();
  expect(await byClientId(a, p2).getByTestId("message-error").count()).toBe(0);
  expect(await focus(a)).toEqual({ testid: "message", text: null, row: p2 });
  // Counts the row's blurs from here on (moving a focused node blurs it, even when the focus is put back).
  const row = await byClientId(a, p2).elementHandle();
  await row!.evaluate((el) => {
    (window as unknown as { blurs: number }).blurs = 0;
    el.addEventListener("focusout", () => (window as unknown as { blurs: number }).blurs++);
  });
  releaseAcks();
  // Acked, it has its place among the sent messages: before the failed one typed earlier.
  await a.locator(`[data-testid="message"][data-id="${p2}"][data-status="sent"]`).waitFor();
  expect((await rowIds(a)).slice(-2)).toEqual([p2, p1]);
  const msgId = (await byClientId(a, p2).getAttribute("data-msgid"))!;
  expect(await focus(a)).toEqual({ testid: "message", text: null, row: msgId });
  expect(await row!.evaluate((el) => el === document.activeElement)).toBe(true);
  expect(await a.evaluate(() => (window as unknown as { blurs: number }).blurs)).toBe(0);
  await b.waitFor((f) => f.type === "message" && f.msgId === msgId, "the retried message");
  expect(pageErrors).toEqual([]);
}, 30_000);

/** Discards the failed message `id` from its Discard button by keyboard; checks it was announced. */
async function discardByKeyboard(id: string) {
  await clearAnnounced(a);
  await byClientId(a, id).getByTestId("message-discard").focus();
  await a.keyboard.press("Enter");
  await byClientId(a, id).waitFor({ state: "detached" });
  expect(await announced(a)).toBe("Message discarded.");
}

test("Discard puts the focus on the next message's row, or on the composer when none follows; announced", async () => {
  const p3 = await sendRefused("refused third");
  const p4 = await sendRefused("refused fourth");
  expect((await rowIds(a)).slice(-2)).toEqual([p3, p4]);
  await discardByKeyboard(p3);
  expect(await focus(a)).toEqual({ testid: "message", text: null, row: p4 });
  await discardByKeyboard(p4);
  expect(await focus(a)).toEqual({ testid: "composer-input", text: null, row: null });
  expect(pageErrors).toEqual([]);
}, 30_000);

test("reconcile (dom.js): when a node goes, the nodes after it stay in place and the focused one keeps the focus", async () => {
  const r = await a.evaluate(async (url) => {
    const { h, reconcile } = await import(url);
    const [x, y, z] = ["x", "y", "z"].map((t) => h("button", { type: "button" }, t));
    const parent = h("div", {}, x, y, z);
    document.body.append(parent);
    z.focus();
    reconcile(parent, [x, z]); // y goes
    const out = { children: [...parent.children].map((e) => e.textContent), focused: document.activeElement === z };
    parent.remove();
    return out;
  }, "/client/dom.js");
  expect(r).toEqual({ children: ["x", "z"], focused: true });
});

test("reconcile (dom.js): a focused node that comes earlier keeps the focus, unblurred (the nodes before it move instead)", async () => {
  const r = await a.evaluate(async (url) => {
    const { h, reconcile } = await import(url);
    const [x, y, z] = ["x", "y", "z"].map((t) => h("li", {}, h("button", { type: "button" }, t)));
    const parent = h("ol", {}, x, y, z);
    document.body.append(parent);
    const button = z.firstElementChild as HTMLElement;
    button.focus();
    let blurs = 0;
    button.addEventListener("blur", () => blurs++);
    reconcile(parent, [z, x, y]); // z comes first
    const first = { children: [...parent.children].map((e) => e.textContent), focused: document.activeElement === button };
    reconcile(parent, [x, z, y]); // and back one
    const out = { first, second: { children: [...parent.children].map((e) => e.textContent), focused: document.activeElement === button }, blurs };
    parent.remove();
    return out;
  }, "/client/dom.js");
  expect(r).toEqual({ first: { children: ["z", "x", "y"], focused: true }, second: { children: ["x", "z", "y"], focused: true }, blurs: 0 });
});
