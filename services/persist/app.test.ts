import { expect, test } from "bun:test";
import { createMetrics } from "../../shared/metrics.ts";
import { createPersistApp } from "./app.ts";
import { createPersistMetrics } from "./metrics.ts";

const appWith = (queue: boolean, database: boolean) => {
  const metrics = createMetrics("persist");
  const pm = createPersistMetrics(metrics);
  pm.rowsInserted.inc(7);
  return createPersistApp({ queueReady: () => queue, dbReady: async () => database, metrics });
};

test("/health is 200 only while both the queue and the database are connected", async () => {
  for (const [queue, database] of [[true, true], [true, false], [false, true], [false, false]] as const) {
    const res = await appWith(queue, database).request("/health");
    expect(res.status).toBe(queue && database ? 200 : 503);
    expect(await res.json()).toEqual({ ok: queue && database, queue, database });
  }
});

test("/metrics answers Prometheus text with the persist instruments", async () => {
  const res = await appWith(true, true).request("/metrics");
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const body = await res.text();
  expect(body).toMatch(/^persist_rows_inserted_total\{service="persist"\} 7$/m);
  for (const name of ["persist_batches_total", "persist_batch_size", "persist_insert_seconds", "persist_dead_lettered_total", "persist_db_errors_total"]) {
    expect(body).toContain(`# TYPE ${name}`);
  }
});

test("unknown paths are 404", async () => {
  expect((await appWith(true, true).request("/nope")).status).toBe(404);
});
