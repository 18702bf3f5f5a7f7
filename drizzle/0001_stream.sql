CREATE TABLE "stream" (
	"user_id" text NOT NULL,
	"epoch" bigint NOT NULL,
	"pos" bigint NOT NULL,
	"kind" text DEFAULT 'message' NOT NULL,
	"msg_id" text NOT NULL,
	"conv" text NOT NULL,
	CONSTRAINT "stream_user_id_epoch_pos_pk" PRIMARY KEY("user_id","epoch","pos")
);
--> statement-breakpoint
ALTER TABLE "messages" DROP CONSTRAINT "messages_seq_unique";--> statement-breakpoint
DROP INDEX "messages_conv_seq";--> statement-breakpoint
DROP INDEX "messages_sender_seq";--> statement-breakpoint
DROP INDEX "messages_recipient_seq";--> statement-breakpoint
DROP INDEX "messages_group_seq";--> statement-breakpoint
CREATE INDEX "stream_user_conv" ON "stream" USING btree ("user_id","conv","epoch","pos");--> statement-breakpoint
-- Backfill: every existing message enters the streams of the users it involves (sender, recipient,
-- the group's current members), as epoch 0 in commit (seq) order, so cursors of the previous
-- version (seq values) map onto positions exactly (docs/delivery.md, "Migration").
INSERT INTO "stream" ("user_id", "epoch", "pos", "kind", "msg_id", "conv")
SELECT "u", 0, row_number() OVER (PARTITION BY "u" ORDER BY "seq"), 'message', "id", "conv" FROM (
  SELECT "sender" AS "u", "id", "seq", "conv" FROM "messages"
  UNION
  SELECT "recipient", "id", "seq", "conv" FROM "messages" WHERE "recipient" IS NOT NULL
  UNION
  SELECT gm."user_id", m."id", m."seq", m."conv" FROM "messages" m JOIN "group_members" gm ON gm."group_id" = m."group_id"
) AS x;
