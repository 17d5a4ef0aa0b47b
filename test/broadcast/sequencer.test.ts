/**
 * The Sequencer puts batches from any origin in seq order and reads gaps back from the
 * database; these tests drive it with a fake FeedSource and fake timers. The last ones
 * check that the LiveFeed hands its subscribers what the sequencer emits, in seq order.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { JsonAlert, type LiveAlert, LiveBatch } from "../../src/broadcast/live-batch.js";
import { startLiveFeed } from "../../src/broadcast/live-feed.js";
import {
  type FeedSource,
  Sequencer,
  type SequencerOptions,
} from "../../src/broadcast/sequencer.js";
import { RecordingLogger } from "../support/recording-logger.js";

function alert(seq: number): LiveAlert {
  return new JsonAlert(
    seq,
    `00000000-0000-4000-8000-${seq.toString(16).padStart(12, "0")}`,
    "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
    "CRITICAL",
    "FILE",
    `{"seq":${seq}}`,
  );
}

/** The batch of every seq in [from, to] (a committed batch without holes). */
function run(from: number, to: number): LiveBatch {
  const alerts: LiveAlert[] = [];
  for (let s = from; s <= to; s++) alerts.push(alert(s));
  return new LiveBatch(alerts, from, to);
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => {};
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** The database as the sequencer sees it: committed rows by seq and the counter. */
class FakeSource implements FeedSource {
  readonly rows = new Map<number, LiveAlert>();
  latest = 0;
  /** Every call, e.g. `latest` or `between 0 3 100`. */
  readonly calls: string[] = [];
  /** How many of the next calls fail. */
  failNext = 0;
  /** When set, the next `alertsBetween` waits for it before answering. */
  hold: Deferred<void> | undefined;

  /** Commits rows with these seqs (the counter moves to the highest). */
  commit(...seqs: number[]): void {
    for (const s of seqs) {
      this.rows.set(s, alert(s));
      this.latest = Math.max(this.latest, s);
    }
  }

  async latestSeq(): Promise<number> {
    this.calls.push("latest");
    await this.#gate(undefined);
    return this.latest;
  }

  async alertsBetween(afterSeq: number, uptoSeq: number, limit: number): Promise<LiveAlert[]> {
    this.calls.push(`between ${afterSeq} ${uptoSeq} ${limit}`);
    const hold = this.hold;
    this.hold = undefined;
    await this.#gate(hold);
    return [...this.rows.values()]
      .filter((a) => a.seq > afterSeq && a.seq <= uptoSeq)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit);
  }

  async #gate(hold: Deferred<void> | undefined): Promise<void> {
    if (hold !== undefined) await hold.promise;
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error("connection refused");
    }
  }
}

/** What the sequencer emitted, and a way to await a seq. */
class Emitted {
  readonly batches: LiveBatch[] = [];
  #waiters: Array<{ seq: number; resolve: () => void }> = [];

  readonly emit = (batch: LiveBatch): void => {
    this.batches.push(batch);
    const last = this.seqs.at(-1) ?? 0;
    this.#waiters = this.#waiters.filter((w) => {
      if (last < w.seq) return true;
      w.resolve();
      return false;
    });
  };

  get seqs(): number[] {
    return this.batches.flatMap((b) => b.alerts.map((a) => a.seq));
  }

  /** Resolves once an alert with seq ≥ `seq` was emitted. */
  through(seq: number): Promise<void> {
    if ((this.seqs.at(-1) ?? 0) >= seq) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ seq, resolve }));
  }
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Lets every promise the sequencer is waiting on settle (the fake source does no I/O). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

describe("Sequencer", () => {
  let source: FakeSource;
  let out: Emitted;
  let log: RecordingLogger;
  const sequencers: Sequencer[] = [];

  function start(initialSeq: number, options: Partial<SequencerOptions> = {}): Sequencer {
    const sequencer = new Sequencer(initialSeq, {
      source,
      emit: out.emit,
      gapRepairMs: 250,
      pollMs: 0,
      repairPageSize: 100,
      log,
      ...options,
    });
    sequencers.push(sequencer);
    return sequencer;
  }

  beforeEach(() => {
    vi.useFakeTimers();
    source = new FakeSource();
    out = new Emitted();
    log = new RecordingLogger();
  });
  afterEach(() => {
    for (const s of sequencers.splice(0)) s.close();
    vi.useRealTimers();
  });

  it("emits batches that arrive in seq order at once and unchanged, without reading the database", () => {
    source.commit(...range(1, 10));
    const sequencer = start(2);
    const batches = [run(3, 5), run(6, 6), run(7, 10)];

    for (const batch of batches) sequencer.accept(batch);

    // The very same objects: the frame each batch caches is shared by every subscriber.
    expect(out.batches).toEqual(batches);
    expect(out.batches.every((b, i) => b === batches[i])).toBe(true);
    expect(sequencer.watermark).toBe(10);
    expect(source.calls).toEqual([]);
  });

  it("holds a batch that starts past the next seq until the batches before it arrive, then emits it after them", async () => {
    const sequencer = start(0);

    sequencer.accept(run(6, 8));
    sequencer.accept(run(3, 5));
    expect(out.batches).toEqual([]);
    expect(sequencer.watermark).toBe(0);

    sequencer.accept(run(1, 2));

    expect(out.seqs).toEqual(range(1, 8));
    expect(out.batches.map((b) => [b.fromSeq, b.toSeq])).toEqual([
      [1, 2],
      [3, 5],
      [6, 8],
    ]);
    expect(sequencer.watermark).toBe(8);
    // The gap closed before gapRepairMs: nothing is read back, then or later.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(source.calls).toEqual([]);
  });

  it("reads a gap that is still open after gapRepairMs back from the database, then emits the held batch, each alert once in seq order", async () => {
    // Another instance committed 1..3, but its message never came.
    source.commit(...range(1, 5));
    const sequencer = start(0, { gapRepairMs: 250 });

    sequencer.accept(run(4, 5));
    await vi.advanceTimersByTimeAsync(249);
    expect(source.calls).toEqual([]);
    expect(out.batches).toEqual([]);

    await vi.advanceTimersByTimeAsync(1);
    await out.through(5);

    // Only the gap itself is read: the held batch is the one that arrived.
    expect(source.calls).toEqual(["between 0 3 100"]);
    expect(out.seqs).toEqual(range(1, 5));
    expect(sequencer.repaired).toBe(3);
    expect(sequencer.watermark).toBe(5);
  });

  it("trims a batch that overlaps what was emitted to its new alerts and ignores one entirely below the watermark", () => {
    const sequencer = start(0);

    sequencer.accept(run(1, 3));
    sequencer.accept(run(2, 5));
    sequencer.accept(run(1, 4));
    // Two overlapping held batches with the same start: the longer one wins.
    sequencer.accept(run(8, 9));
    sequencer.accept(run(8, 10));
    sequencer.accept(run(7, 8));
    sequencer.accept(run(6, 6));

    expect(out.seqs).toEqual(range(1, 10));
    expect(out.batches.map((b) => [b.fromSeq, b.toSeq])).toEqual([
      [1, 3],
      [4, 5],
      [6, 6],
      [7, 8],
      [9, 10],
    ]);
    expect(sequencer.watermark).toBe(10);
  });

  it("steps over numbers without rows, in a batch and in a read-back that spans several pages", async () => {
    // 3, 6, 8 and 9 were numbered but never stored.
    source.commit(1, 2, 4, 5, 7, 10);
    const sequencer = start(0, { repairPageSize: 2 });

    sequencer.accept(new LiveBatch([alert(10)], 9, 10));
    await vi.advanceTimersByTimeAsync(250);
    await out.through(10);

    expect(out.seqs).toEqual([1, 2, 4, 5, 7, 10]);
    // A full page covers up to its last row; a short page covers the rest of the range.
    expect(source.calls).toEqual(["between 0 8 2", "between 2 8 2", "between 5 8 2"]);
    expect(sequencer.watermark).toBe(10);

    // A batch whose range starts with a hole (11, 12) follows on directly.
    sequencer.accept(new LiveBatch([alert(13)], 11, 13));
    sequencer.accept(run(14, 14));
    expect(out.seqs.slice(-2)).toEqual([13, 14]);
    expect(source.calls).toHaveLength(3);
  });

  it("finds on its poll the commits that no message announced", async () => {
    const sequencer = start(0, { pollMs: 1_000 });
    source.commit(1, 2, 3);

    await vi.advanceTimersByTimeAsync(999);
    expect(source.calls).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await out.through(3);
    expect(out.seqs).toEqual([1, 2, 3]);

    // It keeps polling.
    source.commit(4, 5);
    await vi.advanceTimersByTimeAsync(1_000);
    await out.through(5);
    expect(out.seqs).toEqual(range(1, 5));
    expect(sequencer.repaired).toBe(5);
  });

  it("checkNow reads everything up to the newest committed seq at once", async () => {
    const sequencer = start(2);
    source.commit(...range(1, 6));

    sequencer.checkNow();
    await out.through(6);

    expect(source.calls).toEqual(["latest", "between 2 6 100"]);
    expect(out.seqs).toEqual(range(3, 6));
    expect(sequencer.watermark).toBe(6);
  });

  it("retries a source that fails, with a warning, and then emits the gap and the held batch without loss or duplicate", async () => {
    source.commit(...range(1, 4));
    const sequencer = start(0, { gapRepairMs: 100 });
    source.failNext = 2;

    sequencer.accept(run(4, 4));
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    expect(out.batches).toEqual([]);
    expect(log.messages("warn")).toEqual(["live feed could not read missed alerts; will retry"]);

    await vi.advanceTimersByTimeAsync(100);
    await settle();
    expect(out.batches).toEqual([]);
    expect(log.messages("warn")).toHaveLength(2);

    await vi.advanceTimersByTimeAsync(100);
    await out.through(4);
    expect(out.seqs).toEqual(range(1, 4));
    expect(sequencer.watermark).toBe(4);
    expect(source.calls).toEqual(["between 0 3 100", "between 0 3 100", "between 0 3 100"]);
  });

  it("keeps polling after a poll fails", async () => {
    const sequencer = start(0, { pollMs: 500 });
    source.commit(1, 2);
    source.failNext = 1;

    await vi.advanceTimersByTimeAsync(500);
    await settle();
    expect(out.batches).toEqual([]);

    await vi.advanceTimersByTimeAsync(500);
    await out.through(2);
    expect(out.seqs).toEqual([1, 2]);
    expect(sequencer.watermark).toBe(2);
  });

  it("emits each alert once when the message for a gap arrives while the gap is being read back, and the feed then continues in order", async () => {
    source.commit(...range(1, 6));
    const sequencer = start(0, { gapRepairMs: 100 });
    const slowRead = deferred<void>();
    source.hold = slowRead;

    sequencer.accept(run(4, 4));
    await vi.advanceTimersByTimeAsync(100);
    expect(source.calls).toEqual(["between 0 3 100"]);
    // The late message covers the gap and more while the read is still out.
    sequencer.accept(run(1, 5));
    expect(out.seqs).toEqual(range(1, 5));

    slowRead.resolve();
    await settle();
    expect(out.seqs).toEqual(range(1, 5));
    expect(sequencer.watermark).toBe(5);

    // The next batch is the next one: nothing is held, nothing is read again.
    sequencer.accept(run(6, 6));
    expect(out.seqs).toEqual(range(1, 6));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(source.calls).toEqual(["between 0 3 100"]);
  });

  it("repairs a gap that opened while a read-back was already running", async () => {
    // A poll (or a Redis reconnect) starts reading; meanwhile batch 5 arrives ahead of 3..4.
    source.commit(1, 2);
    const sequencer = start(0, { gapRepairMs: 100 });
    const slowRead = deferred<void>();
    source.hold = slowRead;
    sequencer.checkNow();
    await settle();
    expect(source.calls).toEqual(["latest", "between 0 2 100"]);

    source.commit(3, 4, 5);
    sequencer.accept(run(5, 5));
    await vi.advanceTimersByTimeAsync(100); // the gap timer fires while the read runs
    slowRead.resolve();
    await out.through(2);
    expect(out.seqs).toEqual([1, 2]);

    // 3..4 never come as a message: the gap must still be read back.
    await vi.advanceTimersByTimeAsync(100);
    await settle();
    expect(out.seqs).toEqual(range(1, 5));
    expect(sequencer.watermark).toBe(5);
  });

  it("keeps going when the consumer throws, logging the error", () => {
    let calls = 0;
    const sequencer = start(0, {
      emit: () => {
        calls++;
        throw new Error("consumer bug");
      },
    });

    sequencer.accept(run(1, 1));
    sequencer.accept(run(2, 2));

    expect(calls).toBe(2);
    expect(sequencer.watermark).toBe(2);
    expect(log.messages("error")).toEqual(["live feed consumer threw", "live feed consumer threw"]);
  });

  it("emits nothing and reads nothing once closed", async () => {
    source.commit(...range(1, 5));
    const sequencer = start(0, { pollMs: 100, gapRepairMs: 100 });
    sequencer.accept(run(4, 5));

    sequencer.close();
    sequencer.accept(run(1, 3));
    sequencer.checkNow();
    await vi.advanceTimersByTimeAsync(1_000);

    expect(out.batches).toEqual([]);
    expect(source.calls).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("LiveFeed", () => {
  it("delivers local batches committed out of order to subscribers in seq order, and its watermark covers only what was delivered", async () => {
    const source = new FakeSource();
    source.commit(1, 2);
    const feed = await startLiveFeed({
      source,
      bufferSize: 16,
      gapRepairMs: 60_000,
      pollMs: 0,
      log: new RecordingLogger(),
    });
    try {
      expect(feed.watermark).toBe(2);
      expect(feed.redisConnected).toBeUndefined();
      const subscription = feed.subscribe(new AbortController().signal);

      // Two flushes of one instance answered out of order: 6..8 before 3..5.
      feed.publishBatch([alert(6), alert(7), alert(8)]);
      expect(feed.watermark).toBe(2);
      feed.publishBatch([alert(3), alert(4), alert(5)]);
      feed.publishBatch([]);
      expect(feed.watermark).toBe(8);
      feed.publish(alert(9));

      const received: number[] = [];
      for await (const a of subscription) {
        received.push(a.seq);
        if (a.seq === 9) break;
      }
      expect(received).toEqual(range(3, 9));
      expect(feed.repaired).toBe(0);
    } finally {
      feed.close();
    }
  });

  it("a subscriber that joins after some batches gets only later ones, each once", async () => {
    const source = new FakeSource();
    const feed = await startLiveFeed({
      source,
      bufferSize: 16,
      gapRepairMs: 60_000,
      pollMs: 0,
      log: new RecordingLogger(),
    });
    try {
      feed.publishBatch(run(1, 2));
      const subscription = feed.subscribe(new AbortController().signal);
      expect(feed.watermark).toBe(2);
      feed.publishBatch(run(1, 4)); // repeats 1..2
      feed.publishBatch(run(5, 5));
      feed.close();
      const received: number[] = [];
      for await (const a of subscription) received.push(a.seq);
      expect(received).toEqual([3, 4, 5]);
    } finally {
      feed.close();
    }
  });
});
