ALTER TABLE "messages" ADD COLUMN "kind" text DEFAULT 'message' NOT NULL;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "ref" text;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "data" jsonb;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "edited_at" bigint;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "deleted_at" bigint;--> statement-breakpoint
CREATE INDEX "messages_ref" ON "messages" USING btree ("ref") WHERE "messages"."ref" is not null;--> statement-breakpoint
CREATE INDEX "stream_msg_id" ON "stream" USING btree ("msg_id");