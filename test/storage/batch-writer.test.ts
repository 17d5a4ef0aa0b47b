/**
 * The batch writer over the real store, on every database backend: when batches go
 * out, idempotency, failures (database down, one bad row), close and back-pressure.
 */
import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import type { NewAlert, StoredAlert } from "../../src/storage/alert-types.js";
import {
  BatchWriter,
  type BatchWriterOptions,
  type WriteError,
  type WriteOutcome,
} from "../../src/storage/batch-writer.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { RecordingLogger } from "../support/recording-logger.js";

/** Far longer than any test: only size, flush() or close() can send a batch. */
const never = 3_600_000;

/** The store, counting each insertAlerts call and its batch size, with failures on demand. */
class StoreProbe implements AlertStore {
  readonly batchSizes: number[] = [];
  /** When set, insertAlerts rejects with this instead of reaching the database. */
  failWith: Error | undefined;
  /** When set, the seqs are reported in reverse order (the writer must sort). */
  reverseResult = false;

  constructor(private readonly inner: AlertStore) {}

  upsertHost(host: Parameters<AlertStore["upsertHost"]>[0]): Promise<{ hostId: string }> {
    return this.inner.upsertHost(host);
  }

  findHostname(hostId: string): Promise<string | undefined> {
    return this.inner.findHostname(hostId);
  }

  async insertAlerts(alerts: readonly NewAlert[]): Promise<Map<string, number>> {
    this.batchSizes.push(alerts.length);
    if (this.failWith !== undefined) throw this.failWith;
    const result = await this.inner.insertAlerts(alerts);
    return this.reverseResult ? new Map([...result].reverse()) : result;
  }
}

/** What one write ended with, once it did. */
interface Settled {
  readonly error: WriteError | undefined;
  readonly outcome: WriteOutcome | undefined;
}

/** One enqueued alert: `settled` fills in when its callback runs, and `done` resolves then. */
interface Tracked {
  readonly settled: Settled | undefined;
  readonly done: Promise<Settled>;
}

/** Enqueues `alert` (from a quiet stream if `quiet`) and tracks how it ends. */
function track(writer: BatchWriter, alert: NewAlert, quiet = false): Tracked {
  let settle: (s: Settled) => void = () => {};
  const record: { settled: Settled | undefined; done: Promise<Settled> } = {
    settled: undefined,
    done: new Promise((resolve) => {
      settle = resolve;
    }),
  };
  writer.enqueue(
    alert,
    (error, outcome) => {
      record.settled = { error, outcome };
      settle(record.settled);
    },
    quiet,
  );
  return record;
}

/** A connection-class failure, as node-postgres reports a dropped server. */
function connectionError(): Error {
  return Object.assign(new Error("Connection terminated unexpectedly"), { code: "08006" });
}

/** 2026-02-25T19:25:01.123456Z */
const baseUs = 1_772_047_501_123_456n;

describe.each(backends)("BatchWriter [%s]", (kind) => {
  let database: TestDatabase;
  let store: AlertStore;
  let hostId: string;
  const writers: BatchWriter[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    store = createAlertStore(database);
    ({ hostId } = await store.upsertHost({
      hostname: "writer-host",
      platform: "linux",
      agentVersion: "1.0.0",
    }));
  });
  afterEach(async () => {
    vi.useRealTimers();
    for (const writer of writers.splice(0)) await writer.close();
  });
  afterAll(async () => {
    await database?.dispose();
  });

  function newAlert(overrides: Partial<NewAlert> = {}): NewAlert {
    return {
      alertId: randomUUID(),
      hostId,
      hostname: "writer-host",
      timestampUs: baseUs,
      tripwireType: "FILE",
      ruleName: "etc-passwd-write",
      severity: "CRITICAL",
      eventDetailJson: '{"path":"/etc/passwd"}',
      receivedAtUs: baseUs + 1_000n,
      ...overrides,
    };
  }

  /** A writer over a fresh probe of the real store; closed after the test. */
  function setup(options: Partial<BatchWriterOptions> = {}): {
    writer: BatchWriter;
    probe: StoreProbe;
    committed: StoredAlert[][];
    log: RecordingLogger;
  } {
    const probe = new StoreProbe(store);
    const committed: StoredAlert[][] = [];
    const log = new RecordingLogger();
    const writer = new BatchWriter(probe, {
      flushIntervalMs: never,
      batchSize: 1000,
      maxConcurrentFlushes: 1,
      maxPending: 100_000,
      onCommitted: (alerts) => {
        if (alerts.length > 0) committed.push([...alerts]);
      },
      log,
      ...options,
    });
    writers.push(writer);
    return { writer, probe, committed, log };
  }

  async function stored(ids: readonly string[]): Promise<Array<{ alert_id: string; seq: number }>> {
    const rows = await database.rows<{ alert_id: string; seq: string }>(
      sql`select alert_id::text as alert_id, seq::text as seq from alerts
          where alert_id = any(${sql.param(ids)}::uuid[]) order by alerts.seq`,
    );
    return rows.map((r) => ({ alert_id: r.alert_id, seq: Number(r.seq) }));
  }

  it("commits a lone alert only once the flush interval has passed", async () => {
    // Only the writer's timer is faked; native timers that drivers cleared stay cleared.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"], shouldClearNativeTimers: true });
    const { writer, probe } = setup({ flushIntervalMs: 100, batchSize: 1000 });
    const alert = newAlert();
    const write = track(writer, alert);

    // Real database round trips pass; without the timer nothing is sent.
    await database.ping();
    await database.ping();
    expect(probe.batchSizes).toEqual([]);
    expect(writer.pendingCount).toBe(1);
    vi.advanceTimersByTime(99);
    expect(probe.batchSizes).toEqual([]);
    expect(write.settled).toBeUndefined();

    vi.advanceTimersByTime(1);
    expect(probe.batchSizes).toEqual([1]);
    expect(writer.pendingCount).toBe(0);
    vi.useRealTimers();
    await writer.flush();
    expect(write.settled?.error).toBeUndefined();
    expect(write.settled?.outcome?.status).toBe("inserted");
    expect(await stored([alert.alertId])).toHaveLength(1);
  });

  it("resolves write() after the batch committed, with the alert's seq", async () => {
    const { writer } = setup({ flushIntervalMs: 5 });
    const alert = newAlert();
    const outcome = await writer.write(alert);
    const rows = await stored([alert.alertId]);
    expect(outcome).toEqual({ status: "inserted", seq: rows[0]?.seq });
  });

  it("sends a full batch at once, without waiting for the timer", async () => {
    const { writer, probe } = setup({ batchSize: 5, flushIntervalMs: never });
    const alerts = Array.from({ length: 12 }, () => newAlert());
    const writes = alerts.map((a, i) => {
      const w = track(writer, a);
      // The fifth write sends the batch synchronously; the fourth does not.
      if (i === 3) expect(probe.batchSizes).toEqual([]);
      if (i === 4) expect(probe.batchSizes).toEqual([5]);
      return w;
    });
    await Promise.all(writes.slice(0, 10).map((w) => w.done));

    // The first ten went out as two batches of 5; the last two wait (the timer is an hour away).
    expect(probe.batchSizes).toEqual([5, 5]);
    expect(writer.pendingCount).toBe(2);
    expect(writes[10]?.settled).toBeUndefined();
    expect(writes.slice(0, 10).map((w) => w.settled?.outcome?.status)).toEqual(
      Array(10).fill("inserted"),
    );
    await writer.flush();
    expect(probe.batchSizes).toEqual([5, 5, 2]);
    expect(await stored(alerts.map((a) => a.alertId))).toHaveLength(12);
  });

  it("commits a quiet stream's alert at once, in a batch of its own, while a busy stream's alerts wait for their batch", async () => {
    const { writer, probe } = setup({ batchSize: 1000, flushIntervalMs: never });
    const busy = Array.from({ length: 5 }, () => track(writer, newAlert()));
    expect(probe.batchSizes).toEqual([]);

    const quiet = track(writer, newAlert(), true);
    expect((await quiet.done).outcome?.status).toBe("inserted");
    expect(probe.batchSizes).toEqual([1]);
    expect(busy.map((w) => w.settled)).toEqual(Array(5).fill(undefined));
    expect(writer.pendingCount).toBe(5);

    await writer.flush();
    expect(probe.batchSizes).toEqual([1, 5]);
    expect(busy.map((w) => w.settled?.outcome?.status)).toEqual(Array(5).fill("inserted"));
  });

  it("keeps quiet streams' alerts for the flush interval while no busy stream is sending", async () => {
    const { writer, probe } = setup({ batchSize: 1000, flushIntervalMs: never });
    const quiet = Array.from({ length: 3 }, () => track(writer, newAlert(), true));
    await database.ping();
    expect(probe.batchSizes).toEqual([]);
    expect(writer.pendingCount).toBe(3);

    // A busy stream starts: the quiet alerts already queued would wait for its batch.
    const busy = track(writer, newAlert());
    await Promise.all(quiet.map((w) => w.done));
    expect(probe.batchSizes).toEqual([3]);
    expect(busy.settled).toBeUndefined();
    await writer.flush();
    expect(probe.batchSizes).toEqual([3, 1]);
  });

  it("gives the next free flush slot to quiet alerts before the busy queue", async () => {
    const { writer, probe } = setup({ batchSize: 2, flushIntervalMs: never });
    // Two busy alerts fill a batch, which goes out at once and takes the only slot.
    const first = [track(writer, newAlert()), track(writer, newAlert())];
    expect(probe.batchSizes).toEqual([2]);
    // Two more fill the next batch, which must wait for the slot; a quiet alert comes after.
    const second = [track(writer, newAlert()), track(writer, newAlert())];
    const quiet = track(writer, newAlert(), true);
    await Promise.all([...first, ...second, quiet].map((w) => w.done));
    expect(probe.batchSizes).toEqual([2, 1, 2]);
  });

  it("does not let quiet alerts that keep coming starve a ready batch of the main queue", async () => {
    const { writer, probe } = setup({ batchSize: 2, flushIntervalMs: never });
    // Each time a batch goes to the database, one more quiet alert arrives, as it would
    // from a steady trickle: the quiet queue is never empty when the slot frees.
    const quiet: Tracked[] = [];
    const quietIds = new Set<string>();
    const kinds: string[] = [];
    let arrivals = 8;
    const insert = probe.insertAlerts.bind(probe);
    probe.insertAlerts = (alerts) => {
      kinds.push(alerts.every((a) => quietIds.has(a.alertId)) ? "quiet" : "main");
      if (arrivals-- > 0) {
        const alert = newAlert();
        quietIds.add(alert.alertId);
        quiet.push(track(writer, alert, true));
      }
      return insert(alerts);
    };
    const busy = Array.from({ length: 6 }, () => track(writer, newAlert()));
    await Promise.all(busy.map((w) => w.done));
    // The one slot goes to main and quiet batches in turn, though a quiet alert was
    // waiting each time it freed: the six busy alerts are stored by the fifth batch.
    expect(kinds.slice(0, 5)).toEqual(["main", "quiet", "main", "quiet", "main"]);
    await writer.flush();
    await Promise.all(quiet.map((w) => w.done));
    expect(quiet.map((w) => w.settled?.outcome?.status)).toEqual(Array(8).fill("inserted"));
  });

  it("stores an alert_id sent twice in one batch once: the first copy is inserted, the second a duplicate", async () => {
    const { writer, probe, committed } = setup();
    const alert = newAlert();
    const first = track(writer, alert);
    const replay = track(writer, { ...alert, receivedAtUs: alert.receivedAtUs + 7n });
    await writer.flush();

    expect(probe.batchSizes).toEqual([1]);
    expect(first.settled?.outcome).toEqual({
      status: "inserted",
      seq: (await stored([alert.alertId]))[0]?.seq,
    });
    expect(replay.settled).toEqual({ error: undefined, outcome: { status: "duplicate" } });
    expect(committed.flat().map((a) => a.alertId)).toEqual([alert.alertId]);
    expect(await stored([alert.alertId])).toHaveLength(1);
  });

  it("answers an alert_id already stored by an earlier batch as a duplicate and does not publish it again", async () => {
    const { writer, committed } = setup();
    const alert = newAlert();
    expect((await writeAndFlush(writer, alert)).outcome?.status).toBe("inserted");
    const other = newAlert();
    const again = track(writer, { ...alert, ruleName: "replayed" });
    const fresh = track(writer, other);
    await writer.flush();

    expect(again.settled).toEqual({ error: undefined, outcome: { status: "duplicate" } });
    expect(fresh.settled?.outcome?.status).toBe("inserted");
    expect(committed.flat().map((a) => a.alertId)).toEqual([alert.alertId, other.alertId]);
    expect(committed.flat()[0]?.ruleName).toBe("etc-passwd-write");
    expect(await stored([alert.alertId])).toHaveLength(1);
  });

  it("answers every alert of a batch with a 'database' WriteError when the database is unreachable, publishes nothing, and stores them on the next try", async () => {
    const { writer, probe, committed, log } = setup();
    const alerts = [newAlert(), newAlert(), newAlert()];
    probe.failWith = connectionError();
    const writes = alerts.map((a) => track(writer, a));
    await writer.flush();

    for (const w of writes) {
      expect(w.settled?.outcome).toBeUndefined();
      expect(w.settled?.error?.name).toBe("WriteError");
      expect(w.settled?.error?.reason).toBe("database");
    }
    expect(probe.batchSizes).toEqual([3]); // not bisected: no row is at fault
    expect(committed).toEqual([]);
    expect(await stored(alerts.map((a) => a.alertId))).toEqual([]);
    expect(log.entries.filter((e) => e.level === "error")).toHaveLength(1);

    // The database is back; the agent sends the same alerts again.
    probe.failWith = undefined;
    const retries = alerts.map((a) => track(writer, a));
    await writer.flush();
    expect(retries.map((w) => w.settled?.outcome?.status)).toEqual([
      "inserted",
      "inserted",
      "inserted",
    ]);
    expect(committed.flat().map((a) => a.alertId)).toEqual(alerts.map((a) => a.alertId));
    expect(await stored(alerts.map((a) => a.alertId))).toHaveLength(3);
  });

  it.each([
    ["an error without a code", new Error("boom")],
    ["a socket error", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })],
    ["admin shutdown", Object.assign(new Error("terminating connection"), { code: "57P01" })],
    ["too many connections", Object.assign(new Error("too many clients"), { code: "53300" })],
  ])("treats %s as the database being unavailable", async (_what, failure) => {
    const { writer, probe } = setup();
    probe.failWith = failure;
    const writes = [track(writer, newAlert()), track(writer, newAlert())];
    await writer.flush();
    expect(writes.map((w) => w.settled?.error?.reason)).toEqual(["database", "database"]);
    expect(probe.batchSizes).toEqual([2]);
  });

  it.each([
    [
      "a detail number PostgreSQL's jsonb cannot hold",
      (a: NewAlert): NewAlert => ({ ...a, eventDetailJson: '{"n":1e1000000}' }),
    ],
    ["a host_id that is not in hosts", (a: NewAlert): NewAlert => ({ ...a, hostId: randomUUID() })],
  ])("rejects only the alert with %s and stores the rest of its batch", async (_what, spoil) => {
    const { writer, probe, committed } = setup();
    const alerts = Array.from({ length: 7 }, () => newAlert());
    alerts[4] = spoil(alerts[4] as NewAlert);
    const writes = alerts.map((a) => track(writer, a));
    await writer.flush();

    expect(writes.map((w) => w.settled?.error?.reason ?? w.settled?.outcome?.status)).toEqual([
      "inserted",
      "inserted",
      "inserted",
      "inserted",
      "rejected",
      "inserted",
      "inserted",
    ]);
    const good = alerts.filter((_, i) => i !== 4).map((a) => a.alertId);
    expect((await stored(alerts.map((a) => a.alertId))).map((r) => r.alert_id)).toEqual(good);
    expect(committed.flat().map((a) => a.alertId)).toEqual(good);
    expect(probe.batchSizes[0]).toBe(7);
    expect(probe.batchSizes.length).toBeGreaterThan(1);
    // Bisecting never retries more rows than the batch had on each level.
    expect(probe.batchSizes.length).toBeLessThanOrEqual(1 + 2 * Math.ceil(Math.log2(7)));
  });

  it("close() commits what is pending, and later alerts get a 'closed' WriteError", async () => {
    const { writer, probe, committed } = setup();
    const alerts = [newAlert(), newAlert(), newAlert()];
    const writes = alerts.map((a) => track(writer, a));
    expect(writes.every((w) => w.settled === undefined)).toBe(true);

    await writer.close();

    expect(writes.map((w) => w.settled?.outcome?.status)).toEqual([
      "inserted",
      "inserted",
      "inserted",
    ]);
    expect(committed.flat().map((a) => a.alertId)).toEqual(alerts.map((a) => a.alertId));
    const late = newAlert();
    const lateWrite = track(writer, late);
    expect(lateWrite.settled?.error?.reason).toBe("closed");
    await expect(writer.write(newAlert())).rejects.toMatchObject({ reason: "closed" });
    expect(probe.batchSizes).toEqual([3]);
    expect(await stored([late.alertId])).toEqual([]);
  });

  it("reports no room at maxPending, and waitForRoom resolves once a batch has gone out", async () => {
    const { writer } = setup({ maxPending: 3 });
    let roomed = false;
    expect(writer.hasRoom()).toBe(true);
    await writer.waitForRoom(); // room now: resolves at once
    track(writer, newAlert());
    track(writer, newAlert());
    expect(writer.hasRoom()).toBe(true);
    track(writer, newAlert());
    expect(writer.hasRoom()).toBe(false);
    const room = writer.waitForRoom().then(() => {
      roomed = true;
    });

    // Nothing is sent while the timer has not fired, so the waiter stays waiting.
    await database.ping();
    expect(roomed).toBe(false);
    expect(writer.pendingCount).toBe(3);

    await writer.flush();
    await room;
    expect(roomed).toBe(true);
    expect(writer.hasRoom()).toBe(true);
  });

  it("resolves waitForRoom once close() has committed what was pending", async () => {
    const { writer } = setup({ maxPending: 1 });
    track(writer, newAlert());
    expect(writer.hasRoom()).toBe(false);
    const room = writer.waitForRoom();
    await writer.close();
    await room;
    expect(writer.hasRoom()).toBe(true);
  });

  it("hands onCommitted each batch's alerts in seq order, with seqs increasing across batches and matching the outcomes", async () => {
    const { writer, probe, committed } = setup({ batchSize: 20 });
    probe.reverseResult = true;
    const alerts = Array.from({ length: 50 }, () => newAlert());
    const writes = alerts.map((a) => track(writer, a));
    await writer.flush();

    expect(committed.map((batch) => batch.length)).toEqual([20, 20, 10]);
    const all = committed.flat();
    for (let i = 1; i < all.length; i++) {
      expect(all[i]?.seq).toBeGreaterThan(all[i - 1]?.seq ?? Number.POSITIVE_INFINITY);
    }
    // Within a batch the database assigns seqs in enqueue order.
    expect(all.map((a) => a.alertId)).toEqual(alerts.map((a) => a.alertId));
    const rows = await stored(alerts.map((a) => a.alertId));
    expect(all.map((a) => ({ alert_id: a.alertId, seq: a.seq }))).toEqual(rows);
    expect(writes.map((w) => w.settled?.outcome)).toEqual(
      all.map((a) => ({ status: "inserted", seq: a.seq })),
    );
  });

  it("answers every alert even when onCommitted or a callback throws", async () => {
    const log = new RecordingLogger();
    const { writer } = setup({
      log,
      onCommitted: () => {
        throw new Error("subscriber exploded");
      },
    });
    const alerts = [newAlert(), newAlert()];
    writer.enqueue(alerts[0] as NewAlert, () => {
      throw new Error("callback exploded");
    });
    const second = track(writer, alerts[1] as NewAlert);
    await writer.flush();
    expect(second.settled?.outcome?.status).toBe("inserted");
    expect(log.entries.map((e) => e.msg).sort()).toEqual([
      "alert write callback threw",
      "publishing a committed batch failed",
    ]);
    expect(await stored(alerts.map((a) => a.alertId))).toHaveLength(2);
  });
});

/** Writes `alert`, flushes, and returns how it ended. */
async function writeAndFlush(writer: BatchWriter, alert: NewAlert): Promise<Settled> {
  const write = track(writer, alert);
  await writer.flush();
  if (write.settled === undefined)
    throw new Error("flush() returned before the alert was answered");
  return write.settled;
}
