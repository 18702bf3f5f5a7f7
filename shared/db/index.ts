import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
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

export const MIGRATIONS_DIR = new URL("../../drizzle", import.meta.url).pathname;

// TEMP until merged: hand-written SQL in drizzle/pending/ (idempotent) applied after the
// migrations, until it is folded into the drizzle/ chain.
const PENDING_SQL = ["accounts.sql"].map((f) => new URL(`../../drizzle/pending/${f}`, import.meta.url).pathname);
async function applyPending(exec: (sql: string) => Promise<unknown>): Promise<void> {
  for (const f of PENDING_SQL) await exec(await Bun.file(f).text());
}

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
  await applyPending((sql) => client.exec(sql)); // TEMP until merged
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
    await applyPending((sql) => client.unsafe(sql)); // TEMP until merged
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
