ALTER TABLE "messages" ADD COLUMN "s_epoch" bigint;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "s_pos" bigint;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "r_epoch" bigint;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "r_pos" bigint;--> statement-breakpoint
CREATE UNIQUE INDEX "messages_sender_pos" ON "messages" USING btree ("sender","s_epoch","s_pos") WHERE "messages"."s_pos" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "messages_recipient_pos" ON "messages" USING btree ("recipient","r_epoch","r_pos") WHERE "messages"."r_pos" is not null;--> statement-breakpoint
CREATE INDEX "messages_sender_conv" ON "messages" USING btree ("sender","conv","s_epoch","s_pos") WHERE "messages"."s_pos" is not null;--> statement-breakpoint
CREATE INDEX "messages_recipient_conv" ON "messages" USING btree ("recipient","conv","r_epoch","r_pos") WHERE "messages"."r_pos" is not null;