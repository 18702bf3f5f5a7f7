import { useTempPglite } from "../../test/pglite.ts";
import { dbContract } from "./db.contract.ts";
import { receiptsContract } from "./receipts.contract.ts";
import { searchContract } from "./search.contract.ts";

const pg = useTempPglite("chat-pglite-test-");
dbContract("PGlite", async () => ({ db: pg.handle().db, concurrent: true }));
searchContract("PGlite", async () => pg.handle().db);
receiptsContract("PGlite", async () => pg.handle().db);
