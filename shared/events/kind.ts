import type { Db } from "../db/index.ts";
import type { ChatMessage } from "../protocol.ts";

/**
 * What an event kind may consult when it is accepted (on the gateway, before it is published).
 */
export interface EventContext {
  db: Db;
  /** Members of each group now (empty array for an unknown group). */
  groupMembers(groupIds: string[]): Promise<Map<string, string[]>>;
  /** Resolves once storage holds every entry of `user`'s stream allocated before the call (read-your-writes). */
  awaitWritten(user: string): Promise<void>;
  /** How long after a message its sender may edit or delete it (EDIT_WINDOW_SEC). */
  editWindowMs: number;
  now(): number;
}

/**
 * One kind of stream event (docs/delivery.md, "Stream events"). An event is a record of the same
 * queue, positions, live delivery, sync and storage as a message; its kind decides only these:
 */
export interface EventKind {
  /** The `kind` of its records and of its `event` frames. */
  readonly kind: string;
  /**
   * Validates the event against storage and returns every user whose stream it enters (the
   * sender included). May fill in `to`/`group` (the conversation). Throws a SendError to refuse
   * it (its code and text go to the client). Runs on the gateway before the event is published.
   */
  accept(e: ChatMessage, ctx: EventContext): Promise<string[]>;
  /** The frame's fields besides type, kind, msgId, from, to|group, ts, ref and cursor. */
  frame(e: ChatMessage): Record<string, unknown>;
  /** Whether its entries also appear in history (`GET /api/messages`), as event frames. */
  readonly inHistory: boolean;
  /**
   * Persist: runs in the same transaction as the insert of a batch holding events of this kind,
   * after it, with those events (oldest first). Must be idempotent (a batch may be written again)
   * and must not depend on the order batches are written in (several persists write at once).
   */
  persist?(tx: Db, events: ChatMessage[]): Promise<void>;
}
