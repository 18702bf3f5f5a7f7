ALTER TABLE "group_members" ADD COLUMN "role" text DEFAULT 'member' NOT NULL;--> statement-breakpoint
ALTER TABLE "group_members" ADD COLUMN "joined_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "groups" ADD COLUMN "version" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
UPDATE "group_members" SET "role" = 'owner' FROM "groups" WHERE "groups"."id" = "group_members"."group_id" AND "groups"."creator" = "group_members"."user_id";--> statement-breakpoint
UPDATE "group_members" SET "role" = 'owner' WHERE ("group_id", "user_id") IN (SELECT DISTINCT ON ("group_id") "group_id", "user_id" FROM "group_members" WHERE "group_id" NOT IN (SELECT "group_id" FROM "group_members" WHERE "role" = 'owner') ORDER BY "group_id", "user_id");
