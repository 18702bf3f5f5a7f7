CREATE TABLE "group_members" (
	"group_id" text NOT NULL,
	"user_id" text NOT NULL,
	CONSTRAINT "group_members_group_id_user_id_pk" PRIMARY KEY("group_id","user_id")
);
--> statement-breakpoint
CREATE TABLE "groups" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"creator" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "messages" (
	"id" text PRIMARY KEY NOT NULL,
	"seq" bigserial NOT NULL,
	"client_id" text NOT NULL,
	"sender" text NOT NULL,
	"recipient" text,
	"group_id" text,
	"conv" text NOT NULL,
	"body" text NOT NULL,
	"ts" bigint NOT NULL,
	CONSTRAINT "messages_seq_unique" UNIQUE("seq")
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" text PRIMARY KEY NOT NULL,
	"password_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "group_members" ADD CONSTRAINT "group_members_group_id_groups_id_fk" FOREIGN KEY ("group_id") REFERENCES "public"."groups"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "group_members_user" ON "group_members" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "messages_conv_seq" ON "messages" USING btree ("conv","seq");--> statement-breakpoint
CREATE INDEX "messages_sender_seq" ON "messages" USING btree ("sender","seq");--> statement-breakpoint
CREATE INDEX "messages_recipient_seq" ON "messages" USING btree ("recipient","seq");--> statement-breakpoint
CREATE INDEX "messages_group_seq" ON "messages" USING btree ("group_id","seq");