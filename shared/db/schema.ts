import { bigint, bigserial, index, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

/**
 * The one schema, used by PostgreSQL (postgres.js) and PGlite alike.
 *
 * `messages` holds each message once. `stream` is every user's stream: one entry per (user,
 * position), positions assigned by the allocator when the message was accepted (docs/delivery.md).
 * Cursors, sync and history read `stream`; `messages.seq` only maps cursors of the previous
 * version (commit sequence numbers) onto the legacy epoch 0 of each stream.
 */
export const messages = pgTable("messages", {
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
});

/**
 * One entry of a user's stream. `kind` is what travels at that position: today always "message"
 * (with `msgId`); edits, deletions and receipts can take positions in the same stream later.
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
  (t) => [primaryKey({ columns: [t.userId, t.epoch, t.pos] }), index("stream_user_conv").on(t.userId, t.conv, t.epoch, t.pos)],
);

export const users = pgTable("users", {
  id: text("id").primaryKey(),
  passwordHash: text("password_hash").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
});

export const groups = pgTable("groups", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  creator: text("creator").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
});

export const groupMembers = pgTable(
  "group_members",
  {
    groupId: text("group_id")
      .notNull()
      .references(() => groups.id, { onDelete: "cascade" }),
    userId: text("user_id").notNull(),
  },
  (t) => [primaryKey({ columns: [t.groupId, t.userId] }), index("group_members_user").on(t.userId)],
);

export const schema = { messages, stream, users, groups, groupMembers };
