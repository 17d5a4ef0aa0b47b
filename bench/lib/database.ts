/**
 * The benchmark's PostgreSQL databases: one fresh database per measurement, created on
 * the admin URL and dropped afterwards (also on Ctrl-C, through cleanup.ts).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { onAbort } from "./cleanup.js";

/** Runs `use` with a connected client and closes it afterwards. */
export async function withClient<T>(url: string, use: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

/** `adminUrl` with its database name replaced by `name`. */
export function databaseUrlFor(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A database of its own for one measurement. */
export interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  /** Drops it (force: open connections are ended); never throws, reports failures. */
  drop(): Promise<void>;
}

/** Creates an empty database `tw_bench_<random>`; the server migrates it at start. */
export async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const name = `tw_bench_${randomBytes(5).toString("hex")}`;
  const drop = async (): Promise<void> => {
    release();
    await withClient(adminUrl, (c) =>
      c.query(`drop database if exists ${name} with (force)`),
    ).catch((err: unknown) =>
      process.stderr.write(`could not drop database ${name}: ${String(err)}\n`),
    );
  };
  // Registered first: on Ctrl-C during the create, the drop still comes.
  const release = onAbort(drop);
  try {
    await withClient(adminUrl, (c) => c.query(`create database ${name}`));
  } catch (err) {
    release();
    throw err;
  }
  return { name, url: databaseUrlFor(adminUrl, name), drop };
}

/** The PIDs of the PostgreSQL backends connected to `database` now. */
export function backendPids(adminUrl: string, database: string): Promise<number[]> {
  return withClient(adminUrl, async (c) => {
    const r = await c.query<{ pid: number }>(
      "select pid from pg_stat_activity where datname = $1",
      [database],
    );
    return r.rows.map((row) => row.pid);
  });
}

/** Rows in the alerts table of `url`, and the highest seq. */
export function storedAlerts(url: string): Promise<{ rows: number; maxSeq: number }> {
  return withClient(url, async (c) => {
    const r = await c.query<{ n: string; max: string | null }>(
      "select count(*)::text as n, max(seq)::text as max from alerts",
    );
    return { rows: Number(r.rows[0]?.n ?? 0), maxSeq: Number(r.rows[0]?.max ?? 0) };
  });
}
