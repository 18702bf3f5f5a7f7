import { sleep } from "../../shared/backoff.ts";
import type { Db } from "../../shared/db/index.ts";
import { committedWatermark, readInvolving } from "../../shared/db/messages.ts";
import type { Logger } from "../../shared/log.ts";
import { messageFrame } from "../../shared/protocol.ts";
import type { MessageQueue } from "../../shared/queue/queue.ts";
import type { Conn } from "./connections.ts";

const PAGE = 500;
const HIGH_WATER_BYTES = 1 << 20;

/**
 * Answers `sync`: every stored message involving the user with after < seq, oldest first, then
 * `synced`. Exact because (docs/delivery.md):
 * 1. the queue barrier makes every message acked before the sync committed before we read;
 * 2. committed rows form a prefix of seq, so the watermark read after the barrier covers them all
 *    and nothing at or below it can appear later;
 * 3. messages acked after the barrier are routed after this connection was registered, so they
 *    arrive live; live frames held during the answer are sent after `synced`, with its cursor.
 */
export function createSync(opts: { db: Db; queue: MessageQueue; log: Logger; barrierTimeoutMs?: number }) {
  return async function sync(ws: Conn, after: number): Promise<void> {
    const held: Array<{ msgId: string; head: string }> = [];
    ws.data.held = held;
    const sent = new Set<string>();
    try {
      await opts.queue.barrier(opts.barrierTimeoutMs ?? 5000);
      const upTo = await committedWatermark(opts.db);
      let from = after;
      for (;;) {
        const page = await readInvolving(opts.db, ws.data.user, from, upTo, PAGE);
        for (const m of page) {
          ws.send(JSON.stringify(messageFrame(m, String(m.seq))));
          sent.add(m.msgId);
        }
        if (page.length < PAGE || !ws.data.open) break;
        from = page[page.length - 1]!.seq;
        while (ws.data.open && ws.getBufferedAmount() > HIGH_WATER_BYTES) await sleep(5);
      }
      ws.data.cursor = Math.max(ws.data.cursor, upTo, after);
      ws.send(JSON.stringify({ type: "synced", cursor: String(ws.data.cursor) }));
    } catch (err) {
      opts.log.warn("sync failed", { err, user: ws.data.user });
      ws.send(JSON.stringify({ type: "error", code: "unavailable", message: "history is unavailable right now; sync again" }));
    } finally {
      ws.data.held = null;
      for (const h of held) if (!sent.has(h.msgId)) ws.send(`${h.head}"${ws.data.cursor}"}`);
    }
  };
}
