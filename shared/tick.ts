/**
 * Coalesces calls into one `flush` call (one HTTP request, one broker message, one statement).
 * Items added during one event-loop turn go out together at setImmediate, or at once when
 * `maxItems` are waiting. With `maxInFlight`, at most that many flushes run at once; items added
 * meanwhile accumulate and go out together when one finishes — bigger batches exactly when the
 * far side is busy, no added delay when it is idle.
 * `flush` returns one result per item, in order; if it throws, every item's promise rejects.
 */
export function createTickBatcher<T, R>(flush: (items: T[]) => Promise<R[]>, opts: { maxItems?: number; maxInFlight?: number } = {}) {
  const maxItems = opts.maxItems ?? 1000;
  const maxInFlight = opts.maxInFlight ?? Infinity;
  let items: T[] = [];
  let waiters: Array<{ resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  let scheduled = false;
  let inFlight = 0;

  const run = () => {
    scheduled = false;
    while (items.length > 0 && inFlight < maxInFlight) {
      const batch = items.slice(0, maxItems);
      const w = waiters.slice(0, maxItems);
      items = items.slice(batch.length);
      waiters = waiters.slice(w.length);
      inFlight++;
      flush(batch)
        .then(
          (results) => w.forEach((x, i) => x.resolve(results[i]!)),
          (err) => w.forEach((x) => x.reject(err)),
        )
        .finally(() => {
          inFlight--;
          if (items.length > 0) schedule();
        });
    }
  };
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(run);
    }
  };

  return {
    add(item: T): Promise<R> {
      return new Promise<R>((resolve, reject) => {
        items.push(item);
        waiters.push({ resolve, reject });
        if (items.length >= maxItems && inFlight < maxInFlight) run();
        else schedule();
      });
    },
  };
}
