/**
 * The retention job (TRIPWIRE_RETENTION_DAYS) on every database backend: what it deletes
 * and in which batches, that agents keep getting ACKs while it runs, that one instance
 * runs it at a time on PostgreSQL, and that 0 (the default) keeps everything.
 */
import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { sql } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import { createAlertStore } from "../../src/storage/alert-store.js";
import { type NewAlert, nowMicros } from "../../src/storage/alert-types.js";
import { type Database, openDatabase } from "../../src/storage/database.js";
import {
  type RetentionJob,
  type RetentionSettings,
  startRetention,
} from "../../src/storage/retention.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { RecordingLogger } from "../support/recording-logger.js";
import { type RunningServer, startServer } from "../support/server.js";
import { connectLive } from "../support/ws-client.js";

const dayUs = 86_400_000_000n;

/** Stores `count` alerts received `daysAgo` days ago (timestamps `timestampDaysAgo`); returns their seqs. */
async function storeAlerts(
  database: Database,
  count: number,
  daysAgo: number,
  timestampDaysAgo = daysAgo,
): Promise<number[]> {
  const store = createAlertStore(database);
  const { hostId } = await store.upsertHost({
    hostname: "retention-host",
    platform: "linux",
    agentVersion: "1",
  });
  const now = nowMicros();
  const alerts: NewAlert[] = Array.from({ length: count }, (_, i) => ({
    alertId: randomUUID(),
    hostId,
    hostname: "retention-host",
    timestampUs: now - BigInt(timestampDaysAgo) * dayUs + BigInt(i),
    tripwireType: "FILE",
    ruleName: "old-rule",
    severity: "WARN",
    eventDetailJson: "{}",
    receivedAtUs: now - BigInt(daysAgo) * dayUs + BigInt(i),
  }));
  const seqs: number[] = [];
  // Batches of at most 1000, as the batch writer commits them.
  for (let i = 0; i < alerts.length; i += 1000) {
    const slice = alerts.slice(i, i + 1000);
    const inserted = await store.insertAlerts(slice);
    for (const a of slice) seqs.push(inserted.get(a.alertId) as number);
  }
  return seqs;
}

async function storedSeqs(database: Database): Promise<number[]> {
  const rows = await database.rows<{ seq: string }>(
    sql`select seq::text as seq from alerts order by seq`,
  );
  return rows.map((r) => Number(r.seq));
}

/** A gate a test opens; `reached` resolves when the job first waits at it. */
function gate(): { wait(): Promise<void>; reached: Promise<void>; open(): void } {
  let open = (): void => {};
  let reach = (): void => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  const reached = new Promise<void>((resolve) => {
    reach = resolve;
  });
  return {
    wait: () => {
      reach();
      return opened;
    },
    reached,
    open,
  };
}

describe.each(backends)("the retention job [%s]", (kind) => {
  let database: TestDatabase | undefined;
  const jobs: RetentionJob[] = [];
  const servers: RunningServer[] = [];

  afterEach(async () => {
    for (const job of jobs.splice(0)) await job.close();
    for (const server of servers.splice(0)) await server.close();
    await database?.dispose();
    database = undefined;
  });

  function start(
    db: Database,
    settings: Partial<RetentionSettings>,
    afterBatch?: (n: number) => void | Promise<void>,
    log = new RecordingLogger(),
  ): RetentionJob {
    const job = startRetention({
      database: db,
      settings: { days: 1, intervalMs: 60_000, batchSize: 10, ...settings },
      log,
      ...(afterBatch === undefined ? {} : { afterBatch }),
    });
    jobs.push(job);
    return job;
  }

  it("deletes alerts received before the cutoff in statements of at most the batch size until none is left, keeps newer ones and logs the count", async () => {
    database = await createTestDatabase(kind);
    const old = await storeAlerts(database, 25, 3);
    // Old by the agent's clock, but received just now: kept (received_at decides).
    const skewed = await storeAlerts(database, 2, 0, 30);
    const recent = await storeAlerts(database, 5, 0);
    const batches: number[] = [];
    const log = new RecordingLogger();
    const job = start(database, { batchSize: 10 }, (n) => void batches.push(n), log);
    const run = await job.nextRun();

    expect(batches).toEqual([10, 10, 5]);
    expect(run).toEqual({ removed: 25, batches: 3, skipped: false });
    expect(await storedSeqs(database)).toEqual([...skewed, ...recent]);
    expect(old.every((s) => s < (skewed[0] as number))).toBe(true);
    expect(log.messages("info")).toEqual([
      "retention removed 25 alert(s) received more than 1 day(s) ago",
    ]);
  });

  it("runs again every interval, and a run with nothing old makes one statement and logs nothing", async () => {
    database = await createTestDatabase(kind);
    await storeAlerts(database, 20, 2);
    const batches: number[] = [];
    const log = new RecordingLogger();
    const job = start(
      database,
      { intervalMs: 10, batchSize: 10 },
      (n) => void batches.push(n),
      log,
    );
    await job.nextRun();
    const quiet = await job.nextRun();
    expect(quiet).toEqual({ removed: 0, batches: 1, skipped: false });
    expect(await storedSeqs(database)).toEqual([]);
    // 20 rows: two full statements, then one that finds nothing; later runs find nothing.
    expect(batches.slice(0, 3)).toEqual([10, 10, 0]);
    expect(batches.slice(3).every((n) => n === 0)).toBe(true);
    expect(log.messages("info")).toEqual([
      "retention removed 20 alert(s) received more than 1 day(s) ago",
    ]);
  });

  it("lets an agent's stream keep getting ACKs while a long deletion is in progress", async () => {
    database = await createTestDatabase(kind);
    const server = await startServer(database, { flushIntervalMs: 5 });
    servers.push(server);
    await storeAlerts(database, 2_000, 5);
    const client = server.grpcClient();
    const hostId = await register(client, "busy-agent");
    const events = Array.from({ length: 50 }, () => makeEvent(hostId));

    let acks: Promise<Awaited<ReturnType<typeof streamAll>>> | undefined;
    let batchesAtAcks = -1;
    const batches: number[] = [];
    const job = start(database, { batchSize: 100 }, async (n) => {
      batches.push(n);
      if (batches.length === 1) {
        // The job is mid-run (1 900 old alerts to go): an agent streams now, and the job
        // does not go on until every event was answered.
        acks = streamAll(client, events);
        await acks;
        batchesAtAcks = batches.length;
      }
    });
    const run = await job.nextRun();

    const replies = await (acks as Promise<Awaited<ReturnType<typeof streamAll>>>);
    expect(replies.map((r) => r.type)).toEqual(events.map(() => "ACK"));
    expect(batchesAtAcks).toBe(1);
    expect(run).toEqual({ removed: 2_000, batches: 21, skipped: false });
    const rows = await database.rows<{ n: number }>(
      sql`select count(*)::int as n from alerts where alert_id = any(${sql.param(events.map((e) => e.alertId))}::uuid[])`,
    );
    expect(rows[0]?.n).toBe(50);
    expect((await storedSeqs(database)).length).toBe(50);
  });

  it("is started by the server with TRIPWIRE_RETENTION_DAYS above 0; /ws and /api/alerts cursors on deleted alerts start at the oldest one left", async () => {
    database = await createTestDatabase(kind);
    const old = await storeAlerts(database, 25, 10);
    const kept = await storeAlerts(database, 5, 0);
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString().split("\n").filter(Boolean));
        done();
      },
    });
    const server = await startServer(
      database,
      { retentionDays: 7, retentionIntervalMs: 20, retentionBatch: 10 },
      { logger: { level: "info", stream } },
    );
    servers.push(server);
    expect(server.retention).toBeDefined();
    // A run that starts after this call: the first run (at start) has finished by then.
    await server.retention?.nextRun();
    expect(await storedSeqs(database)).toEqual(kept);
    const removed = lines
      .map((l) => JSON.parse(l) as { msg?: string; removed?: number; component?: string })
      .filter((l) => l.component === "retention");
    expect(removed).toContainEqual(
      expect.objectContaining({
        msg: "retention removed 25 alert(s) received more than 7 day(s) ago",
        removed: 25,
      }),
    );

    const { client, live } = await connectLive(server.wsUrl, { query: { since: String(old[3]) } });
    try {
      expect(client.seqs()).toEqual(kept);
      expect(live.seq).toBe(kept.at(-1));
    } finally {
      client.terminate();
    }
    const page = (await (await fetch(`${server.baseUrl}/api/alerts?since=${old[3]}`)).json()) as {
      alerts: { seq: number }[];
    };
    expect(page.alerts.map((a) => a.seq)).toEqual(kept);
  });

  it("is off with TRIPWIRE_RETENTION_DAYS=0, the default: nothing is ever deleted", async () => {
    const db = await createTestDatabase(kind);
    database = db;
    const old = await storeAlerts(db, 5, 3650);
    const server = await startServer(db, { retentionIntervalMs: 10 });
    servers.push(server);
    expect(server.config.retentionDays).toBe(0);
    expect(server.retention).toBeUndefined();
    expect(await storedSeqs(db)).toEqual(old);
    expect(() =>
      startRetention({
        database: db,
        settings: { days: 0, intervalMs: 10, batchSize: 10 },
        log: new RecordingLogger(),
      }),
    ).toThrow(/days above 0/);
  });
});

describe.each(backends.filter((k) => k === "postgres"))(
  "the retention job with several instances [%s]",
  (kind) => {
    let database: TestDatabase | undefined;
    const jobs: RetentionJob[] = [];

    afterEach(async () => {
      for (const job of jobs.splice(0)) await job.close();
      await database?.dispose();
      database = undefined;
    });

    it("runs on one instance at a time: another instance skips its run while the lock is held", async () => {
      database = await createTestDatabase(kind);
      await storeAlerts(database, 30, 3);
      const held = gate();
      const first: number[] = [];
      const settings = { days: 1, intervalMs: 60_000, batchSize: 10 };
      const a = startRetention({
        database,
        settings,
        log: new RecordingLogger(),
        afterBatch: async (n) => {
          first.push(n);
          if (first.length === 1) await held.wait();
        },
      });
      jobs.push(a);
      const aRun = a.nextRun();
      await held.reached;

      // A second instance (its own pool, as another process would have).
      const other = await openSecondPool(database);
      try {
        const second: number[] = [];
        const b = startRetention({
          database: other,
          settings,
          log: new RecordingLogger(),
          afterBatch: (n) => void second.push(n),
        });
        jobs.push(b);
        expect(await b.nextRun()).toEqual({ removed: 0, batches: 0, skipped: true });
        expect(second).toEqual([]);
        held.open();
        expect(await aRun).toEqual({ removed: 30, batches: 4, skipped: false });
        await b.close();
      } finally {
        await other.close();
      }
      expect(await storedSeqs(database)).toEqual([]);
    });
  },
);

/** The same PostgreSQL database through a pool of its own. */
async function openSecondPool(database: TestDatabase): Promise<Database> {
  return openDatabase({ url: database.url as string, poolSize: 2 });
}
