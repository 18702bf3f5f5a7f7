/**
 * Coalesces calls made during one event-loop turn into one `flush` call (one HTTP request, one
 * broker message, one statement), flushed at setImmediate or once `maxItems` are waiting.
 * `flush` returns one result per item, in order; if it throws, every item's promise rejects.
 */
export function createTickBatcher<T, R>(flush: (items: T[]) => Promise<R[]>, maxItems = 1000) {
  let items: T[] = [];
  let waiters: Array<{ resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  let scheduled = false;

  const run = () => {
    scheduled = false;
    if (items.length === 0) return;
    const batch = items;
    const w = waiters;
    items = [];
    waiters = [];
    flush(batch).then(
      (results) => w.forEach((x, i) => x.resolve(results[i]!)),
      (err) => w.forEach((x) => x.reject(err)),
    );
  };

  return {
    add(item: T): Promise<R> {
      return new Promise<R>((resolve, reject) => {
        items.push(item);
        waiters.push({ resolve, reject });
        if (items.length >= maxItems) run();
        else if (!scheduled) {
          scheduled = true;
          setImmediate(run);
        }
      });
    },
  };
}
