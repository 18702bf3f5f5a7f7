// A gateway process for scripts/conns-heap.ts: services/ws/index.ts unchanged, plus a SIGUSR2
// handler that collects garbage fully and prints the JS heap (bun:jsc heapStats) as one line.
// Measurement only: nothing in the services imports this file.
import { heapStats } from "bun:jsc";

process.on("SIGUSR2", () => {
  Bun.gc(true);
  Bun.gc(true);
  const s = heapStats();
  const mi = (s as { mimalloc?: unknown }).mimalloc as { malloc_normal: { current: number }; malloc_huge: { current: number } } | undefined;
  const malloc = mi ? mi.malloc_normal.current + mi.malloc_huge.current : 0;
  console.log(`HEAP ${JSON.stringify({ heapSize: s.heapSize, heapCapacity: s.heapCapacity, malloc, objectCount: s.objectCount, objectTypeCounts: s.objectTypeCounts, rss: process.memoryUsage().rss })}`);
});
await import("../../services/ws/index.ts");
