import { sql } from "drizzle-orm";
import { bigint, bigserial, index, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

/**
 * The one schema, used by PostgreSQL (postgres.js) and PGlite alike.
 *
 * `messages.seq` is the commit sequence: persist takes a transaction-scoped advisory lock before
 * inserting, so sequence values become visible in increasing order and the committed rows always
 * form a prefix of `seq` (with holes only where a duplicate insert burned a value). Cursors are
 * `seq` values; see docs/delivery.md.
 */
export const messages = pgTable(
  "messages",
  {
    id: text("id").primaryKey(),
    seq: bigserial("seq", { mode: "number" }).notNull().unique(),
    clientId: text("client_id").notNull(),
    sender: text("sender").notNull(),
    recipient: text("recipient"),
    groupId: text("group_id"),
    /** Conversation key: `d:<a>:<b>` (a < b) for direct messages, `g:<groupId>` for groups. */
    conv: text("conv").notNull(),
    body: text("body").notNull(),
    ts: bigint("ts", { mode: "number" }).notNull(),
  },
  (t) => [
    index("messages_conv_seq").on(t.conv, t.seq),
    index("messages_sender_seq").on(t.sender, t.seq),
    index("messages_recipient_seq").on(t.recipient, t.seq),
    index("messages_group_seq").on(t.groupId, t.seq),
  ],
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

export const schema = { messages, users, groups, groupMembers };
