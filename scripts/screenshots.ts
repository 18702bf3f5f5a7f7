// Takes the browser client's screenshots in docs/screenshots/ against `bun run dev` (embedded
// backends, a fresh data directory): the conversation list, a conversation, a group with membership
// notices, the phone layout, and one chat showing receipts, typing and an edited message at once.
// Usage: bun run scripts/screenshots.ts [outDir]
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import { DEFAULT_CHROMIUM } from "../test/env.ts";
import { spawnService, stopService } from "./cluster.ts";

const out = process.argv[2] ?? new URL("../docs/screenshots/", import.meta.url).pathname;
mkdirSync(out, { recursive: true });
const dataDir = mkdtempSync(join(tmpdir(), "chat-screenshots-"));
const dev = await spawnService("dev", "services/dev/index.ts", { DATA_DIR: dataDir, REDIS_URL: "", AMQP_URL: "", DATABASE_URL: "", JWT_SECRET: "", INTERNAL_SECRET: "", LOG_LEVEL: "warn" }, 0, 30_000);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"] });

try {
  const desktop = { width: 1200, height: 760 };
  async function signUp(name: string, viewport = desktop): Promise<Page> {
    const page = await (await browser.newContext({ viewport, colorScheme: "light" })).newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`${dev.url}/client`);
    await page.getByTestId("auth-username").fill(name);
    await page.getByTestId("auth-password").fill("correct horse battery");
    await page.getByTestId("auth-register").click();
    await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
    return page;
  }
  const conv = (p: Page, key: string) => p.locator(`[data-testid="conv-item"][data-conv="${key}"]`);
  async function send(p: Page, text: string) {
    await p.getByTestId("composer-input").fill(text);
    await p.getByTestId("composer-send").click();
    await p.locator('[data-testid="message"][data-status="sent"]').filter({ hasText: text }).waitFor();
  }
  async function chat(p: Page, peer: string) {
    await p.getByTestId("new-chat-input").fill(peer);
    await p.getByTestId("new-chat-button").click();
    await conv(p, `d:${peer}`).waitFor({ state: "attached" });
  }

  const alice = await signUp("alice");
  const bob = await signUp("bob");
  const carol = await signUp("carol");
  const dave = await signUp("dave");

  // A group: made by alice with bob and carol; dave is added, carol leaves, alice hands on the role by leaving.
  await alice.getByTestId("new-group-toggle").click();
  await alice.getByTestId("new-group-name").fill("Launch crew");
  await alice.getByTestId("new-group-members").fill("bob, carol");
  await alice.getByTestId("new-group-button").click();
  const active = alice.locator('[data-testid="conv-item"][data-conv^="g:"].active');
  await active.waitFor();
  const group = (await active.getAttribute("data-conv"))!;
  await send(alice, "Welcome to the crew! Launch is on Friday.");
  await conv(bob, group).click();
  await send(bob, "Great, I'll bring the checklist.");
  await conv(carol, group).click();
  await send(carol, "Count me in.");
  await alice.getByTestId("members-toggle").click();
  await alice.getByTestId("add-member-input").fill("dave");
  await alice.getByTestId("add-member-button").click();
  await alice.locator('[data-testid="members-list"] li[data-user="dave"]').waitFor();
  await alice.getByTestId("members-toggle").click();
  await conv(dave, group).click();
  await dave.locator('[data-testid="message"]').filter({ hasText: "Count me in." }).waitFor();
  await send(dave, "Thanks for adding me, I can see the plan above.");
  await carol.getByTestId("members-toggle").click();
  await carol.getByTestId("leave-group").click();
  await carol.getByTestId("leave-group").click();
  await conv(carol, group).waitFor({ state: "detached" });
  await alice.getByTestId("members-toggle").click();
  await alice.getByTestId("leave-group").click();
  await alice.getByTestId("leave-group").click();
  await conv(alice, group).waitFor({ state: "detached" });
  await bob.getByTestId("members-toggle").click();
  await bob.locator('[data-testid="members-list"] li[data-user="bob"] [data-testid="member-role"]').filter({ hasText: "owner" }).waitFor();
  await bob.getByTestId("members-toggle").click();
  await send(bob, "I'm the owner now; Dave, welcome aboard.");

  // Direct chats for the list.
  await chat(bob, "alice");
  await send(bob, "Did you see the launch plan? https://example.com/plan");
  await conv(alice, "d:bob").click();
  await send(alice, "Yes, looks good. Let's meet at 10.");
  await conv(bob, "d:alice").click();
  await send(bob, "Perfect. I'll book the small room.");
  await send(bob, "Should we invite Dave's team too?\nThey handle the release notes.");
  await send(alice, "Good idea, I added Dave to the crew already.");
  await bob.locator('[data-testid="message"]').filter({ hasText: "I added Dave" }).waitFor();
  await chat(dave, "bob");
  await send(dave, "Quick question about Friday.");

  await conv(bob, group).click();
  await bob.locator('[data-testid="notice"][data-action="role"]').waitFor();
  await bob.waitForTimeout(300); // the render is coalesced per animation frame
  await bob.screenshot({ path: join(out, "group.png") });
  await conv(bob, "d:alice").click();
  await bob.waitForTimeout(300);
  await bob.screenshot({ path: join(out, "conversation.png") });

  // Dave on a phone: his list, then the group with its notices.
  const phone = await (await browser.newContext({ viewport: { width: 390, height: 780 }, colorScheme: "light" })).newPage();
  await phone.goto(`${dev.url}/client`);
  await phone.getByTestId("auth-username").fill("dave");
  await phone.getByTestId("auth-password").fill("correct horse battery");
  await phone.getByTestId("auth-login").click();
  await phone.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  await conv(phone, group).waitFor();
  await conv(phone, "d:bob").locator('[data-testid="presence-dot"][data-online="true"]').waitFor();
  await phone.waitForTimeout(300);
  await phone.screenshot({ path: join(out, "phone-list.png") });
  await conv(phone, group).click();
  await phone.locator('[data-testid="notice"]').first().waitFor();
  await phone.waitForTimeout(300);
  await phone.screenshot({ path: join(out, "phone-conversation.png") });
  await bob.goto(`${dev.url}/client/`);
  await bob.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
  await conv(bob, group).waitFor();
  await bob.waitForTimeout(300);
  await bob.screenshot({ path: join(out, "list.png") });

  // Receipts, typing and an edit at once, in alice's view of her chat with bob; every state comes
  // from the server's frames. Bob has the chat open, so alice's next message is read.
  await conv(bob, "d:alice").click();
  await conv(alice, "d:bob").click();
  const mine = (text: string) => alice.locator('[data-testid="message"]').filter({ hasText: text });
  await send(bob, "The room is booked: 3rd floor, room B.");
  await send(alice, "Thanks! Let's start at 10.");
  await send(bob, "Checklist for Friday:\n1. Demo build on the laptop\n2. Release notes printed\n3. Slides in the shared folder");
  await send(alice, "Agenda: demo first, then the release notes.");
  await mine("Agenda: demo first").and(alice.locator('[data-receipt="read"]')).waitFor();
  // Alice corrects the time from the message's menu.
  await mine("Let's start at 10.").getByTestId("message-menu-button").click();
  await alice.getByTestId("message-edit").click();
  await alice.getByTestId("message-edit-input").fill("Thanks! Let's start at 10:30, after the stand-up.");
  await alice.getByTestId("message-edit-save").click();
  await mine("after the stand-up").and(alice.locator('[data-edited="true"]')).getByTestId("message-edited").waitFor();
  await bob.locator('[data-testid="message"][data-edited="true"]').filter({ hasText: "after the stand-up" }).waitFor();
  // Bob (in a shorter window) scrolls up to the plan, so what alice sends now reaches him but is not read yet.
  await bob.setViewportSize({ width: 1200, height: 520 });
  await bob.getByTestId("message-list").hover();
  await bob.mouse.wheel(0, -2000);
  await bob.waitForFunction(() => {
    const s = document.getElementById("message-scroll")!;
    return s.scrollHeight - s.scrollTop - s.clientHeight > 160; // twice the client's "near the bottom"
  });
  await send(alice, "I'll print the agenda for everyone.");
  await mine("print the agenda").and(alice.locator('[data-receipt="delivered"]')).waitFor();
  // Then he starts his answer: his typing frame shows on alice's screen, taken while it lasts (5 s).
  await bob.getByTestId("composer-input").pressSequentially("Great, I'll bring", { delay: 40 });
  await alice.getByTestId("typing").filter({ hasText: "bob is typing…" }).waitFor();
  for (const [text, state] of [["Agenda: demo first", "read"], ["print the agenda", "delivered"]] as const)
    if ((await mine(text).getAttribute("data-receipt")) !== state) throw new Error(`"${text}" is no longer shown ${state}`);
  await alice.screenshot({ path: join(out, "chat-features.png") });
  // His frames (the last one held back by the 3 s throttle) each last 5 s: still shown now means shown in the screenshot.
  if (await alice.getByTestId("typing").isHidden()) throw new Error("bob's typing frame expired before the screenshot; run again");
  console.log(`screenshots in ${out}`);
} finally {
  await browser.close();
  await stopService(dev);
  rmSync(dataDir, { recursive: true, force: true });
}
