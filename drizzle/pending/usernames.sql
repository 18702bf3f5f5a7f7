-- Usernames are unique regardless of case; the id keeps the spelling it was registered with.
-- Pending: folded into the migration chain (drizzle/) when merged. Fails if two ids already differ
-- only in case; resolve those by hand first:
--   SELECT lower("id"), array_agg("id") FROM "users" GROUP BY 1 HAVING count(*) > 1;
CREATE UNIQUE INDEX IF NOT EXISTS "users_id_lower" ON "users" USING btree (lower("id"));
