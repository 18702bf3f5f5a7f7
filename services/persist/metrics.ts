import type { Metrics } from "../../shared/metrics.ts";

/** The persist service's instruments, registered on the process registry. */
export function createPersistMetrics(m: Metrics) {
  return {
    rowsInserted: m.counter("persist_rows_inserted_total", "Messages written to the messages table (new rows only)"),
    batches: m.counter("persist_batches_total", "Batches committed"),
    batchSize: m.histogram("persist_batch_size", "Messages per committed batch", [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]),
    insertSeconds: m.histogram("persist_insert_seconds", "Time of one successful batch INSERT", [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    deadLettered: m.counter("persist_dead_lettered_total", "Invalid queue messages dead-lettered"),
    dbErrors: m.counter("persist_db_errors_total", "Failed batch INSERTs (each is retried)"),
    dbStalls: m.counter("persist_db_stalls_total", "Batch INSERTs abandoned after stallMs, with the connections reset"),
    floorRounds: m.counter("persist_floor_rounds_total", "Rounds of the allocator's floors (per up to 2,000 users): ok, or failed (allocator or database away; retried)", ["result"]),
    floorsMoved: m.counter("persist_floors_moved_total", "Users whose allocator floor this process moved"),
    floorsWaiting: m.gauge("persist_floor_users_waiting", "Users written by this process whose floor is not moved yet (after the last round)"),
  };
}
export type PersistMetrics = ReturnType<typeof createPersistMetrics>;
