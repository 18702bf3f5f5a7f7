import { z } from "zod";
import { ChatMessageSchema, describeIssues, isPlainQueuedMessage, type ChatMessage } from "../protocol.ts";

/** What a broker message's body must be: a non-empty array of messages, each with exactly one of to and group. */
export const BrokerBatch = z
  .array(ChatMessageSchema.refine((m) => (m.to === undefined) !== (m.group === undefined), "needs exactly one of to and group"))
  .min(1);

export type ParsedBatch = { ok: true; messages: ChatMessage[] } | { ok: false; reason: string };

/**
 * A broker message's body as messages, or why it is invalid (it is then dead-lettered). A batch
 * whose every message passes isPlainQueuedMessage (what gateways publish) is taken as parsed;
 * anything else goes through the schema, which gives the result and the errors.
 */
export function parseBrokerBody(text: string): ParsedBatch {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, reason: "body is not JSON" };
  }
  if (Array.isArray(raw) && raw.length > 0 && raw.every(isPlainQueuedMessage)) return { ok: true, messages: raw };
  return validateWithSchema(raw);
}

/** The schema alone (the reference the fast path is tested against). */
export function validateWithSchema(raw: unknown): ParsedBatch {
  const r = BrokerBatch.safeParse(raw);
  if (!r.success) return { ok: false, reason: describeIssues(r.error) };
  return { ok: true, messages: r.data as ChatMessage[] };
}
