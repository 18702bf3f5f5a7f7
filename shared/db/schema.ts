import { sql } from "drizzle-orm";
import { bigint, bigserial, customType, index, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

const tsvector = customType<{ data: string }>({ dataType: () => "tsvector" });

/**
 * The one schema, used by PostgreSQL (postgres.js) and PGlite alike.
 *
 * `messages` holds each message once. `stream` is every user's stream: one entry per (user,
 * position), positions assigned by the allocator when the message was accepted (docs/delivery.md).
 * Cursors, sync and history read `stream`; `messages.seq` only maps cursors of the previous
 * version (commit sequence numbers) onto the legacy epoch 0 of each stream.
 */
export const messages = pgTable(
  "messages",
  {
    id: text("id").primaryKey(),
    seq: bigserial("seq", { mode: "number" }).notNull(),
    clientId: text("client_id").notNull(),
    sender: text("sender").notNull(),
    recipient: text("recipient"),
    groupId: text("group_id"),
    /** Conversation key: `d:<a>:<b>` (a < b) for direct messages, `g:<groupId>` for groups. */
    conv: text("conv").notNull(),
    body: text("body").notNull(),
    ts: bigint("ts", { mode: "number" }).notNull(),
    /** "message", or a stream event's kind (shared/events/registry.ts): events are rows too. */
    kind: text("kind").notNull().default("message"),
    /** The msgId an event is about. */
    ref: text("ref"),
    /** An event kind's payload. */
    data: jsonb("data"),
    /** A message's latest edit (its `ts`), and its deletion (the body is then ''). */
    editedAt: bigint("edited_at", { mode: "number" }),
    deletedAt: bigint("deleted_at", { mode: "number" }),
    /**
     * The body's words for full-text search (GET /api/search), kept by PostgreSQL itself. The
     * `simple` configuration: words as written, lower-cased, in any language; no stemming.
     */
    search: tsvector("search").generatedAlwaysAs(sql`to_tsvector('simple', body)`),
    /**
     * A direct message's entries in its two users' streams, kept in its own row rather than as two
     * `stream` rows (18 % less for PostgreSQL to write per direct message; docs/delivery.md,
     * "Where entries are stored"): the sender's position (s_*) and the recipient's (r_*). Null for
     * every other record, and for a direct message whose entries are in `stream` (written by an
     * earlier version, or given new positions by a later redelivery).
     */
    senderEpoch: bigint("s_epoch", { mode: "number" }),
    senderPos: bigint("s_pos", { mode: "number" }),
    recipientEpoch: bigint("r_epoch", { mode: "number" }),
    recipientPos: bigint("r_pos", { mode: "number" }),
  },
  (t) => [
    index("messages_ref").on(t.ref).where(sql`${t.ref} is not null`),
    index("messages_search").using("gin", t.search),
    // what `stream`'s primary key and stream_user_conv are to its rows, for the entries kept here
    uniqueIndex("messages_sender_pos").on(t.sender, t.senderEpoch, t.senderPos).where(sql`${t.senderPos} is not null`),
    uniqueIndex("messages_recipient_pos").on(t.recipient, t.recipientEpoch, t.recipientPos).where(sql`${t.recipientPos} is not null`),
    index("messages_sender_conv").on(t.sender, t.conv, t.senderEpoch, t.senderPos).where(sql`${t.senderPos} is not null`),
    index("messages_recipient_conv").on(t.recipient, t.conv, t.recipientEpoch, t.recipientPos).where(sql`${t.recipientPos} is not null`),
  ],
);

/**
 * One entry of a user's stream. `kind` is what travels at that position: "message", or a stream
 * event's kind (an edit, a deletion, …), with `msgId` the id of that record in `messages`.
 */
export const stream = pgTable(
  "stream",
  {
    userId: text("user_id").notNull(),
    epoch: bigint("epoch", { mode: "number" }).notNull(),
    pos: bigint("pos", { mode: "number" }).notNull(),
    kind: text("kind").notNull().default("message"),
    msgId: text("msg_id").notNull(),
    conv: text("conv").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.epoch, t.pos] }), index("stream_user_conv").on(t.userId, t.conv, t.epoch, t.pos), index("stream_msg_id").on(t.msgId).where(sql`${t.conv} like 'g:%'`)],
);

/** A user id is unique regardless of case (`users_id_lower`); it keeps its registered spelling. */
export const users = pgTable(
  "users",
  {
    id: text("id").primaryKey(),
    passwordHash: text("password_hash").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex("users_id_lower").on(sql`lower(${t.id})`)],
);

export const groups = pgTable("groups", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  creator: text("creator").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  /** Counts the group's membership and role changes (a client keeps the newest state it saw). */
  version: bigint("version", { mode: "number" }).notNull().default(0),
});

export const groupMembers = pgTable(
  "group_members",
  {
    groupId: text("group_id")
      .notNull()
      .references(() => groups.id, { onDelete: "cascade" }),
    userId: text("user_id").notNull(),
    /** "owner" (one per group while it has members), "admin" or "member" (docs/api.md, "Group roles"). */
    role: text("role").notNull().default("member"),
    joinedAt: timestamp("joined_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.groupId, t.userId] }), index("group_members_user").on(t.userId)],
);

/**
 * Refresh tokens, stored only as SHA-256 hashes of their random 256-bit value. A family is one
 * sign-in (`sid` in the access tokens it yields): each use marks the row used and adds its
 * successor; using a used row again revokes the whole family (the token was copied).
 */
export const refreshTokens = pgTable(
  "refresh_tokens",
  {
    tokenHash: text("token_hash").primaryKey(),
    userId: text("user_id").notNull(),
    familyId: text("family_id").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
    usedAt: timestamp("used_at", { withTimezone: true }),
    revokedAt: timestamp("revoked_at", { withTimezone: true }),
  },
  (t) => [index("refresh_tokens_family").on(t.familyId), index("refresh_tokens_user").on(t.userId)],
);

/**
 * Web Push subscriptions, one per browser (device): the push service's `endpoint` identifies it, so
 * subscribing again from the same browser (even as another user) replaces its row. `p256dh` and
 * `auth` are the browser's keys (base64url) that each notification is encrypted to (RFC 8291).
 * `sessionId` is the sign-in (`sid`) it was made in: logging that session out removes it.
 */
export const pushSubscriptions = pgTable(
  "push_subscriptions",
  {
    endpoint: text("endpoint").primaryKey(),
    userId: text("user_id").notNull(),
    p256dh: text("p256dh").notNull(),
    auth: text("auth").notNull(),
    sessionId: text("session_id"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index("push_subscriptions_user").on(t.userId)],
);

/**
 * Receipts: per (user, conversation) how far the user has read — a position in their own stream
 * and the message there — and the latest message that reached one of their devices. Others see a
 * message as read (delivered) by the user when its (ts, msgId) is at or before the marker's.
 */
export const readState = pgTable(
  "read_state",
  {
    userId: text("user_id").notNull(),
    conv: text("conv").notNull(),
    readEpoch: bigint("read_epoch", { mode: "number" }),
    readPos: bigint("read_pos", { mode: "number" }),
    readMsgId: text("read_msg_id"),
    readTs: bigint("read_ts", { mode: "number" }),
    deliveredMsgId: text("delivered_msg_id"),
    deliveredTs: bigint("delivered_ts", { mode: "number" }),
  },
  (t) => [primaryKey({ columns: [t.userId, t.conv] }), index("read_state_conv").on(t.conv)],
);

export const schema = { messages, stream, users, groups, groupMembers, refreshTokens, pushSubscriptions, readState };
