/**
 * The retention job: deletes alerts received more than TRIPWIRE_RETENTION_DAYS ago, in
 * small batches, once at start and then periodically.
 *
 * Each batch is one short statement (its own transaction) that touches only old rows,
 * so ingestion, which only inserts new rows, never waits for more than one batch; the
 * job yields between batches. It goes by received_at (server time), so an agent with a
 * wrong clock can neither get its alerts deleted early nor kept forever. With several
 * instances on one PostgreSQL database, a session advisory lock lets one run at a time;
 * the others skip that round.
 */
import { setImmediate as yieldToEvents } from "node:timers/promises";
import { sql } from "drizzle-orm";
import type { Logger } from "../logger.js";
import type { Database } from "./database.js";

/** When and how much the job deletes. */
export interface RetentionSettings {
  /** Alerts received more than this many days ago are deleted; must be above 0. */
  readonly days: number;
  /** Time between the end of one run and the start of the next. */
  readonly intervalMs: number;
  /** Rows per delete statement. */
  readonly batchSize: number;
}

/** What the job works with. */
export interface RetentionDeps {
  readonly database: Database;
  readonly settings: RetentionSettings;
  readonly log: Logger;
  /** Called (and awaited) after each delete statement with the rows it removed. */
  readonly afterBatch?: (removed: number) => void | Promise<void>;
}

/** The outcome of one run. */
export interface RetentionRun {
  /** Alerts deleted. */
  readonly removed: number;
  /** Delete statements executed. */
  readonly batches: number;
  /** True when another instance held the lock, so this run deleted nothing. */
  readonly skipped: boolean;
}

/** A running retention job. */
export interface RetentionJob {
  /** Resolves with the next run that starts after this call (rejects if it fails). */
  nextRun(): Promise<RetentionRun>;
  /** Stops the timer, ends a run in progress after its current batch, and waits for it. */
  close(): Promise<void>;
}

// Any constant, the same on every instance (distinct from the migration lock).
const retentionLockKey = 7_402_195_312;
const dayMicros = 86_400_000_000n;

/** Starts the job: a first run now, then one every `intervalMs` after the previous ends. */
export function startRetention(deps: RetentionDeps): RetentionJob {
  const { settings, log } = deps;
  if (settings.days <= 0) throw new Error("retention needs days above 0");
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let waiting: Array<{ resolve(run: RetentionRun): void; reject(err: unknown): void }> = [];

  const tick = (): void => {
    timer = undefined;
    const waiters = waiting;
    waiting = [];
    running = runOnce(deps, () => stopped)
      .then((run) => {
        if (run.removed > 0) {
          log.info(
            { removed: run.removed, batches: run.batches, retentionDays: settings.days },
            `retention removed ${run.removed} alert(s) received more than ${settings.days} day(s) ago`,
          );
        } else if (run.skipped) {
          log.debug({}, "retention skipped: another instance is running it");
        }
        for (const w of waiters) w.resolve(run);
      })
      .catch((err: unknown) => {
        log.error({ err }, "retention run failed; it is retried at the next interval");
        for (const w of waiters) w.reject(err);
      })
      .finally(() => {
        running = undefined;
        if (!stopped) {
          timer = setTimeout(tick, settings.intervalMs);
          timer.unref();
        }
      });
  };
  timer = setTimeout(tick, 0);
  timer.unref();

  return {
    nextRun() {
      if (stopped) return Promise.reject(new Error("the retention job is closed"));
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    async close() {
      stopped = true;
      clearTimeout(timer);
      await running;
      for (const w of waiting.splice(0)) w.reject(new Error("the retention job is closed"));
    },
  };
}

/** One run: under the lock, delete batch after batch until none is full (or `stop()`). */
async function runOnce(deps: RetentionDeps, stop: () => boolean): Promise<RetentionRun> {
  const { database, settings, afterBatch } = deps;
  // Fixed for the run, so a busy feed cannot keep it going forever.
  const cutoffUs = BigInt(Date.now()) * 1000n - BigInt(settings.days) * dayMicros;
  return database.session(async (rows) => {
    const [lock] = await rows<{ got: boolean }>(
      sql`select pg_try_advisory_lock(${retentionLockKey}::int8) as got`,
    );
    if (lock?.got !== true) return { removed: 0, batches: 0, skipped: true };
    let removed = 0;
    let batches = 0;
    try {
      while (!stop()) {
        const [row] = await rows<{ n: number }>(sql`
          with doomed as (
            select alert_id from alerts
            where received_at < timestamptz 'epoch' + ${cutoffUs.toString()}::int8 * interval '1 microsecond'
            order by received_at limit ${settings.batchSize}
          ), deleted as (
            delete from alerts a using doomed d where a.alert_id = d.alert_id returning 1
          )
          select count(*)::int as n from deleted`);
        const n = Number(row?.n ?? 0);
        removed += n;
        batches++;
        await afterBatch?.(n);
        if (n < settings.batchSize) break;
        // Let queued inserts and other work run before the next batch.
        await yieldToEvents();
      }
    } finally {
      await rows(sql`select pg_advisory_unlock(${retentionLockKey}::int8)`);
    }
    return { removed, batches, skipped: false };
  });
}
