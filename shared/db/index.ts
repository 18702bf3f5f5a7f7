import type { SQL } from "drizzle-orm";
import { PgDialect, type PgDatabase, type PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import { migrate as migratePostgres } from "drizzle-orm/postgres-js/migrator";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePgliteDb } from "drizzle-orm/pglite/migrator";
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { backoffDelay } from "../backoff.ts";
import { schema } from "./schema.ts";

/**
 * The database role: a Drizzle database over the one schema. The real one is PostgreSQL through
 * postgres.js, the embedded one PGlite; services only see `Db` and run the same queries on both.
 */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

const dialect = new PgDialect();
/** Statement texts run prepared; beyond MAX_PREPARED distinct ones, new texts run unnamed. */
export const MAX_PREPARED = 256;
const preparedTexts = new Set<string>();

/**
 * `db.execute(query)` as a named prepared statement: postgres.js then parses it and reads its
 * result's shape once per connection and statement text, and PostgreSQL may settle on a generic
 * plan instead of planning every execution, where drizzle's `execute` sends every statement
 * unnamed, parsed, described and planned anew (a sync's read of a user's stream: 155 against 58 µs
 * of this process's CPU per call, 495 against 225 µs of PostgreSQL's; docs/benchmarks.md). PGlite
 * runs it as `execute` does. Only for statements whose text never varies (every value a parameter;
 * no list spelled out element by element): postgres.js keeps one prepared statement per text per
 * connection. The stream's generic plans are checked like its per-value ones (db.contract.ts).
 */
export function executePrepared(db: Db, query: SQL): Promise<unknown> {
  const q = dialect.sqlToQuery(query);
  // a bound on what postgres.js and each connection keep, should a varying text ever come here
  if (preparedTexts.size < MAX_PREPARED) preparedTexts.add(q.sql);
  // drizzle prepares a query that has a name (any name: postgres.js names it by its text)
  return db._.session.prepareQuery(q, undefined, preparedTexts.has(q.sql) ? "prepared" : undefined, false).execute();
}

export const MIGRATIONS_DIR = new URL("../../drizzle", import.meta.url).pathname;

export interface DbHandle {
  /** The current database; after reset() a new object, so read it per use rather than keep it. */
  readonly db: Db;
  /** Resolves true when a trivial query succeeds within the timeout. */
  ping(timeoutMs?: number): Promise<boolean>;
  /**
   * Drops every connection, failing what runs on them, and opens fresh ones: the way out of a
   * query that hangs on a connection the driver lost track of. A no-op for the embedded database.
   */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export function openPostgres(url: string, opts: { max?: number } = {}): DbHandle {
  const open = () => {
    const client = postgres(url, {
      max: opts.max ?? 10,
      onnotice: () => {},
      connect_timeout: 5,
      idle_timeout: 60,
      // postgres.js reconnects per query by itself; a dead server fails queries fast instead of hanging.
      // Its own reconnect delay grows as 3^n/100 s up to 20 s after consecutive failures, which held a
      // service back for up to ~20 s after PostgreSQL returned: use the one backoff policy instead (s).
      backoff: (attempt: number) => backoffDelay(attempt) / 1000,
    });
    return { client, db: drizzlePostgres(client, { schema }) as unknown as Db };
  };
  let current = open();
  return {
    get db() {
      return current.db;
    },
    ping: (timeoutMs = 2000) => withTimeout(current.client`select 1`.then(() => true), timeoutMs, false),
    async reset() {
      const old = current.client;
      current = open();
      // timeout 0: destroy at once; queries still pending on the old connections reject.
      await old.end({ timeout: 0 });
    },
    close: () => current.client.end({ timeout: 5 }),
  };
}

export async function openPglite(dataDir: string): Promise<DbHandle> {
  const client = await PGlite.create(dataDir);
  const db = drizzlePglite(client, { schema }) as unknown as Db;
  await migratePgliteDb(db as never, { migrationsFolder: MIGRATIONS_DIR });
  return {
    db,
    ping: async () => !client.closed,
    reset: async () => {},
    close: () => client.close(),
  };
}

/** Applies drizzle/ to a PostgreSQL database (what `bunx drizzle-kit migrate` does). */
export async function migrateDatabase(url: string): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await migratePostgres(drizzlePostgres(client), { migrationsFolder: MIGRATIONS_DIR });
  } finally {
    await client.end({ timeout: 5 });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(fallback), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      () => (clearTimeout(t), resolve(fallback)),
    );
  });
}
