import { Hono } from "hono";
import type { Metrics } from "../../shared/metrics.ts";

export interface PersistAppDeps {
  /** True while the queue consumer is connected. */
  queueReady: () => boolean;
  /** True when the database answers. */
  dbReady: () => Promise<boolean>;
  metrics: Metrics;
}

export function createPersistApp({ queueReady, dbReady, metrics }: PersistAppDeps) {
  const app = new Hono();
  app.get("/health", async (c) => {
    const queue = queueReady();
    const database = await dbReady();
    const ok = queue && database;
    return c.json({ ok, queue, database }, ok ? 200 : 503);
  });
  app.get("/metrics", () => metrics.render());
  app.notFound((c) => c.json({ error: "not_found" }, 404));
  return app;
}
