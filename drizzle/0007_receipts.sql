-- Read and delivery state per (user, conversation): how far the user has read (a position in their
-- own stream, and the message there), and the latest message that reached one of their devices.
-- docs/api.md, "Receipts".
CREATE TABLE "read_state" (
	"user_id" text NOT NULL,
	"conv" text NOT NULL,
	"read_epoch" bigint,
	"read_pos" bigint,
	"read_msg_id" text,
	"read_ts" bigint,
	"delivered_msg_id" text,
	"delivered_ts" bigint,
	CONSTRAINT "read_state_user_id_conv_pk" PRIMARY KEY("user_id","conv")
);
--> statement-breakpoint
CREATE INDEX "read_state_conv" ON "read_state" USING btree ("conv");
