import { z } from "zod";

/** Wire protocol of `/ws` (CONTRACT.md section 3) and the internal message envelope. */

export const MAX_BODY_CHARS = 4096;
export const MAX_FRAME_BYTES = 64 * 1024;
export const MAX_CLIENT_ID_CHARS = 64;

export const USER_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;
export const UserId = z.string().regex(USER_ID_RE, "a user id is 1 to 64 characters of A-Z a-z 0-9 _ . -");
export const GroupId = z.string().regex(USER_ID_RE, "a group id is 1 to 64 characters of A-Z a-z 0-9 _ . -");
/**
 * Text that PostgreSQL can store: no U+0000 and no unpaired surrogate (a JSON escape can carry
 * either). Accepting one would ack a message whose batch insert then fails forever, blocking the queue.
 */
export const storableText = (s: string) => !s.includes("\u0000") && s.isWellFormed();
const STORABLE = "must be Unicode text without U+0000 or unpaired surrogates";
export const ClientMsgId = z.string().min(1).max(MAX_CLIENT_ID_CHARS).refine(storableText, STORABLE);
/**
 * A cursor is opaque to clients. Inside it is a position in the user's stream, `<epoch>.<pos>`
 * (docs/delivery.md), or, from clients of the previous version, a plain decimal commit sequence.
 * Each number is at most Number.MAX_SAFE_INTEGER, so every cursor the server answers it accepts back.
 */
const SAFE_INT = "(0|[1-9][0-9]{0,15})";
export const Cursor = z
  .string()
  .regex(new RegExp(`^${SAFE_INT}(\\.${SAFE_INT})?$`), "not a cursor")
  .refine((s) => s.split(".").every((n) => Number.isSafeInteger(Number(n))), "not a cursor");
export const Body = z.string().min(1).max(MAX_BODY_CHARS).refine(storableText, STORABLE);

const SendBase = { type: z.literal("send"), id: ClientMsgId, body: Body };
export const SendFrame = z.union([
  z.strictObject({ ...SendBase, to: UserId }),
  z.strictObject({ ...SendBase, group: GroupId }),
]);
export const SyncFrame = z.strictObject({ type: z.literal("sync"), after: Cursor.optional() });
export const PingFrame = z.strictObject({ type: z.literal("ping") });
/** Addition: replaces the set of users whose presence this connection is told about. */
export const MAX_WATCHED = 1000;
export const WatchFrame = z.strictObject({ type: z.literal("watch"), users: z.array(UserId).max(MAX_WATCHED) });

/** Addition: "I am typing in this conversation" (ephemeral: never stored, no position). */
export const TypingFrame = z.union(
  [z.strictObject({ type: z.literal("typing"), to: UserId }), z.strictObject({ type: z.literal("typing"), group: GroupId })],
  { error: "a typing frame names exactly one of to or group" },
);
/** What the other party's (or the group members') connections get; show it for `ttlMs` unless renewed. */
export const TypingEvent = z.union([
  z.strictObject({ type: z.literal("typing"), from: UserId, to: UserId, ttlMs: z.number().int().positive() }),
  z.strictObject({ type: z.literal("typing"), from: UserId, group: GroupId, ttlMs: z.number().int().positive() }),
]);
export type TypingFrame = z.infer<typeof TypingFrame>;
export type TypingEvent = z.infer<typeof TypingEvent>;

const MAX_MSG_ID_CHARS = 64;
/** A server message id (the `msgId` of a message frame). */
export const MsgId = z.string().min(1).max(MAX_MSG_ID_CHARS).refine(storableText, STORABLE);
/** Addition: edit one's own message (docs/api.md, "Edits and deletions"). */
export const EditFrame = z.strictObject({ type: z.literal("edit"), id: ClientMsgId, msgId: MsgId, body: Body });
/** Addition: delete one's own message. */
export const DeleteFrame = z.strictObject({ type: z.literal("delete"), id: ClientMsgId, msgId: MsgId });
/**
 * Addition: "I have read this conversation up to the message at `cursor`" (a cursor of my stream,
 * `<epoch>.<pos>`, of a message in that conversation). Markers only move forward.
 */
export const ReadFrame = z.union([
  z.strictObject({ type: z.literal("read"), to: UserId, cursor: Cursor.regex(/\./, "a cursor of the form <epoch>.<pos>") }),
  z.strictObject({ type: z.literal("read"), group: GroupId, cursor: Cursor.regex(/\./, "a cursor of the form <epoch>.<pos>") }),
]);

export const CLIENT_FRAME_TYPES = ["send", "sync", "ping", "watch", "typing", "edit", "delete", "read"] as const;
export type SendFrame = z.infer<typeof SendFrame>;
export type SyncFrame = z.infer<typeof SyncFrame>;
export type EditFrame = z.infer<typeof EditFrame>;
export type DeleteFrame = z.infer<typeof DeleteFrame>;
export type ReadFrame = z.infer<typeof ReadFrame>;
export type ClientFrame = SendFrame | SyncFrame | z.infer<typeof PingFrame> | z.infer<typeof WatchFrame> | TypingFrame | EditFrame | DeleteFrame | ReadFrame;

/**
 * Client-visible error codes: the one table of them. The contract's five, then additions:
 * `not_found` (an edit or delete names no message of yours that still exists), `too_old` (its
 * window has passed).
 */
export const ERROR_CODES = ["bad_request", "too_large", "forbidden", "rate_limited", "unavailable", "not_found", "too_old"] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** A send (or edit, delete, server event) refused: the code and text of the error frame. */
export class SendError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A record of a user's stream as stored, queued and forwarded: a chat message, or (with `kind`) a
 * stream event such as an edit or a deletion (shared/events/: what each kind means).
 */
export interface ChatMessage {
  msgId: string;
  id: string;
  from: string;
  to?: string;
  group?: string;
  /** A message's text; an event's text where its kind has one (an edit's new text), else "". */
  body: string;
  ts: number;
  /**
   * Queue only: every user whose stream the message enters (the sender, the recipient or the
   * group's members at the time of the send), decided once by the accepting gateway.
   */
  rcpt?: string[];
  /** Absent: a plain message. Otherwise the event's kind (shared/events/registry.ts). */
  kind?: string;
  /** The msgId the event is about, when it is about one message. */
  ref?: string;
  /** A kind's small typed payload (validated by its kind). */
  data?: Record<string, unknown>;
  /** Read from storage only: when the message was last edited / deleted (ms). */
  editedAt?: number;
  deletedAt?: number;
}

const EVENT_KIND_RE = /^[a-z][a-z0-9_-]{0,31}$/;
const MAX_RCPT = 100_000;
/** An event kind's name: lower-case letters, digits, `_` and `-`. "message" is not an event. */
export const EventKindName = z.string().regex(EVENT_KIND_RE).refine((k) => k !== "message", "not an event kind");

export const ChatMessageSchema = z
  .object({
    msgId: MsgId,
    id: ClientMsgId,
    from: UserId,
    to: UserId.optional(),
    group: GroupId.optional(),
    body: z.string().max(MAX_BODY_CHARS).refine(storableText, STORABLE),
    ts: z.number().int().nonnegative(),
    rcpt: z.array(UserId).max(MAX_RCPT).optional(),
    kind: EventKindName.optional(),
    ref: MsgId.optional(),
    data: z.record(z.string(), z.unknown()).optional(),
  })
  .refine((m) => m.kind !== undefined || m.body.length > 0, { path: ["body"], message: "a message's body is 1 to 4096 characters" });

const QUEUED_KEYS = new Set(["msgId", "id", "from", "to", "group", "body", "ts", "rcpt", "kind", "ref", "data"]);
/** A string no longer than `max` UTF-16 units (so no more code points, as zod counts them either way). */
const shortText = (v: unknown, min: number, max: number): v is string => typeof v === "string" && v.length >= min && v.length <= max && storableText(v);
const isUserId = (v: unknown): v is string => typeof v === "string" && USER_ID_RE.test(v);
const isPlainRecord = (v: unknown) => typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype && !Object.hasOwn(v, "__proto__");

/**
 * The queue consumer's fast path (persist validates every queued message): true when `v`, a value
 * from JSON.parse, is certainly a valid ChatMessageSchema message with exactly one of `to` and
 * `group` that the schema would return unchanged (no unknown key to strip, no own `__proto__` key
 * in `data`). Plain typeof and length checks, no allocation. False says nothing: the caller then
 * runs the schema, which decides and gives the errors (shared/queue/broker-batch.test.ts checks
 * the two agree on every input it generates).
 */
export function isPlainQueuedMessage(v: unknown): v is ChatMessage {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const m = v as Record<string, unknown>;
  for (const k in m) if (!QUEUED_KEYS.has(k) || m[k] === undefined) return false;
  if (!shortText(m.msgId, 1, MAX_MSG_ID_CHARS) || !shortText(m.id, 1, MAX_CLIENT_ID_CHARS) || !isUserId(m.from)) return false;
  if (m.to === undefined ? !isUserId(m.group) : m.group !== undefined || !isUserId(m.to)) return false;
  if (typeof m.ts !== "number" || !Number.isSafeInteger(m.ts) || m.ts < 0) return false;
  const event = m.kind !== undefined;
  if (event && (typeof m.kind !== "string" || !EVENT_KIND_RE.test(m.kind) || m.kind === "message")) return false;
  // a message's body is 1 to 4096 characters; an event's may be empty
  if (!shortText(m.body, event ? 0 : 1, MAX_BODY_CHARS)) return false;
  if (m.ref !== undefined && !shortText(m.ref, 1, MAX_MSG_ID_CHARS)) return false;
  if (m.data !== undefined && !isPlainRecord(m.data)) return false;
  if (m.rcpt !== undefined) {
    if (!Array.isArray(m.rcpt) || m.rcpt.length > MAX_RCPT) return false;
    for (const u of m.rcpt) if (!isUserId(u)) return false;
  }
  return true;
}

export interface MessageFrame extends ChatMessage {
  type: "message";
  cursor: string;
}

/** A stream event as a frame: `{type:"event", kind, msgId, from, to|group, ts, ref?, …kind's fields, cursor}`. */
export interface EventFrame {
  type: "event";
  kind: string;
  msgId: string;
  from: string;
  to?: string;
  group?: string;
  ts: number;
  ref?: string;
  cursor: string;
  [field: string]: unknown;
}

/** Additions (docs/api.md, "Groups: roles and membership changes"). */
export const GROUP_ROLES = ["owner", "admin", "member"] as const;
export type GroupRole = (typeof GROUP_ROLES)[number];

export interface GroupView {
  groupId: string;
  name: string;
  members: string[];
  /** An addition to the contract's shape: who created the group (never changes). */
  creator: string;
  /** Additions: the owner (null once the group has no members) and the admins, who may remove members. */
  owner: string | null;
  admins: string[];
  /** Addition: grows with every membership or role change of the group. */
  version: number;
}

/** One change of a group's membership or roles; `by` is the member who made it. */
export type MemberChange =
  | { action: "created"; user: string; by: string }
  | { action: "added" | "removed" | "left"; user: string; by: string }
  | { action: "role"; user: string; role: GroupRole; by: string };

/** Pushed to the members' connections (and a removed member's) when a group's membership or roles change. */
export interface GroupFrame {
  type: "group";
  groupId: string;
  /** The group's version after the change (a client ignores a frame older than what it has). */
  version: number;
  change: MemberChange;
  /** The group after the change; null for a user who is no longer a member. */
  group: GroupView | null;
}

export type ServerFrame =
  | { type: "ack"; id: string; msgId: string; ts: number; cursor?: string }
  | MessageFrame
  | EventFrame
  | { type: "synced"; cursor: string }
  | { type: "pong" }
  | { type: "error"; id?: string; code: ErrorCode; message: string }
  | { type: "presence"; user: string; online: boolean }
  | TypingEvent
  | GroupFrame;

/**
 * Builds a message frame; `cursor` is always the last key (the gateway splices per-connection
 * cursors). A message read from storage carries its current state: `editedAt` once edited,
 * `deletedAt` (and an empty body) once deleted.
 */
export function messageFrame(m: ChatMessage, cursor: string): MessageFrame {
  const f: MessageFrame =
    m.group !== undefined
      ? { type: "message", msgId: m.msgId, id: m.id, from: m.from, group: m.group, body: m.body, ts: m.ts, cursor }
      : { type: "message", msgId: m.msgId, id: m.id, from: m.from, to: m.to, body: m.body, ts: m.ts, cursor };
  if (m.editedAt === undefined && m.deletedAt === undefined) return f;
  const { cursor: c, ...rest } = f;
  return { ...rest, ...(m.editedAt !== undefined ? { editedAt: m.editedAt } : {}), ...(m.deletedAt !== undefined ? { deletedAt: m.deletedAt } : {}), cursor: c };
}

export type ParsedFrame =
  | { ok: true; frame: ClientFrame }
  | { ok: false; code: ErrorCode; message: string; id?: string };

/**
 * The common frame, a plain valid `send`, checked without zod (a gateway's CPU per message,
 * issue 10): exactly `type`, `id`, `body` and one of `to`/`group`, each a string SendFrame accepts
 * (a body of at most MAX_BODY_CHARS UTF-16 units, so never too_large). Anything else is null, and
 * goes through the schema as always: the same frame, or the same error, either way.
 */
function plainSend(obj: Record<string, unknown>): SendFrame | null {
  let keys = 0;
  for (const k in obj) {
    if (k !== "type" && k !== "id" && k !== "body" && k !== "to" && k !== "group") return null;
    keys++;
  }
  const { id, body, to, group } = obj;
  if (keys !== 4 || !shortText(id, 1, MAX_CLIENT_ID_CHARS) || !shortText(body, 1, MAX_BODY_CHARS)) return null;
  if (to !== undefined) return isUserId(to) ? { type: "send", id, body, to } : null;
  return isUserId(group) ? { type: "send", id, body, group } : null;
}

/** Parses one text frame. Never throws: a malformed frame yields the error to send back. */
export function parseClientFrame(text: string): ParsedFrame {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, code: "bad_request", message: "frame is not valid JSON" };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return { ok: false, code: "bad_request", message: "frame must be a JSON object" };
  }
  const obj = raw as Record<string, unknown>;
  const send = obj.type === "send" ? plainSend(obj) : null;
  if (send) return { ok: true, frame: send };
  const idOk = ClientMsgId.safeParse(obj.id);
  const id = idOk.success ? idOk.data : undefined;
  const withId = id === undefined ? {} : { id };
  // A send's or an edit's text over the limit is `too_large`. Characters are code points, as Body
  // (zod) counts them: an astral character is one, not two.
  if ((obj.type === "send" || obj.type === "edit") && typeof obj.body === "string" && obj.body.length > MAX_BODY_CHARS && [...obj.body].length > MAX_BODY_CHARS) {
    return { ok: false, code: "too_large", message: `body is over ${MAX_BODY_CHARS} characters`, ...withId };
  }
  let schema: z.ZodType<ClientFrame>;
  switch (obj.type) {
    case "send":
      schema = SendFrame;
      break;
    case "sync":
      schema = SyncFrame;
      break;
    case "ping":
      schema = PingFrame;
      break;
    case "watch":
      schema = WatchFrame;
      break;
    case "typing":
      schema = TypingFrame;
      break;
    case "read":
      schema = ReadFrame;
      break;
    case "edit":
      schema = EditFrame;
      break;
    case "delete":
      schema = DeleteFrame;
      break;
    default:
      return { ok: false, code: "bad_request", message: `unknown frame type; expected one of ${CLIENT_FRAME_TYPES.join(", ")}`, ...withId };
  }
  const r = schema.safeParse(raw);
  if (!r.success) return { ok: false, code: "bad_request", message: describeIssues(r.error), ...withId };
  return { ok: true, frame: r.data };
}

export function describeIssues(err: z.ZodError): string {
  return err.issues
    .slice(0, 3)
    .map((i) => (i.path.length ? `${i.path.join(".")}: ${i.message}` : i.message))
    .join("; ");
}
