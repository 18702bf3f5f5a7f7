import type { Logger } from "./log.ts";

/**
 * SIGTERM/SIGINT: run `stop` once (stop accepting, finish or hand back what is held, close), then
 * exit 0; if it takes longer than `graceMs` (the contract allows 10 s), exit 1 anyway.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>, graceMs = 9000) {
  let started = false;
  const run = (signal: string) => {
    if (started) return;
    started = true;
    log.info("shutting down", { signal });
    const force = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      process.exit(1);
    }, graceMs);
    stop().then(
      () => {
        clearTimeout(force);
        process.exit(0);
      },
      (err) => {
        log.error("shutdown failed", { err });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => run("SIGTERM"));
  process.on("SIGINT", () => run("SIGINT"));
}
