import { expect, test } from "bun:test";
import type { Page } from "playwright-core";
import { sendFromComposer as send, TEST_PASSWORD, useBrowserCluster } from "../../test/browser.ts";
import { type Frame, TestClient } from "../../test/client.ts";

// Keyboard focus survives a message row's change, in real Chromium against a real cluster (two ws
// instances): alice (browser, instance 1) has the focus in one of her messages while bob's read
// receipt for it arrives (bob is a TestClient on instance 2 that sends `read` frames). The row
// shows the new state and the focus, an open menu and an edit in progress stay where they were.
// Last, dom.js's reconcile in the page: a node that stays is not moved when one before it goes.
// Every wait is on the DOM or on frames.

const tag = crypto.randomUUID().slice(0, 6);
const { env, signIn, pageErrors } = useBrowserCluster();

const alice = `alice-${tag}`;
const bob = `bob-${tag}`;

const byId = (page: Page, msgId: string) => page.locator(`[data-testid="message"][data-msgid="${msgId}"]`);
const withReceipt = (page: Page, msgId: string, state: string) => page.locator(`[data-testid="message"][data-msgid="${msgId}"][data-receipt="${state}"]`);

/** Where the focus is: the element's test id (or text) and the msgid of the message row holding it. */
const focus = (page: Page) =>
  page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    return {
      testid: el?.getAttribute("data-testid") ?? el?.tagName.toLowerCase() ?? null,
      text: el?.getAttribute("role") === "menuitem" ? el.textContent : null,
      row: (el?.closest('[data-testid="message"]') as HTMLElement | null)?.dataset.msgid ?? null,
    };
  });

async function register(base: string, username: string) {
  const res = await fetch(`${base}/api/register`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: TEST_PASSWORD }) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

let a: Page;
let b: TestClient;
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
  const { cluster } = await env();
  const [ws1, ws2] = cluster.wsUrls as [string, string];
  b = await TestClient.connect(ws2, bob, await register(ws2, bob));
  a = await signIn(ws1, alice, true);
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
