// Applies drizzle/ migrations to DATABASE_URL (multi-host URLs too) with the runtime's own migrator,
// so the production image (installed without devDependencies, no drizzle-kit) can migrate:
//   bun run scripts/migrate.ts        (compose's `migrate` service, the Kubernetes migrate Job)
import { loadConfigOrExit, requireKeys } from "../shared/config.ts";
import { migrateDatabase } from "../shared/db/index.ts";

const cfg = requireKeys(loadConfigOrExit({}), ["DATABASE_URL"], "migrate");
await migrateDatabase(cfg.DATABASE_URL);
console.log("migrations applied");
