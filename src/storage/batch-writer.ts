/**
 * The one batch writer shared by every agent stream. Alerts wait in a queue until the
 * flush interval passes or a batch fills up; each batch is one INSERT in its own
 * transaction, and each alert's callback runs only after that transaction committed.
 *
 * Quiet streams do not wait behind busy ones. An alert enqueued as `quiet` (its stream
 * sends few events per second) while the writer holds a busy stream's alerts (queued or
 * being committed) goes to a queue of its own, committed in the next free flush slot
 * ahead of the main queue, in a batch of its own; but never two such batches in a row
 * while the main queue has a batch ready, so quiet alerts that keep coming cannot starve
 * it. Without this, while one host bursts, every other host's alert would wait for the
 * next full batch of the burst, or for the flush interval when the burst is rate-limited,
 * and then for that batch's longer commit; with it, a storm from one host leaves the
 * others' ACK latency as it was. When only quiet streams are sending, their alerts wait
 * for the flush interval like any other, so a trickle still goes out in batches. One
 * stream's alerts may be committed out of the order they were sent (agents match ACKs by
 * alert_id; nothing depends on that order).
 */
import type { Logger } from "../logger.js";
import type { AlertStore } from "./alert-store.js";
import { type NewAlert, StoredAlert } from "./alert-types.js";

/** How one alert's write ended: stored now, or already stored earlier. */
export type WriteOutcome =
  | { readonly status: "inserted"; readonly seq: number }
  | { readonly status: "duplicate" };

/** Why an alert was not stored; `message` is safe to send to the agent. */
export class WriteError extends Error {
  override readonly name = "WriteError";
  constructor(
    message: string,
    readonly reason: "database" | "rejected" | "closed",
  ) {
    super(message);
  }
}

/** Called once per alert, after its batch committed (or failed). */
export type WriteCallback = (
  error: WriteError | undefined,
  outcome: WriteOutcome | undefined,
) => void;

/** Settings of the batch writer. */
export interface BatchWriterOptions {
  readonly flushIntervalMs: number;
  readonly batchSize: number;
  readonly maxConcurrentFlushes: number;
  /** Pending alerts at which `hasRoom()` turns false. */
  readonly maxPending: number;
  /** Receives each committed batch's newly inserted alerts, in seq order. */
  readonly onCommitted: (alerts: readonly StoredAlert[]) => void;
  /** Told of every INSERT statement: alerts in it and seconds it took, committed or not. */
  readonly onFlush?: (alerts: number, seconds: number) => void;
  readonly log: Logger;
}

interface Entry {
  readonly alert: NewAlert;
  readonly done: WriteCallback;
  readonly quiet: boolean;
}

/**
 * Batches alerts into single INSERT statements.
 *
 * Failures never throw out of the writer: a batch that fails on bad data is split to
 * find the row at fault, so the others still get stored; a batch that fails because
 * the database is unreachable answers each alert with a WriteError, and the agent,
 * which keeps every alert until it is ACKed, sends it again.
 */
export class BatchWriter {
  readonly #store: AlertStore;
  readonly #options: BatchWriterOptions;
  #pending: Entry[] = [];
  /** Quiet streams' alerts that arrived while the writer held a busy stream's alerts. */
  #quiet: Entry[] = [];
  /** Entries in #pending and in batches being committed that came from busy streams. */
  #busyEntries = 0;
  /** Whether the last batch started was quiet streams': the next one is the main queue's if ready. */
  #lastStartedQuiet = false;
  /** How many entries at the head of #pending have waited a full interval. */
  #due = 0;
  #timer: NodeJS.Timeout | undefined;
  #active = 0;
  #closed = false;
  #roomWaiters: Array<() => void> = [];
  /** Date.now() of the last batch that failed because the database did not answer. */
  #failedAt = 0;
  #failure = "";
  #idleWaiters: Array<() => void> = [];

  constructor(store: AlertStore, options: BatchWriterOptions) {
    this.#store = store;
    this.#options = options;
  }

  /** Alerts queued and not yet handed to the database. */
  get pendingCount(): number {
    return this.#pending.length + this.#quiet.length;
  }

  /** Why the last batch failed, while the database has not taken a batch since; else undefined. */
  get failing(): string | undefined {
    return this.#failedAt === 0 ? undefined : this.#failure;
  }

  /** Marks the database as taking writes again (a probe got through). */
  recovered(): void {
    this.#failedAt = 0;
  }

  /** Whether more alerts may be queued without going over `maxPending`. */
  hasRoom(): boolean {
    return this.#pending.length + this.#quiet.length < this.#options.maxPending;
  }

  /** Resolves when `hasRoom()` is true again (or the writer closed). */
  waitForRoom(): Promise<void> {
    if (this.hasRoom() || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /**
   * Queues one alert; `done` runs after its batch committed or failed. O(1). `quiet`:
   * its stream sends few events per second, so it may skip ahead of busy streams' alerts
   * (see the class comment).
   */
  enqueue(alert: NewAlert, done: WriteCallback, quiet = false): void {
    if (this.#closed) {
      done(
        new WriteError("not stored: the server is shutting down; send it again", "closed"),
        undefined,
      );
      return;
    }
    if (quiet && this.#busyEntries > 0) {
      this.#quiet.push({ alert, done, quiet });
      this.#drain();
      return;
    }
    if (!quiet && this.#busyEntries++ === 0 && this.#pending.length > 0) {
      // The first busy stream's alert: everything queued so far is quiet streams' alerts,
      // which would now wait for a batch that the busy stream fills.
      for (const e of this.#pending) this.#quiet.push(e);
      this.#pending = [];
      this.#due = 0;
    }
    this.#pending.push({ alert, done, quiet });
    if (this.#pending.length >= this.#options.batchSize || this.#quiet.length > 0) this.#drain();
    else if (this.#timer === undefined) this.#arm();
  }

  /** Promise form of `enqueue`, for callers off the hot path. */
  write(alert: NewAlert): Promise<WriteOutcome> {
    return new Promise((resolve, reject) => {
      this.enqueue(alert, (error, outcome) => {
        if (error !== undefined) reject(error);
        else resolve(outcome as WriteOutcome);
      });
    });
  }

  /** Commits everything queued now, and resolves when no batch is in progress. */
  async flush(): Promise<void> {
    this.#due = this.#pending.length;
    this.#drain();
    while (this.#active > 0 || this.#pending.length > 0 || this.#quiet.length > 0) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      this.#due = this.#pending.length;
      this.#drain();
    }
  }

  /** Stops taking alerts, commits what is queued, and waits for it. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  #arm(): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#due = this.#pending.length;
      this.#drain();
    }, this.#options.flushIntervalMs);
  }

  #drain(): void {
    const { batchSize, maxConcurrentFlushes } = this.#options;
    while (this.#active < maxConcurrentFlushes) {
      const mainReady =
        this.#pending.length > 0 && (this.#due > 0 || this.#pending.length >= batchSize);
      // Quiet streams' alerts go first, but never twice in a row while the main queue has
      // a batch ready: quiet alerts that keep coming must not starve it.
      if (this.#quiet.length > 0 && !(this.#lastStartedQuiet && mainReady)) {
        this.#lastStartedQuiet = true;
        this.#start(this.#quiet.splice(0, batchSize));
        continue;
      }
      if (!mainReady) break;
      const take = Math.min(batchSize, this.#pending.length);
      if (take === 0) break;
      this.#due = Math.max(0, this.#due - take);
      this.#lastStartedQuiet = false;
      this.#start(this.#pending.splice(0, take));
    }
    if (this.#pending.length > 0 && this.#timer === undefined && this.#due === 0) this.#arm();
  }

  #start(batch: Entry[]): void {
    this.#active++;
    void this.#run(batch).finally(() => {
      this.#active--;
      for (const e of batch) if (!e.quiet) this.#busyEntries--;
      this.#afterBatch();
    });
  }

  #afterBatch(): void {
    if (this.hasRoom()) for (const wake of this.#roomWaiters.splice(0)) wake();
    this.#drain();
    if (this.#active === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** Stores one batch and answers every entry in it. Never rejects. */
  async #run(batch: Entry[]): Promise<void> {
    // The same alert_id twice in one batch (an agent replay racing its original) is
    // inserted once; every copy is answered.
    const unique = new Map<string, NewAlert>();
    for (const e of batch) if (!unique.has(e.alert.alertId)) unique.set(e.alert.alertId, e.alert);
    let inserted: Map<string, number>;
    const started = performance.now();
    try {
      inserted = await this.#store.insertAlerts([...unique.values()]);
    } catch (err) {
      this.#flushed(unique.size, started);
      if (isDataError(err) && unique.size > 1) {
        // One row the database refuses must not cost its neighbours: split and retry.
        const half = Math.ceil(batch.length / 2);
        await this.#run(batch.slice(0, half));
        await this.#run(batch.slice(half));
        return;
      }
      const error = isDataError(err)
        ? new WriteError("not stored: the database rejected this event", "rejected")
        : new WriteError("not stored: the database is unavailable; send it again", "database");
      this.#options.log.error(
        { err, batchSize: batch.length, reason: error.reason },
        "alert batch failed",
      );
      if (error.reason === "database") {
        this.#failedAt = Date.now();
        this.#failure = err instanceof Error ? err.message : String(err);
      }
      for (const e of batch) safeCall(e.done, error, undefined, this.#options.log);
      return;
    }
    this.#flushed(unique.size, started);
    this.#failedAt = 0;
    const published: StoredAlert[] = [];
    for (const [alertId, seq] of inserted) {
      published.push(new StoredAlert(unique.get(alertId) as NewAlert, seq));
    }
    published.sort((a, b) => a.seq - b.seq);
    try {
      this.#options.onCommitted(published);
    } catch (err) {
      this.#options.log.error({ err }, "publishing a committed batch failed");
    }
    const duplicate: WriteOutcome = { status: "duplicate" };
    for (const e of batch) {
      const seq = inserted.get(e.alert.alertId);
      // Only the first copy of an alert_id in the batch counts as the insert.
      if (seq !== undefined && unique.get(e.alert.alertId) === e.alert) {
        safeCall(e.done, undefined, { status: "inserted", seq }, this.#options.log);
      } else {
        safeCall(e.done, undefined, duplicate, this.#options.log);
      }
    }
  }

  #flushed(alerts: number, startedMs: number): void {
    try {
      this.#options.onFlush?.(alerts, (performance.now() - startedMs) / 1000);
    } catch (err) {
      this.#options.log.error({ err }, "recording a flush failed");
    }
  }
}

function safeCall(
  done: WriteCallback,
  error: WriteError | undefined,
  outcome: WriteOutcome | undefined,
  log: Logger,
): void {
  try {
    done(error, outcome);
  } catch (err) {
    log.error({ err }, "alert write callback threw");
  }
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity violation): the row, not the database. */
function isDataError(err: unknown): boolean {
  const code = sqlState(err);
  return code !== undefined && (code.startsWith("22") || code.startsWith("23"));
}

function sqlState(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== null && typeof e === "object" && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}
