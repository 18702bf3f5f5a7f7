import { QueueUnavailable } from "./queue.ts";

/**
 * Barrier coalescing shared by every queue implementation. At most one marker is outstanding;
 * calls that start while it is outstanding wait together for the next marker, which is sent once
 * the outstanding one is answered, failed, or abandoned because all its callers timed out.
 * `send` publishes a marker and calls `finish` when the consumer answers it (or with an error);
 * it may return a function that forgets the marker when it is abandoned.
 */
export function createBarrierRounds(send: (finish: (err?: unknown) => void) => (() => void) | void) {
  interface Waiter {
    resolve(): void;
    reject(err: unknown): void;
    timer: ReturnType<typeof setTimeout>;
    round?: Round;
  }
  interface Round {
    waiters: Set<Waiter>;
    done: boolean;
    cancel?: () => void;
  }
  let outstanding: Round | undefined;
  let pending = new Set<Waiter>();

  const settle = (round: Round, err?: unknown) => {
    if (round.done) return;
    round.done = true;
    if (outstanding === round) outstanding = undefined;
    for (const w of round.waiters) {
      clearTimeout(w.timer);
      if (err === undefined) w.resolve();
      else w.reject(err instanceof QueueUnavailable ? err : new QueueUnavailable(`barrier failed: ${String(err)}`));
    }
    round.waiters.clear();
    next();
  };

  const next = () => {
    if (outstanding || pending.size === 0) return;
    const round: Round = { waiters: pending, done: false };
    pending = new Set();
    for (const w of round.waiters) w.round = round;
    outstanding = round;
    try {
      round.cancel = send((err) => settle(round, err)) ?? undefined;
    } catch (err) {
      settle(round, err);
    }
  };

  return {
    wait(timeoutMs: number): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        const w: Waiter = {
          resolve,
          reject,
          timer: setTimeout(() => {
            reject(new QueueUnavailable(`barrier timed out after ${timeoutMs} ms`));
            const round = w.round;
            if (!round) return void pending.delete(w);
            round.waiters.delete(w);
            if (round.waiters.size === 0 && !round.done) {
              round.done = true;
              round.cancel?.();
              if (outstanding === round) outstanding = undefined;
              next();
            }
          }, timeoutMs),
        };
        pending.add(w);
        next();
      });
    },
    /** Fails the outstanding marker (its reply can no longer arrive). */
    failOutstanding(err: unknown) {
      if (outstanding) settle(outstanding, err);
    },
    /** Fails every caller, outstanding and waiting. */
    failAll(err: unknown) {
      if (outstanding) settle(outstanding, err);
      const waiting = pending;
      pending = new Set();
      for (const w of waiting) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    },
  };
}
