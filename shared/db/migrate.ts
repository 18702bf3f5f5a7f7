export { migrateDatabase } from "./index.ts";
