import { allocatorContract } from "./allocator.contract.ts";
import { createMemoryAllocator } from "./allocator-memory.ts";

allocatorContract("memory", async ({ window }) => {
  const allocator = createMemoryAllocator({ window });
  return { allocator, wipe: async () => allocator.wipe(), cleanup: async () => {} };
});
