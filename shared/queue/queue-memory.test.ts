import { createMemoryQueue } from "./queue-memory.ts";
import { queueContract } from "./queue.contract.ts";

queueContract("memory", async () => {
  const queue = createMemoryQueue();
  return { queue, another: async () => queue, cleanup: () => queue.close() };
});
