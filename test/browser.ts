import { afterAll } from "bun:test";
import { existsSync } from "node:fs";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { startCluster, type Cluster } from "../scripts/cluster.ts";
import { DEFAULT_CHROMIUM } from "./env.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM;
/** The password browser tests register their users with. */
export const TEST_PASSWORD = "correct horse battery";

/**
 * Chromium and a cluster (two ws instances) for a browser test file, started once on first use
 * and stopped after the file (`opts.env`: extra environment for the services); a missing or broken
 * Chromium fails every test, loudly. `pageErrors`
 * collects every page's uncaught errors and Content-Security-Policy refusals.
 */
export function useBrowserCluster(opts: { env?: Record<string, string> } = {}) {
  let setup: Promise<{ browser: Browser; cluster: Cluster }> | null = null;
  const pageErrors: string[] = [];
  function env() {
    setup ??= (async () => {
      if (!existsSync(CHROMIUM)) {
        throw new Error(`browser test: no Chromium at ${CHROMIUM}. Install it (apt-get install chromium) or set CHROMIUM_PATH.`);
      }
      let browser: Browser;
      try {
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          headless: true,
          args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        });
      } catch (err) {
        throw new Error(`browser test: Chromium at ${CHROMIUM} failed to launch: ${(err as Error).message}`);
      }
      try {
        return { browser, cluster: await startCluster({ ws: 2, env: opts.env }) };
      } catch (err) {
        await browser.close();
        throw err;
      }
    })();
    return setup;
  }

  afterAll(async () => {
    const s = await setup?.catch(() => null);
    await s?.browser.close();
    await s?.cluster.stop();
  }, 30_000);

  /** A tab on `base`/client, in `ctx` (a browser profile: its localStorage survives the tab) or a new one. */
  async function openClient(base: string, ctx?: BrowserContext): Promise<Page> {
    const { browser } = await env();
    ctx ??= await browser.newContext({ viewport: { width: 1200, height: 760 } });
    const page = await ctx.newPage();
    page.setDefaultTimeout(10_000);
    page.on("pageerror", (e) => pageErrors.push(`${base}: ${e.message}`));
    // The Content-Security-Policy must not block anything the client does.
    page.on("console", (m) => m.type() === "error" && /Content Security Policy/i.test(m.text()) && pageErrors.push(`${base}: ${m.text()}`));
    await page.goto(`${base}/client`);
    return page;
  }

  /** A tab signed in as `name` (registered first when `register`), once its socket is open; `password` defaults to the tests' one. */
  async function signIn(base: string, name: string, register: boolean, ctx?: BrowserContext, password = TEST_PASSWORD): Promise<Page> {
    const page = await openClient(base, ctx);
    await page.getByTestId("auth-username").fill(name);
    await page.getByTestId("auth-password").fill(password);
    await page.getByTestId(register ? "auth-register" : "auth-login").click();
    await page.locator('[data-testid="conn-status"][data-state="open"]').waitFor();
    return page;
  }

  return { env, openClient, signIn, pageErrors };
}

/** Sends `text` from the open conversation's composer; resolves with its msgId once it shows as sent. */
export async function sendFromComposer(page: Page, text: string): Promise<string> {
  await page.getByTestId("composer-input").fill(text);
  await page.getByTestId("composer-send").click();
  const sent = page.locator('[data-testid="message"][data-status="sent"]').filter({ hasText: text });
  await sent.waitFor();
  return (await sent.getAttribute("data-msgid"))!;
}

/** Serious and critical accessibility violations on the page as it is now (axe-core, run in the page). */
export async function axeViolations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const found = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(ctx: Document): Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: unknown[] }> }> }> } }).axe.run(document);
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.slice(0, 3).map((n) => String(n.target)) }));
  });
  return found.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}) at ${v.targets.join(", ")}`);
}
