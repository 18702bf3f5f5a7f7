import { afterAll } from "bun:test";
import { dbContract } from "./db.contract.ts";
import { searchContract } from "./search.contract.ts";
import { receiptsContract } from "./receipts.contract.ts";
import { openPostgres } from "./index.ts";

const handle = openPostgres(process.env.DATABASE_URL!, { max: 8 });
afterAll(() => handle.close());
dbContract("PostgreSQL", async () => ({ db: handle.db, concurrent: true }));
searchContract("PostgreSQL", async () => handle.db);
receiptsContract("PostgreSQL", async () => handle.db);
