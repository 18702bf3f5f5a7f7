import { retryForever } from "../../shared/backoff.ts";
import type { DbHandle } from "../../shared/db/index.ts";
import { conversationKey, insertBatch, type StreamEntry } from "../../shared/db/messages.ts";
import { hasPersistHooks, persistEvents } from "../../shared/events/registry.ts";
import type { Logger } from "../../shared/log.ts";
import type { ChatMessage } from "../../shared/protocol.ts";
import type { QueueConsumer, QueueDelivery } from "../../shared/queue/queue.ts";
import type { StreamAllocator } from "../../shared/stream/allocator.ts";
import type { PersistMetrics } from "./metrics.ts";

export interface Batcher extends QueueConsumer {
  /**
   * Shutdown: stops taking deliveries (they stay unacked, for another consumer),
   * commits and acks everything already held. Resolves true once done, or false when `timeoutMs`
   * passed first; then it stops retrying and what is left stays unacked.
   */
  drain(timeoutMs?: number): Promise<boolean>;
  /** False while a batch has been failing to be written for longer than `unhealthyAfterMs` (for /health). */
  healthy(): boolean;
}

export interface BatcherOptions {
  database: DbHandle;
  /** Gives each message its positions (the same ones the gateway was given, if it asked first). */
  allocator: StreamAllocator;
  /** A batch is written once it holds this many messages... */
  maxRows: number;
  /** ...or this long after its first delivery arrived. */
  maxWaitMs: number;
  log: Logger;
  metrics?: PersistMetrics;
  /**
   * An insert that has not settled after this long is abandoned: the database's connections are
   * reset (which fails it) and the batch is retried. Guards against a query the driver left
   * hanging on a lost connection; a real commit never takes this long. Default 15 s.
   */
  stallMs?: number;
  /** healthy() turns false once a batch has been failing this long. Default 5 s. */
  unhealthyAfterMs?: number;
  /**
   * Entries just committed (after their deliveries were acked): the floor keeper's
   * (services/persist/floors.ts), which lets written allocations leave the allocator's window.
   */
  onWritten?: (entries: StreamEntry[]) => void;
  /**
   * Batches written at once (default 2): while one batch's INSERT runs, the next is allocated and
   * inserted on another connection.
   * Batches are independent (positions were decided before; every write is idempotent), so they
   * may commit in any order, as with several persist processes.
   */
  concurrency?: number;
  /**
   * The consumer's prefetch: how many deliveries the broker lets this consumer hold unacked. Once
   * the batcher holds that many, no more can arrive before some are acked, so the current batch is
   * written at once instead of waiting out `maxWaitMs` (at low load a broker message carries one
   * or two chat messages, and waiting would cap persist at prefetch per maxWaitMs). Default: no cap.
   */
  prefetch?: number;
}

class InsertStalled extends Error {
  constructor(ms: number) {
    super(`batch insert did not settle within ${ms} ms`);
  }
}

interface Batch {
  deliveries: QueueDelivery[];
  rows: number;
  due: boolean;
}

const emptyBatch = (): Batch => ({ deliveries: [], rows: 0, due: false });
const isEmpty = (b: Batch) => b.deliveries.length === 0;

/**
 * The persist consumer: per batch one allocator call (positions are idempotent per message, so
 * these are the positions the gateway delivered live with) and one INSERT statement, up to
 * `concurrency` batches in flight; deliveries acked only after their batch committed; allocator
 * and database errors retried forever with the batch kept. Any number of batchers (processes) may
 * run at once.
 */
export function createBatcher({ database, allocator, maxRows, maxWaitMs, log, metrics, onWritten, stallMs = 15_000, unhealthyAfterMs = 5000, concurrency = 2, prefetch = Infinity }: BatcherOptions): Batcher {
  let current = emptyBatch();
  const sealed: Batch[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** Batches being written. */
  let writing = 0;
  /** Deliveries taken and not acked yet (in the current, sealed and writing batches). */
  let held = 0;
  let draining = false;
  /** When each batch that is failing first failed. */
  const failing = new Map<Batch, number>();
  const abort = new AbortController();
  const idleWaiters = new Set<() => void>();

  const idle = () => writing === 0 && sealed.length === 0 && isEmpty(current);

  const seal = () => {
    clearTimeout(timer);
    timer = undefined;
    if (!isEmpty(current)) sealed.push(current);
    current = emptyBatch();
  };

  /** Starts writing sealed batches (and a due current one) while fewer than `concurrency` are. */
  const pump = () => {
    while (writing < concurrency && !abort.signal.aborted) {
      if (sealed.length === 0 && current.due) seal();
      const batch = sealed.shift();
      if (!batch) return;
      writing++;
      void write(batch).finally(() => {
        writing--;
        pump();
        if (idle()) for (const w of idleWaiters) w();
      });
    }
  };

  const write = async (batch: Batch): Promise<void> => {
    const messages = uniqueById(batch.deliveries.flatMap((d) => d.messages));
    const positioned = messages.map((m) => ({ msgId: m.msgId, users: recipientsOf(m) }));
    // Events whose kind does more than insert (an edit updates its message) do it in the same transaction.
    const after = hasPersistHooks(messages) ? (tx: Parameters<typeof persistEvents>[0]) => persistEvents(tx, messages) : undefined;
    let entries: StreamEntry[] = [];
    if (messages.length > 0) {
      try {
        const inserted = await retryForever(
          async () => {
            entries = await streamEntries(allocator, messages, positioned);
            const t0 = performance.now();
            const n = await settleWithin(insertBatch(database.db, messages, entries, after), stallMs, async () => {
              log.error("batch insert stalled; resetting the database connections", { stallMs, rows: messages.length });
              metrics?.dbStalls.inc();
              await database.reset();
              return new InsertStalled(stallMs);
            });
            metrics?.insertSeconds.observe((performance.now() - t0) / 1000);
            return n;
          },
          {
            signal: abort.signal,
            onError: (err, attempt) => {
              if (!failing.has(batch)) failing.set(batch, Date.now());
              metrics?.dbErrors.inc();
              if (attempt === 0 || attempt % 10 === 0) log.warn("batch insert failed; retrying", { err, attempt, rows: messages.length });
            },
          },
        );
        metrics?.rowsInserted.inc(inserted);
        metrics?.batches.inc();
        metrics?.batchSize.observe(messages.length);
      } catch {
        return;
      } finally {
        failing.delete(batch);
      }
    }
    for (const d of batch.deliveries) d.ack();
    held -= batch.deliveries.length;
    // committed: these positions may count towards the allocator's floors (never before the commit)
    if (entries.length > 0) onWritten?.(entries);
  };

  return {
    onDelivery(delivery) {
      if (draining) return;
      current.deliveries.push(delivery);
      current.rows += delivery.messages.length;
      held++;
      // full, or nothing more can arrive until something is acked
      if (current.rows >= maxRows || held >= prefetch) {
        seal();
        pump();
      } else if (!timer && !current.due) {
        timer = setTimeout(() => {
          timer = undefined;
          current.due = true;
          pump();
        }, maxWaitMs);
      }
    },

    healthy: () => [...failing.values()].every((since) => Date.now() - since < unhealthyAfterMs),

    drain(timeoutMs = 8000) {
      draining = true;
      current.due = true;
      pump();
      if (idle()) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const finish = (ok: boolean) => {
          clearTimeout(t);
          idleWaiters.delete(onIdle);
          if (!ok) abort.abort();
          resolve(ok);
        };
        const onIdle = () => finish(true);
        const t = setTimeout(() => finish(false), timeoutMs);
        idleWaiters.add(onIdle);
      });
    },
  };
}

/**
 * The users whose streams a message enters. The gateway decided them (`rcpt`); a message queued by
 * the previous version has none, and then goes to its sender and direct recipient.
 */
export function recipientsOf(m: ChatMessage): string[] {
  if (m.rcpt && m.rcpt.length > 0) return m.rcpt;
  return m.to !== undefined && m.to !== m.from ? [m.from, m.to] : [m.from];
}

/** The stream entries of `messages`, at the positions the allocator gives `requests` (one per message). */
async function streamEntries(allocator: StreamAllocator, messages: ChatMessage[], requests: Array<{ msgId: string; users: string[] }>): Promise<StreamEntry[]> {
  const results = await allocator.allocate(requests);
  const entries: StreamEntry[] = [];
  messages.forEach((m, i) => {
    const conv = conversationKey(m);
    const kind = m.kind ?? "message";
    const positions = results[i]!.positions;
    for (const user in positions) entries.push({ user, position: positions[user]!, msgId: m.msgId, conv, kind });
  });
  return entries;
}

/**
 * One copy per message id. Copies of one message (a resend, a redelivery) may name different
 * users (a group resent after its membership changed): every one of them was given a position by
 * some gateway, so the copy kept carries the union.
 */
function uniqueById(messages: ChatMessage[]): ChatMessage[] {
  const byId = new Map<string, ChatMessage>();
  for (const m of messages) {
    const had = byId.get(m.msgId);
    if (!had) byId.set(m.msgId, m);
    else if (m.rcpt && had.rcpt) byId.set(m.msgId, { ...had, rcpt: [...new Set([...had.rcpt, ...m.rcpt])] });
    else if (m.rcpt) byId.set(m.msgId, { ...had, rcpt: m.rcpt });
  }
  return [...byId.values()];
}

/**
 * `p`, or, when it has not settled after `ms`, the error `onLate` produces. A late rejection of
 * `p` is then ignored; a late success is harmless, since the retried insert is idempotent.
 */
function settleWithin<T>(p: Promise<T>, ms: number, onLate: () => Promise<Error>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => void onLate().then(reject, reject), ms);
  });
  p.catch(() => {});
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
