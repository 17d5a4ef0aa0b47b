/**
 * Test databases. Every storage test runs against the embedded PGlite, and also against
 * real PostgreSQL when TEST_DATABASE_URL is set (CI sets it). Each call creates a fresh
 * database, so test files run in parallel without sharing state.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { type Database, type DatabaseKind, openDatabase } from "../../src/storage/database.js";

/** The backends this run covers: always PGlite, PostgreSQL when configured. */
export const backends: readonly DatabaseKind[] = process.env.TEST_DATABASE_URL
  ? ["pglite", "postgres"]
  : ["pglite"];

/** A migrated, empty database of its own; `dispose()` closes and drops it. */
export interface TestDatabase extends Database {
  /** The connection URL (PostgreSQL only), for servers started as child processes. */
  readonly url: string | undefined;
  dispose(): Promise<void>;
}

/** Creates a fresh database on `kind`. */
export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === "pglite") {
    const db = await openDatabase({ dataDir: undefined });
    return Object.assign(db, { url: undefined, dispose: () => db.close() });
  }
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (adminUrl === undefined) throw new Error("TEST_DATABASE_URL is not set");
  const name = `tw_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const db = await openDatabase({ url: url.toString(), poolSize: 5 });
  let disposed = false;
  return Object.assign(db, {
    url: url.toString(),
    async dispose() {
      if (disposed) return;
      disposed = true;
      await db.close();
      const dropper = new pg.Client({ connectionString: adminUrl });
      await dropper.connect();
      try {
        await dropper.query(`drop database if exists ${name} with (force)`);
      } finally {
        await dropper.end();
      }
    },
  });
}
