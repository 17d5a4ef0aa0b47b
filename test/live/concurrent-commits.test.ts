/**
 * The resume guarantee of docs/websocket.md with several writers at once: seq is handed
 * out in commit order (drizzle/0001), so a client that resumes with `since` = the last seq
 * it saw misses nothing, even while two server instances commit concurrently on one
 * database and learn of each other's commits only from that database (no Redis).
 */
import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/logger.js";
import { createAlertStore } from "../../src/storage/alert-store.js";
import type { NewAlert, StoredAlert } from "../../src/storage/alert-types.js";
import { BatchWriter } from "../../src/storage/batch-writer.js";
import { type Database, openDatabase } from "../../src/storage/database.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type Received, ResumingClient, storedAlerts } from "../support/resuming-client.js";
import { type RunningServer, startServer } from "../support/server.js";

async function counter(database: Database): Promise<number> {
  const rows = await database.rows<{ last: string }>(
    sql`select last::text as last from alert_seq where id = 1`,
  );
  return Number(rows[0]?.last);
}

function newAlert(hostId: string, hostname: string): NewAlert {
  const now = BigInt(Date.now()) * 1000n;
  return {
    alertId: randomUUID(),
    hostId,
    hostname,
    timestampUs: now,
    tripwireType: "FILE",
    ruleName: "etc-passwd-write",
    severity: "CRITICAL",
    eventDetailJson: '{"path":"/etc/passwd"}',
    receivedAtUs: now,
  };
}

/** What `got` lacks and what it has that `stored` does not (by seq and alert_id). */
function difference(got: readonly Received[], stored: readonly Received[]) {
  const key = (r: Received): string => `${r.seq} ${r.alert_id}`;
  const have = new Set(got.map(key));
  const want = new Set(stored.map(key));
  return {
    missing: stored.filter((r) => !have.has(key(r))).map((r) => r.seq),
    unexpected: got.filter((r) => !want.has(key(r))).map((r) => r.seq),
  };
}

const postgresOnly = backends.filter((kind) => kind === "postgres");

describe.each(postgresOnly)("seq in commit order across transactions [%s]", (kind) => {
  let database: TestDatabase;
  let url: string;
  let hostId: string;
  const clients: pg.Client[] = [];

  /** A connection of its own, like another server instance's pool would have. */
  async function connection(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url });
    clients.push(client);
    await client.connect();
    return client;
  }

  /** Calls insert_alert_batch as the store does, for these alert ids. */
  function insertBatch(
    client: pg.Client,
    alertIds: readonly string[],
  ): Promise<Array<{ alert_id: string; seq: number }>> {
    const n = alertIds.length;
    const now = String(BigInt(Date.now()) * 1000n);
    const fill = <T>(v: T): T[] => Array.from({ length: n }, () => v);
    return client
      .query<{ alert_id: string; seq: string }>(
        `select alert_id::text as alert_id, seq::text as seq from insert_alert_batch(
          $1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::int8[])`,
        [
          alertIds,
          fill(hostId),
          fill(now),
          fill("FILE"),
          fill("etc-passwd-write"),
          fill("CRITICAL"),
          fill('{"path":"/etc/passwd"}'),
          fill(now),
        ],
      )
      .then((r) => r.rows.map((row) => ({ alert_id: row.alert_id, seq: Number(row.seq) })));
  }

  /** Resolves once backend `pid` waits for a lock; polled (PostgreSQL has no event for it). */
  async function waitUntilBlocked(observer: pg.Client, pid: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await observer.query<{ wait_event_type: string | null }>(
        "select wait_event_type from pg_stat_activity where pid = $1",
        [pid],
      );
      if (rows[0]?.wait_event_type === "Lock") return;
      if (Date.now() > deadline) throw new Error(`backend ${pid} never waited for a lock`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    url = database.url as string;
    ({ hostId } = await createAlertStore(database).upsertHost({
      hostname: "interleaved-host",
      platform: "linux",
      agentVersion: "test",
    }));
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})));
    await database.rows(sql`truncate alerts`);
    await database.rows(sql`update alert_seq set last = 0 where id = 1`);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("a batch that starts while another is uncommitted waits for it, is invisible with it until it commits, and then numbers after it with no seq skipped", async () => {
    const [t1, t2, observer] = [await connection(), await connection(), await connection()];
    const firstIds = [randomUUID(), randomUUID(), randomUUID()];
    // T2 also carries one of T1's alerts (an agent replay): it is stored once, by T1.
    const secondIds = [firstIds[1] as string, randomUUID(), randomUUID()];

    await t1.query("begin");
    const first = await insertBatch(t1, firstIds);
    const t2Pid = (await t2.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]
      ?.pid as number;
    let secondDone = false;
    const second = insertBatch(t2, secondIds).finally(() => {
      secondDone = true;
    });

    await waitUntilBlocked(observer, t2Pid);
    const { rows: waiting } = await observer.query<{ granted: boolean }>(
      "select granted from pg_locks where pid = $1 and not granted",
      [t2Pid],
    );
    expect(waiting.length).toBeGreaterThan(0);
    expect(secondDone).toBe(false);
    // A reader resuming right now sees neither batch, so its cursor cannot pass T1's seqs.
    const { rows: visible } = await observer.query("select seq from alerts where seq > 0");
    expect(visible).toEqual([]);

    await t1.query("commit");
    const secondRows = await second;

    expect(first.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(first.map((r) => r.alert_id)).toEqual(firstIds);
    expect(secondRows).toEqual([
      { alert_id: secondIds[1], seq: 4 },
      { alert_id: secondIds[2], seq: 5 },
    ]);
    const stored = await storedAlerts(database);
    expect(stored.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await counter(database)).toBe(5);
  });

  it("a batch that waited for one that rolled back takes the numbers it would have had, leaving no hole", async () => {
    const [t1, t2, observer] = [await connection(), await connection(), await connection()];
    await t1.query("begin");
    expect((await insertBatch(t1, [randomUUID(), randomUUID()])).map((r) => r.seq)).toEqual([1, 2]);
    const t2Pid = (await t2.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]
      ?.pid as number;
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const second = insertBatch(t2, ids);
    await waitUntilBlocked(observer, t2Pid);

    await t1.query("rollback");

    expect(await second).toEqual(ids.map((alert_id, i) => ({ alert_id, seq: i + 1 })));
    expect((await storedAlerts(database)).map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(await counter(database)).toBe(3);
  });
});

describe.each(backends)("concurrent writers and a resuming client [%s]", (kind) => {
  let database: TestDatabase;
  /** A second handle on the same database: PostgreSQL gets a pool of its own. */
  let other: Database;
  const servers: RunningServer[] = [];
  const clients: ResumingClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    other =
      database.url === undefined
        ? database // PGlite is in-process: both instances share the one database object.
        : await openDatabase({ url: database.url, poolSize: 5 });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.disconnect()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(async () => {
    if (other !== undefined && other !== database) await other.close();
    await database?.dispose();
  });

  it("two batch writers committing at once get disjoint runs of seqs that together leave no number out", async () => {
    const store = createAlertStore(database);
    const { hostId } = await store.upsertHost({
      hostname: "two-writers",
      platform: "linux",
      agentVersion: "test",
    });
    const before = await counter(database);
    const writers = [database, other].map((db) => {
      const batches: number[][] = [];
      const writer = new BatchWriter(createAlertStore(db), {
        flushIntervalMs: 1,
        batchSize: 25,
        maxConcurrentFlushes: kind === "pglite" ? 1 : 2,
        maxPending: 100_000,
        onCommitted: (alerts: readonly StoredAlert[]) => batches.push(alerts.map((a) => a.seq)),
        log: silentLogger,
      });
      return { writer, batches };
    });

    const outcomes = await Promise.all(
      writers.flatMap(({ writer }) =>
        Array.from({ length: 400 }, () => writer.write(newAlert(hostId, "two-writers"))),
      ),
    );
    await Promise.all(writers.map(({ writer }) => writer.close()));

    expect(outcomes.every((o) => o.status === "inserted")).toBe(true);
    const batches = writers.flatMap(({ batches }) => batches);
    // Both writers committed batches, several each, so their flushes really overlapped.
    expect(writers.every(({ batches }) => batches.length >= 2)).toBe(true);
    for (const seqs of batches) {
      const first = seqs[0] as number;
      expect(seqs).toEqual(seqs.map((_, i) => first + i));
    }
    const all = batches.flat().sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 800 }, (_, i) => before + 1 + i));
    expect(await counter(database)).toBe(before + 800);
  });

  it("a client that keeps disconnecting from one of two instances while agents stream to both resumes with since and ends with every stored alert exactly once, in seq order", async () => {
    // No Redis: each instance learns of the other's commits by its poll and gap repair.
    const settings = {
      flushIntervalMs: 5,
      batchSize: 40,
      feedPollMs: 50,
      feedGapRepairMs: 50,
      subscriberBuffer: 4_096,
    };
    const storedBefore = (await storedAlerts(database)).length;
    const a = await startServer(database, settings);
    servers.push(a);
    const b = await startServer(other, settings);
    servers.push(b);
    const agents = await Promise.all(
      [a, a, b, b].map(async (server) => {
        const client = server.grpcClient();
        return { client, hostId: await register(client) };
      }),
    );
    const resuming = new ResumingClient();
    clients.push(resuming);
    const steady = new ResumingClient(); // stays on B throughout
    clients.push(steady);
    await resuming.connect(a.wsUrl);
    await steady.connect(b.wsUrl);

    const rounds = 3;
    const perAgentPerRound = 100;
    let acked = 0;
    for (let round = 0; round < rounds; round++) {
      const seen = resuming.lastSeq;
      const streams = Promise.all(
        agents.map(async ({ client, hostId }) => {
          const events = Array.from({ length: perAgentPerRound }, () => makeEvent(hostId));
          const replies = await streamAll(client, events);
          expect(replies.map((r) => r.type)).toEqual(events.map(() => "ACK"));
          acked += replies.length;
        }),
      );
      // Drop the connection once this round's alerts are flowing, and come back at once
      // (mid-run, with both instances still committing) with since = the last seq seen.
      await Promise.race([resuming.untilSeq(seen + 1), streams]);
      await resuming.disconnect();
      await resuming.connect(a.wsUrl);
      await streams;
    }

    const stored = await storedAlerts(database);
    expect(acked).toBe(rounds * agents.length * perAgentPerRound);
    expect(stored).toHaveLength(storedBefore + acked);
    const newest = stored.at(-1)?.seq as number;
    await resuming.untilSeq(newest);
    await steady.untilSeq(newest);

    expect(resuming.connections).toBe(rounds + 1);
    expect(resuming.notices).toEqual([]);
    expect(resuming.outOfOrder).toEqual([]);
    expect(difference(resuming.items, stored)).toEqual({ missing: [], unexpected: [] });
    expect(resuming.items).toEqual(stored);
    expect(steady.notices).toEqual([]);
    expect(steady.outOfOrder).toEqual([]);
    expect(difference(steady.items, stored)).toEqual({ missing: [], unexpected: [] });
    expect(steady.items).toEqual(stored);
  }, 60_000);
});
