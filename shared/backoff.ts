/**
 * The one reconnect policy: capped exponential backoff with full jitter.
 * delay(n) is uniform in [base/2, min(cap, base * 2^n)] so a fleet does not reconnect in lockstep.
 */
export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
}

export function backoffDelay(attempt: number, { baseMs = 100, capMs = 5000 }: BackoffOptions = {}): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  const floor = Math.min(baseMs / 2, ceiling);
  return floor + Math.random() * (ceiling - floor);
}

/**
 * Runs `attempt` until it resolves, sleeping backoffDelay between failures; stops (rejecting) when
 * `signal` aborts. `onError` sees every failure (for logging and health).
 */
export async function retryForever<T>(
  attempt: () => Promise<T>,
  opts: BackoffOptions & { signal?: AbortSignal; onError?: (err: unknown, attempt: number) => void } = {},
): Promise<T> {
  for (let n = 0; ; n++) {
    opts.signal?.throwIfAborted();
    try {
      return await attempt();
    } catch (err) {
      opts.onError?.(err, n);
      await sleep(backoffDelay(n, opts), opts.signal);
    }
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
