import { afterAll } from "bun:test";
import { existsSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import { startCluster, type Cluster } from "../scripts/cluster.ts";
import { DEFAULT_CHROMIUM } from "./env.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM;

/**
 * For a browser test file: Chromium and a cluster (discover, two ws instances, persist over Redis,
 * RabbitMQ and PostgreSQL), started once on first use and stopped after the file. A missing or
 * broken Chromium fails every test, loudly.
 */
export function useBrowserCluster(): () => Promise<{ browser: Browser; cluster: Cluster }> {
  let setup: Promise<{ browser: Browser; cluster: Cluster }> | null = null;
  afterAll(async () => {
    const s = await setup?.catch(() => null);
    await s?.browser.close();
    await s?.cluster.stop();
  }, 30_000);
  return () =>
    (setup ??= (async () => {
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
        return { browser, cluster: await startCluster({ ws: 2 }) };
      } catch (err) {
        await browser.close();
        throw err;
      }
    })());
}

/** Serious and critical accessibility violations on the page as it is now (axe-core, run in the page; its context needs `bypassCSP: true`). */
export async function axeViolations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const found = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(ctx: Document): Promise<{ violations: Array<{ id: string; impact: string; nodes: Array<{ target: unknown[] }> }> }> } }).axe.run(document);
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, targets: v.nodes.slice(0, 3).map((n) => String(n.target)) }));
  });
  return found.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}) at ${v.targets.join(", ")}`);
}
