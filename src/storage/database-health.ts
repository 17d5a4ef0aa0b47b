/**
 * Whether the database answers and takes writes: the check behind /readyz and the
 * `tripwire_database_up` metric.
 */
import { sql } from "drizzle-orm";
import type { BatchWriter } from "./batch-writer.js";
import type { Database } from "./database.js";

/** The outcome of a check: healthy, or what is wrong in words an operator can act on. */
export type DatabaseHealth = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * Pings the database; while the writer's last batch failed, also reads the alerts table
 * (a held lock or a stall shows there) and tells the writer it recovered when it answers.
 * Each step gives up after `timeoutMs`.
 */
export async function checkDatabase(
  database: Database,
  writer: BatchWriter,
  timeoutMs: number,
): Promise<DatabaseHealth> {
  try {
    await withTimeout(database.ping(), timeoutMs);
  } catch (err) {
    return { ok: false, error: `database unreachable: ${rootMessage(err)}` };
  }
  if (writer.failing !== undefined) {
    try {
      await withTimeout(database.rows(sql`select 1 from alerts limit 1`), timeoutMs);
      writer.recovered();
    } catch {
      return { ok: false, error: `database is not taking writes: ${writer.failing}` };
    }
  }
  return { ok: true };
}

/** The innermost cause's message (Drizzle wraps driver errors as "Failed query: …"). */
function rootMessage(err: unknown): string {
  let e = err;
  for (let i = 0; i < 5 && e instanceof Error && e.cause !== undefined; i++) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
