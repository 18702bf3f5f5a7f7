import { useTempPglite } from "../../test/pglite.ts";
import { dbContract } from "./db.contract.ts";

const pg = useTempPglite("chat-pglite-test-");
dbContract("PGlite", async () => ({ db: pg.handle().db, concurrent: true }));
