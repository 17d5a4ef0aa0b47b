/**
 * `tripwire-dashboard migrate`: applies pending migrations to the configured database and
 * exits, so a deployment pipeline can migrate once before it rolls out new instances.
 */
import type { Config } from "../config.js";
import { migrateDatabase } from "../storage/database.js";
import { redactUrl } from "./redact.js";

/** The database could not be migrated; the message says which and why. Exit code 1. */
export class MigrateError extends Error {
  override readonly name = "MigrateError";
}

/** Migrates the database `config` names; returns the report to print. */
export async function runMigrate(config: Config): Promise<string> {
  const where =
    config.databaseUrl !== undefined
      ? `PostgreSQL database ${redactUrl(config.databaseUrl)}`
      : `embedded database in ${config.dataDir}`;
  let report: Awaited<ReturnType<typeof migrateDatabase>>;
  try {
    report = await migrateDatabase(
      config.databaseUrl !== undefined ? { url: config.databaseUrl } : { dataDir: config.dataDir },
    );
  } catch (err) {
    throw new MigrateError(`cannot migrate the ${where}: ${errorText(err)}`, { cause: err });
  }
  if (report.applied.length === 0) {
    return `The ${where} is up to date (latest migration: ${report.latest ?? "none"}).\n`;
  }
  const count = `${report.applied.length} migration${report.applied.length === 1 ? "" : "s"}`;
  return `Applied ${count} to the ${where}:\n${report.applied.map((tag) => `  ${tag}\n`).join("")}`;
}

/** The most telling message of an error: its innermost cause, or each of a connect's tries. */
function errorText(err: unknown): string {
  let e = err;
  for (let i = 0; i < 5 && e instanceof Error && e.cause !== undefined; i++) e = e.cause;
  if (e instanceof AggregateError && e.message === "") {
    // Node tries every address of a name (::1, 127.0.0.1) and reports them together.
    return e.errors
      .map((one: unknown) => (one instanceof Error ? one.message : String(one)))
      .join("; ");
  }
  return e instanceof Error ? e.message : String(e);
}
