/**
 * Fan-out of committed alerts to live subscribers (the WebSocket connections).
 *
 * `publish` never blocks and never awaits: each subscriber has its own bounded buffer,
 * and a subscriber whose buffer is full loses that batch alone, with a warning.
 *
 * A buffer slot holds one committed batch, not one alert: a single flush can commit
 * hundreds of alerts at once, and a subscriber that keeps up must not lose any of them
 * because they arrived in one burst. The bound is on how many flushes a subscriber may
 * fall behind; the memory it pins is bounded by slots × batch size, and the alerts
 * themselves are shared by every subscriber, never copied.
 */

import type { Logger } from "../logger.js";
import { type LiveAlert, LiveBatch } from "./live-batch.js";

/** What a subscriber missed since it was last told: `count` alerts in [fromSeq, toSeq]. */
export interface DropReport {
  readonly count: number;
  readonly fromSeq: number;
  readonly toSeq: number;
}

/** A live feed of committed alerts for one consumer. */
export interface Subscription extends AsyncIterable<LiveAlert> {
  /** The alerts one batch at a time, so a writer can send a whole flush at once. */
  batches(): AsyncIterable<LiveBatch>;
  /** Alerts dropped for this subscriber because its buffer was full. */
  readonly dropped: number;
  /** The drops since the last call (undefined when none), so the consumer can be told. */
  takeDrops(): DropReport | undefined;
  /** Since when (Date.now()) this subscriber has been dropping without catching up, or 0. */
  readonly droppingSince: number;
}

/** Why alerts were not delivered to a subscriber. */
export type DropReason = "buffer_full";

/** The fan-out seam: in-process, or sequenced across instances over Redis. */
export interface Broadcaster {
  /** Subscribes until `signal` aborts or the broadcaster closes. */
  subscribe(signal: AbortSignal): Subscription;
  /** Publishes one committed alert. O(subscribers), never blocks. */
  publish(alert: LiveAlert): void;
  /** Publishes one committed batch as a single buffer slot per subscriber. */
  publishBatch(batch: LiveBatch | readonly LiveAlert[]): void;
  /** Number of live subscribers. */
  readonly size: number;
  /** Alerts dropped for slow subscribers, by reason, since start. */
  readonly drops: Readonly<Record<DropReason, number>>;
  /** Ends every subscription (after what it already buffered). */
  close(): void;
}

/** Settings of the in-process broadcaster. */
export interface BroadcasterOptions {
  /** Buffer slots (committed batches) per subscriber. */
  readonly bufferSize: number;
  readonly log: Logger;
  /** Least time between two drop warnings for one subscriber. */
  readonly warnIntervalMs?: number;
}

const done: IteratorReturnResult<undefined> = { done: true, value: undefined };

class Subscriber implements Subscription {
  readonly #queue: LiveBatch[] = [];
  #head = 0;
  #waiting: ((batch: LiveBatch | undefined) => void) | undefined;
  #ended = false;
  #dropped = 0;
  #droppedSinceWarn = 0;
  #lastWarn = 0;
  #report: { count: number; fromSeq: number; toSeq: number } | undefined;
  #droppingSince = 0;

  constructor(
    readonly id: number,
    private readonly bufferSize: number,
    private readonly log: Logger,
    private readonly warnIntervalMs: number,
    private readonly detach: (s: Subscriber) => void,
    private readonly counted: (n: number) => void,
  ) {}

  get dropped(): number {
    return this.#dropped;
  }

  get droppingSince(): number {
    return this.#droppingSince;
  }

  takeDrops(): DropReport | undefined {
    const report = this.#report;
    this.#report = undefined;
    return report;
  }

  /** Hot path: O(1), never blocks. */
  offer(batch: LiveBatch): void {
    if (this.#ended) return;
    const waiting = this.#waiting;
    if (waiting !== undefined) {
      this.#waiting = undefined;
      waiting(batch);
      return;
    }
    if (this.#queue.length - this.#head < this.bufferSize) {
      this.#queue.push(batch);
      return;
    }
    const n = batch.alerts.length;
    this.#dropped += n;
    this.#droppedSinceWarn += n;
    this.counted(n);
    const first = batch.alerts[0] as LiveAlert;
    const last = batch.alerts[n - 1] as LiveAlert;
    if (this.#report === undefined)
      this.#report = { count: n, fromSeq: first.seq, toSeq: last.seq };
    else {
      this.#report.count += n;
      this.#report.toSeq = last.seq;
    }
    const now = Date.now();
    if (this.#droppingSince === 0) this.#droppingSince = now;
    if (now - this.#lastWarn >= this.warnIntervalMs) {
      this.log.warn(
        { subscriber: this.id, dropped: this.#droppedSinceWarn, droppedTotal: this.#dropped },
        "subscriber buffer full, dropping alerts",
      );
      this.#lastWarn = now;
      this.#droppedSinceWarn = 0;
    }
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.detach(this);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(undefined);
  }

  /** Clears everything buffered (the consumer is gone). */
  discard(): void {
    this.#queue.length = 0;
    this.#head = 0;
    this.end();
  }

  #take(): Promise<LiveBatch | undefined> {
    // The consumer is taking again: it is catching up, not stalled.
    this.#droppingSince = 0;
    if (this.#head < this.#queue.length) {
      const batch = this.#queue[this.#head] as LiveBatch;
      this.#head++;
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      } else if (this.#head > 1024) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
      return Promise.resolve(batch);
    }
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.#waiting = resolve;
    });
  }

  batches(): AsyncIterable<LiveBatch> {
    return {
      [Symbol.asyncIterator]: () => ({
        next: async () => {
          const batch = await this.#take();
          return batch === undefined ? done : { done: false, value: batch };
        },
        return: async () => {
          this.discard();
          return done;
        },
      }),
    };
  }

  [Symbol.asyncIterator](): AsyncIterator<LiveAlert> {
    let current: readonly LiveAlert[] = [];
    let index = 0;
    return {
      next: async () => {
        while (index >= current.length) {
          const batch = await this.#take();
          if (batch === undefined) return done;
          current = batch.alerts;
          index = 0;
        }
        const value = current[index] as LiveAlert;
        index++;
        return { done: false, value };
      },
      return: async () => {
        this.discard();
        return done;
      },
    };
  }
}

/** The single-instance Broadcaster. */
export class InProcessBroadcaster implements Broadcaster {
  readonly #subscribers = new Set<Subscriber>();
  readonly #options: BroadcasterOptions;
  readonly #drops: Record<DropReason, number> = { buffer_full: 0 };
  #nextId = 1;
  #closed = false;

  constructor(options: BroadcasterOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#subscribers.size;
  }

  get drops(): Readonly<Record<DropReason, number>> {
    return this.#drops;
  }

  subscribe(signal: AbortSignal): Subscription {
    const sub = new Subscriber(
      this.#nextId++,
      this.#options.bufferSize,
      this.#options.log,
      this.#options.warnIntervalMs ?? 5000,
      (s) => this.#subscribers.delete(s),
      (n) => {
        this.#drops.buffer_full += n;
      },
    );
    if (this.#closed || signal.aborted) {
      sub.end();
      return sub;
    }
    this.#subscribers.add(sub);
    signal.addEventListener("abort", () => sub.discard(), { once: true });
    return sub;
  }

  publish(alert: LiveAlert): void {
    this.publishBatch(LiveBatch.of([alert]));
  }

  publishBatch(batch: LiveBatch | readonly LiveAlert[]): void {
    const live =
      batch instanceof LiveBatch ? batch : batch.length > 0 ? LiveBatch.of(batch) : undefined;
    if (live === undefined || live.alerts.length === 0) return;
    for (const sub of this.#subscribers) sub.offer(live);
  }

  close(): void {
    this.#closed = true;
    for (const sub of [...this.#subscribers]) sub.end();
  }
}
