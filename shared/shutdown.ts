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

/** Error codes of a lost connection: PostgreSQL's classes 08 and 57, and the drivers' own. */
const CONNECTION_LOST = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "CONNECTION_CLOSED", "CONNECTION_DESTROYED", "CONNECTION_ENDED", "CONNECT_TIMEOUT"]);

function isConnectionLoss(reason: unknown): boolean {
  const code = (reason as { code?: unknown } | null)?.code;
  return typeof code === "string" && (CONNECTION_LOST.has(code) || /^(08|57)[0-9A-Z]{3}$/.test(code));
}

/**
 * A rejection nobody handles ends a Bun process. postgres.js lets one escape when a backend is
 * terminated under a transaction (57P01 or ECONNRESET with no caller attached; seen under
 * pg_terminate_backend storms): the query that matters has already failed to its caller, which
 * retries. Such a connection loss is logged and survived; any other unhandled rejection is a bug
 * and still ends the process (exit 1), as it would without this handler.
 */
export function surviveStrayConnectionErrors(log: Logger) {
  process.on("unhandledRejection", (reason) => {
    if (isConnectionLoss(reason)) {
      log.warn("a lost connection's error escaped its driver; continuing", { err: reason });
      return;
    }
    log.error("unhandled rejection", { err: reason });
    process.exit(1);
  });
}
