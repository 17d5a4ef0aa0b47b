/**
 * Puts the live feed in seq order and fills its gaps.
 *
 * Batches reach an instance from its own commits and, with several instances, from the
 * others over Redis, which may deliver late or not at all. The sequencer emits every
 * committed alert exactly once, in seq order: a batch that starts past the next expected
 * seq waits, and if the gap is still open after `gapRepairMs` the missing range is read
 * back from the database. Sequence numbers are handed out in commit order, so once a
 * higher seq is known, everything below it is final and the read-back is complete.
 * A periodic poll of the newest seq catches commits that no message announced.
 */
import type { Logger } from "../logger.js";
import { LiveBatch } from "./live-batch.js";

/** Where the sequencer reads what it missed. */
export interface FeedSource {
  /** The newest committed seq. */
  latestSeq(): Promise<number>;
  /** Committed alerts with afterSeq < seq ≤ uptoSeq, in seq order, at most `limit`. */
  alertsBetween(afterSeq: number, uptoSeq: number, limit: number): Promise<LiveBatch["alerts"]>;
}

/** Settings of the sequencer. */
export interface SequencerOptions {
  readonly source: FeedSource;
  /** Receives batches in seq order, each alert once. Must not throw or block. */
  readonly emit: (batch: LiveBatch) => void;
  /** How long a gap may stay open before it is read back from the database. */
  readonly gapRepairMs: number;
  /** How often to look for commits that no message announced (0: never). */
  readonly pollMs: number;
  /** Rows read back per query. */
  readonly repairPageSize: number;
  readonly log: Logger;
}

/** Orders batches by seq and repairs gaps; see the module comment. */
export class Sequencer {
  readonly #options: SequencerOptions;
  /** Every alert with seq ≤ this has been emitted (or does not exist). */
  #watermark: number;
  /** Batches that start past watermark + 1, by fromSeq. */
  readonly #pending = new Map<number, LiveBatch>();
  #gapTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #repairing = false;
  #closed = false;
  /** Alerts read back from the database because no message brought them. */
  repaired = 0;

  constructor(initialSeq: number, options: SequencerOptions) {
    this.#watermark = initialSeq;
    this.#options = options;
    if (options.pollMs > 0) this.#schedulePoll();
  }

  /** Every alert with seq ≤ this has been emitted. */
  get watermark(): number {
    return this.#watermark;
  }

  /** Takes a batch from any origin. O(1) when it is the next one. */
  accept(batch: LiveBatch): void {
    if (this.#closed || batch.toSeq <= this.#watermark) return;
    if (batch.fromSeq > this.#watermark + 1) {
      const held = this.#pending.get(batch.fromSeq);
      if (held === undefined || held.toSeq < batch.toSeq) this.#pending.set(batch.fromSeq, batch);
      this.#armGapTimer();
      return;
    }
    this.#emit(batch);
    this.#drainPending();
  }

  /** Looks for missed commits now (e.g. after Redis reconnected). */
  checkNow(): void {
    void this.#repair(undefined);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#gapTimer);
    clearTimeout(this.#pollTimer);
    this.#pending.clear();
  }

  #emit(batch: LiveBatch): void {
    const w = this.#watermark;
    let out = batch;
    if (batch.fromSeq <= w) {
      // Overlaps what was emitted: keep only the new part.
      const fresh = batch.alerts.filter((a) => a.seq > w);
      out = new LiveBatch(fresh, w + 1, batch.toSeq);
    }
    this.#watermark = batch.toSeq;
    if (out.alerts.length > 0) {
      try {
        this.#options.emit(out);
      } catch (err) {
        this.#options.log.error({ err }, "live feed consumer threw");
      }
    }
  }

  #drainPending(): void {
    while (this.#pending.size > 0) {
      let next: LiveBatch | undefined;
      for (const [from, batch] of this.#pending) {
        if (batch.toSeq <= this.#watermark) {
          this.#pending.delete(from);
        } else if (from <= this.#watermark + 1 && (next === undefined || from < next.fromSeq)) {
          next = batch;
        }
      }
      if (next === undefined) break;
      this.#pending.delete(next.fromSeq);
      this.#emit(next);
    }
    if (this.#pending.size === 0) {
      clearTimeout(this.#gapTimer);
      this.#gapTimer = undefined;
    }
  }

  #armGapTimer(): void {
    if (this.#gapTimer !== undefined) return;
    this.#gapTimer = setTimeout(() => {
      this.#gapTimer = undefined;
      if (this.#pending.size > 0) void this.#repair(this.#lowestPending() - 1);
    }, this.#options.gapRepairMs);
    this.#gapTimer.unref();
  }

  #lowestPending(): number {
    let low = Number.POSITIVE_INFINITY;
    for (const from of this.#pending.keys()) low = Math.min(low, from);
    return low;
  }

  #schedulePoll(): void {
    this.#pollTimer = setTimeout(() => {
      void this.#repair(undefined).finally(() => {
        if (!this.#closed) this.#schedulePoll();
      });
    }, this.#options.pollMs);
    this.#pollTimer.unref();
  }

  /** Reads back (watermark, upto] from the database; `upto` undefined: up to the newest. */
  async #repair(upto: number | undefined): Promise<void> {
    if (this.#repairing || this.#closed) return;
    this.#repairing = true;
    const { source, repairPageSize, log } = this.#options;
    try {
      const target = upto ?? (await source.latestSeq());
      while (!this.#closed && this.#watermark < target) {
        const after = this.#watermark;
        const alerts = await source.alertsBetween(after, target, repairPageSize);
        if (this.#watermark !== after) continue; // a message filled part of it meanwhile
        const last = alerts[alerts.length - 1];
        // A short page reaches the target: the numbers without rows do not exist.
        const covered = alerts.length < repairPageSize || last === undefined ? target : last.seq;
        this.repaired += alerts.length;
        this.#emit(new LiveBatch(alerts, after + 1, covered));
        this.#drainPending();
      }
    } catch (err) {
      log.warn({ err }, "live feed could not read missed alerts; will retry");
    } finally {
      this.#repairing = false;
      // A gap timer that fired while this read ran was skipped, and a batch held since
      // may still wait for numbers this read did not cover (or a failed read): retry.
      if (!this.#closed && this.#pending.size > 0) this.#armGapTimer();
    }
  }
}
