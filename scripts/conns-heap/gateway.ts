// A gateway process for scripts/conns-heap.ts: services/ws/index.ts unchanged, plus a SIGUSR2
// handler that collects garbage fully and prints the JS heap (bun:jsc heapStats) as one line, and
// with HEAP_SNAPSHOT_DIR set writes a heap snapshot (Bun.generateHeapSnapshot) into that folder.
// Measurement only: nothing in the services imports this file.
import { heapStats } from "bun:jsc";
import { writeFileSync } from "node:fs";

process.on("SIGUSR2", () => {
  Bun.gc(true);
  Bun.gc(true);
  const s = heapStats();
  type Bin = { current: number; block_size: number };
  const mi = (s as { mimalloc?: unknown }).mimalloc as { malloc_normal: { current: number }; malloc_huge: { current: number }; malloc_bins?: Bin[] } | undefined;
  const malloc = mi ? mi.malloc_normal.current + mi.malloc_huge.current : 0;
  // bytes in use per mimalloc size class (block size → bytes)
  const bins = Object.fromEntries((mi?.malloc_bins ?? []).filter((b) => b.current > 0).map((b) => [b.block_size, b.current * b.block_size]));
  // written before the HEAP line, so the script never stops this process mid-write
  if (process.env.HEAP_SNAPSHOT_DIR) writeFileSync(`${process.env.HEAP_SNAPSHOT_DIR}/heap-${Date.now()}.json`, JSON.stringify(Bun.generateHeapSnapshot()));
  console.log(`HEAP ${JSON.stringify({ heapSize: s.heapSize, heapCapacity: s.heapCapacity, malloc, bins, objectCount: s.objectCount, objectTypeCounts: s.objectTypeCounts, rss: process.memoryUsage().rss })}`);
});
await import("../../services/ws/index.ts");
