import { z } from "zod";
import { SendError, UserId, type ChatMessage } from "../protocol.ts";
import type { EventKind } from "./kind.ts";

/**
 * Read and delivery receipts (issue 13, item 1; docs/api.md, "Receipts and the conversation list").
 * Server-originated only: the gateway emits them (services/ws/receipts.ts) after moving a marker
 * in `read_state`, with `ref` = the message the marker is now at and, in `data`, that message's
 * `ts` (`refTs`), the reader's cursor of it (`upTo`, reads only) and the recipients it computed
 * (the reader's own devices and the senders of the messages newly covered). Nothing to do in
 * persist: the marker was written before the event was emitted.
 */
const ReceiptData = z.object({
  refTs: z.number().int().nonnegative(),
  upTo: z.string().regex(/^[0-9]{1,16}\.[0-9]{1,16}$/).optional(),
  rcpt: z.array(UserId).min(1).max(100_000),
});

function receiptKind(kind: "read" | "delivered"): EventKind {
  return {
    kind,
    inHistory: false,
    async accept(e: ChatMessage) {
      const d = ReceiptData.safeParse(e.data);
      if (!d.success || e.ref === undefined || (e.to === undefined) === (e.group === undefined)) throw new SendError("bad_request", `malformed ${kind} receipt`);
      return [...new Set(d.data.rcpt)];
    },
    frame(e: ChatMessage) {
      const d = e.data as z.infer<typeof ReceiptData>;
      return kind === "read" ? { refTs: d.refTs, upTo: d.upTo } : { refTs: d.refTs };
    },
  };
}

export const readKind = receiptKind("read");
export const deliveredKind = receiptKind("delivered");
