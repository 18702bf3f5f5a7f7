import type { Db } from "../db/index.ts";
import type { ChatMessage, EventFrame, MessageFrame } from "../protocol.ts";
import { messageFrame } from "../protocol.ts";
import { deleteKind, editKind } from "./edits.ts";
import type { EventKind } from "./kind.ts";
import { deliveredKind, readKind } from "./receipts.ts";
import { memberKind } from "./members.ts";

/**
 * Every stream event kind: the one place a kind is registered. Adding a kind is adding its
 * EventKind here; the send path, live delivery, sync, storage and history serve it unchanged.
 */
const KINDS: EventKind[] = [editKind, deleteKind, readKind, deliveredKind, memberKind];

export const EVENT_KINDS: ReadonlyMap<string, EventKind> = new Map(KINDS.map((k) => [k.kind, k]));

/** The kind registered as `kind`, or undefined (a record from a newer version). */
export const kindOf = (kind: string): EventKind | undefined => EVENT_KINDS.get(kind);

/** Stream entry kinds shown by history: messages, and the event kinds that ask for it. */
export const HISTORY_KINDS: readonly string[] = ["message", ...KINDS.filter((k) => k.inHistory).map((k) => k.kind)];

/**
 * An event's id, derived from (sender, kind, key) so that a retry of the same event (same key)
 * maps to the same record anywhere and is stored and delivered once. For a client's event the key
 * includes the client's id; a server event picks a key that names the event exactly.
 */
export function deriveEventId(from: string, kind: string, key: string): string {
  const h = new Bun.CryptoHasher("sha256");
  h.update(from);
  h.update("\nevent:");
  h.update(kind);
  h.update("\n");
  h.update(key);
  return h.digest("base64url").slice(0, 22);
}

/** What a server-originated event needs; see `newEvent`. */
export interface NewEvent {
  kind: string;
  from: string;
  /** Names the event for idempotency (retrying with the same key is the same event). */
  key: string;
  to?: string;
  group?: string;
  ref?: string;
  body?: string;
  data?: Record<string, unknown>;
  ts?: number;
}

/** The queued record of a new event (its `id` is its msgId: no client id is involved). */
export function newEvent(e: NewEvent): ChatMessage {
  const msgId = deriveEventId(e.from, e.kind, e.key);
  const m: ChatMessage = { msgId, id: msgId, from: e.from, body: e.body ?? "", ts: e.ts ?? Date.now(), kind: e.kind };
  if (e.to !== undefined) m.to = e.to;
  if (e.group !== undefined) m.group = e.group;
  if (e.ref !== undefined) m.ref = e.ref;
  if (e.data !== undefined) m.data = e.data;
  return m;
}

/** An event frame; `cursor` is always the last key. A kind this version does not know shows its body and data. */
export function eventFrame(e: ChatMessage, cursor: string): EventFrame {
  const k = kindOf(e.kind!);
  const head: Record<string, unknown> = { type: "event", kind: e.kind!, msgId: e.msgId, from: e.from };
  if (e.group !== undefined) head.group = e.group;
  else if (e.to !== undefined) head.to = e.to;
  head.ts = e.ts;
  if (e.ref !== undefined) head.ref = e.ref;
  const extra = k ? k.frame(e) : { ...(e.body ? { body: e.body } : {}), ...(e.data ? { data: e.data } : {}) };
  return { ...head, ...extra, cursor } as EventFrame;
}

/** The frame of a stream record: a message frame, or an event frame. */
export const streamFrame = (m: ChatMessage, cursor: string): MessageFrame | EventFrame => (m.kind === undefined ? messageFrame(m, cursor) : eventFrame(m, cursor));

/** Persist: runs each kind's hook with the batch's events of that kind, in registry order. */
export async function persistEvents(tx: Db, batch: ChatMessage[]): Promise<void> {
  for (const k of KINDS) {
    if (!k.persist) continue;
    const events = batch.filter((m) => m.kind === k.kind);
    if (events.length > 0) await k.persist(tx, events);
  }
}

/** Whether writing `batch` runs any kind's persist hook (then it is written in a transaction). */
export const hasPersistHooks = (batch: ChatMessage[]) => batch.some((m) => m.kind !== undefined && kindOf(m.kind)?.persist !== undefined);
