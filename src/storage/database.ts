/**
 * Opens the database (PostgreSQL through a node-postgres pool, or the embedded PGlite)
 * and applies the migrations in drizzle/ before anything else touches it.
 */
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { type SQL, sql } from "drizzle-orm";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import { migrate as migrateNodePg } from "drizzle-orm/node-postgres/migrator";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";

/** Where the committed migrations live, from src/storage or dist/storage alike. */
export const migrationsFolder = fileURLToPath(new URL("../../drizzle", import.meta.url));

/** Which engine is behind a Database. */
export type DatabaseKind = "postgres" | "pglite";

/** A migrated database and the one way the server talks to it. */
export interface Database {
  readonly kind: DatabaseKind;
  /** The Drizzle handle, for queries built with Drizzle's builders or `sql`. */
  readonly db: PgDatabase<PgQueryResultHKT>;
  /** Runs one statement and returns its rows (both drivers return `.rows`). */
  rows<T>(query: SQL): Promise<T[]>;
  /** Resolves when the database answers a trivial query. */
  ping(): Promise<void>;
  /**
   * Runs `work` with statements on one connection of their own (each statement its own
   * transaction), for session state such as advisory locks. PGlite has one session.
   */
  session<T>(work: (rows: <R>(query: SQL) => Promise<R[]>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** How to reach the database. */
export type DatabaseOptions =
  | { readonly url: string; readonly poolSize?: number; readonly statementTimeoutMs?: number }
  | { readonly dataDir: string | undefined };

// Any constant works: instances starting at once take turns applying migrations.
const migrationLockKey = 7_402_195_311;

/**
 * Opens and migrates the database: PostgreSQL when `url` is given, otherwise the
 * embedded PGlite in `dataDir` (in memory when `dataDir` is undefined).
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  return "url" in options ? openPostgres(options) : openPglite(options.dataDir);
}

async function openPostgres(options: {
  url: string;
  poolSize?: number;
  statementTimeoutMs?: number;
}): Promise<Database> {
  await migratePostgres(options.url);
  const timeout = options.statementTimeoutMs ?? 0;
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    // Also bounds the wait for a free connection when every one is busy.
    connectionTimeoutMillis: 10_000,
    // A stalled database (a lock held, a disk full) answers with an error instead of
    // leaving events waiting forever: lock waits count toward this timeout.
    ...(timeout > 0 ? { options: `-c statement_timeout=${timeout}` } : {}),
  });
  pool.on("error", () => {
    // An idle client lost its connection; the pool replaces it on next use.
  });
  return databaseOver(
    "postgres",
    drizzleNodePg(pool),
    () => pool.end(),
    async (work) => {
      const client = await pool.connect();
      const db = drizzleNodePg(client);
      let failed: unknown;
      try {
        return await work(async <R>(query: SQL) => rowsOf<R>(await db.execute(query)));
      } catch (err) {
        failed = err;
        throw err;
      } finally {
        // A connection that failed may be broken or still hold session state: discard it.
        client.release(failed instanceof Error ? failed : undefined);
      }
    },
  );
}

/**
 * An embedded database in memory, or in `dataDir`. PGlite creates only the last level
 * of the directory, so its parents (`.data` on a fresh clone) are created here.
 */
async function newPglite(dataDir: string | undefined): Promise<PGlite> {
  if (dataDir === undefined) return new PGlite();
  if (!dataDir.includes("://")) await mkdir(dirname(resolve(dataDir)), { recursive: true });
  return new PGlite(dataDir);
}

async function openPglite(dataDir: string | undefined): Promise<Database> {
  const client = await newPglite(dataDir);
  await client.waitReady;
  const db = drizzlePglite(client);
  await applyMigrations(db, () => migratePglite(db, { migrationsFolder }));
  return databaseOver(
    "pglite",
    db,
    () => client.close(),
    (work) => work(async <R>(query: SQL) => rowsOf<R>(await db.execute(query))),
  );
}

/** What `migrateDatabase` did. */
export interface MigrationReport {
  /** The migrations it applied, by tag (`0001_seq_in_commit_order`), oldest first. */
  readonly applied: readonly string[];
  /** The newest migration this version knows, which the database is now at. */
  readonly latest: string | undefined;
}

/**
 * Applies pending migrations and closes again, without opening a pool: for deployment
 * pipelines (`tripwire-dashboard migrate`). Safe to run while instances start.
 */
export async function migrateDatabase(options: DatabaseOptions): Promise<MigrationReport> {
  let applied: readonly string[];
  if ("url" in options) {
    applied = await migratePostgres(options.url);
  } else {
    const client = await newPglite(options.dataDir);
    try {
      await client.waitReady;
      const db = drizzlePglite(client);
      applied = await applyMigrations(db, () => migratePglite(db, { migrationsFolder }));
    } finally {
      await client.close();
    }
  }
  return { applied, latest: migrationJournal().at(-1)?.tag };
}

/** Migrates under an advisory lock, on a connection of its own without the statement timeout. */
async function migratePostgres(url: string): Promise<readonly string[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    await client.query("select pg_advisory_lock($1)", [migrationLockKey]);
    try {
      const db = drizzleNodePg(client);
      return await applyMigrations(db, () => migrateNodePg(db, { migrationsFolder }));
    } finally {
      await client.query("select pg_advisory_unlock($1)", [migrationLockKey]);
    }
  } finally {
    await client.end();
  }
}

/**
 * Runs Drizzle's migrator and says which migrations it applied: those newer than the
 * newest one recorded before, which is how the migrator itself picks them.
 */
async function applyMigrations(
  db: PgDatabase<PgQueryResultHKT>,
  migrate: () => Promise<void>,
): Promise<readonly string[]> {
  const rows = async <T>(query: SQL) =>
    ((await db.execute(query)) as unknown as { rows: T[] }).rows;
  const [table] = await rows<{ present: boolean }>(
    sql`select to_regclass('drizzle.__drizzle_migrations') is not null as present`,
  );
  let newest: number | undefined;
  if (table?.present === true) {
    const [last] = await rows<{ newest: string | null }>(
      sql`select max(created_at)::text as newest from drizzle.__drizzle_migrations`,
    );
    newest = last?.newest == null ? undefined : Number(last.newest);
  }
  await migrate();
  return migrationJournal()
    .filter((entry) => newest === undefined || entry.when > newest)
    .map((entry) => entry.tag);
}

/** The migrations in drizzle/, oldest first, as drizzle-kit's journal lists them. */
function migrationJournal(): readonly { tag: string; when: number }[] {
  const journal = JSON.parse(
    readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8"),
  ) as { entries: { tag: string; when: number }[] };
  return journal.entries;
}

/** The Database over a Drizzle handle; both drivers return `.rows`. */
function databaseOver(
  kind: DatabaseKind,
  db: PgDatabase<PgQueryResultHKT>,
  close: () => Promise<void>,
  session: Database["session"],
): Database {
  return {
    kind,
    db,
    async rows<T>(query: SQL) {
      return rowsOf<T>(await db.execute(query));
    },
    async ping() {
      await db.execute(sql`select 1`);
    },
    close,
    session,
  };
}

function rowsOf<T>(result: unknown): T[] {
  return (result as { rows: T[] }).rows;
}
