import { afterAll } from "bun:test";
import { openPostgres } from "./index.ts";
import { receiptsContract } from "./receipts.contract.ts";

const handle = openPostgres(process.env.DATABASE_URL!, { max: 4 });
afterAll(() => handle.close());
receiptsContract("PostgreSQL", async () => handle.db);
