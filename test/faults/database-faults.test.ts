/**
 * The database stalls or goes away under a running server: waiting events get ERROR
 * within the statement timeout instead of hanging, /readyz turns 503, memory stays
 * bounded, and everything recovers by itself when the database is back.
 */
import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/storage/database.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

async function readyz(server: RunningServer): Promise<number> {
  return (await fetch(`${server.baseUrl}/readyz`)).status;
}

describe.each(backends.filter((k) => k === "postgres"))("PostgreSQL faults [%s]", (kind) => {
  let owner: TestDatabase;

  beforeAll(async () => {
    owner = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await owner?.dispose();
  });

  it("a table lock held for seconds: events get ERROR within the timeout, /readyz is 503, then it recovers", async () => {
    const database = await openDatabase({ url: owner.url as string, statementTimeoutMs: 300 });
    const server = await startServer(database, { flushIntervalMs: 10, maxInFlightPerStream: 50 });
    const locker = new pg.Client({ connectionString: owner.url });
    await locker.connect();
    try {
      const client = server.grpcClient();
      const hostId = await register(client);
      expect(await readyz(server)).toBe(200);

      await locker.query("begin");
      await locker.query("lock table alerts in access exclusive mode");
      const events = Array.from({ length: 20 }, () => makeEvent(hostId));
      const during = await streamAll(client, events);
      expect(during).toHaveLength(20);
      for (const reply of during) {
        expect(reply.type).toBe("ERROR");
        expect(reply.error).toMatch(/database is unavailable; send it again/);
      }
      expect(server.writer.pendingCount).toBe(0);
      expect(await readyz(server)).toBe(503);

      await locker.query("rollback");
      // The agent sends them again; nothing was stored, so each is stored now, once.
      const after = await streamAll(client, events);
      expect(after.map((r) => r.type)).toEqual(Array(20).fill("ACK"));
      expect(await readyz(server)).toBe(200);
      const stored = await owner.rows<{ n: number }>(sql`select count(*)::int as n from alerts`);
      expect(stored[0]?.n).toBe(20);
    } finally {
      await locker.end().catch(() => {});
      await server.close();
      await database.close();
    }
  });

  it("a database stalled under load: queued events stay within TRIPWIRE_MAX_PENDING_EVENTS, /healthz answers, and once it moves every event is ACKed and stored once", async () => {
    const database = await openDatabase({ url: owner.url as string, statementTimeoutMs: 60_000 });
    const maxPendingEvents = 300;
    const server = await startServer(database, {
      flushIntervalMs: 10,
      batchSize: 100,
      maxPendingEvents,
    });
    const locker = new pg.Client({ connectionString: owner.url });
    await locker.connect();
    try {
      const agents = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const client = server.grpcClient();
          const hostId = await register(client);
          return { client, events: Array.from({ length: 1_000 }, () => makeEvent(hostId)) };
        }),
      );
      const count = async (): Promise<number> =>
        (await owner.rows<{ n: number }>(sql`select count(*)::int as n from alerts`))[0]?.n ?? 0;
      const before = await count();
      await locker.query("begin");
      await locker.query("lock table alerts in access exclusive mode");
      const streams = agents.map(({ client, events }) => streamAll(client, events));

      // The queue fills to its bound and stays there while the database does not move.
      let highest = 0;
      const deadline = Date.now() + 20_000;
      while (server.writer.pendingCount < maxPendingEvents) {
        if (Date.now() > deadline) throw new Error("the writer's queue never filled");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      for (let i = 0; i < 20; i++) {
        const health = await fetch(`${server.baseUrl}/healthz`);
        expect(health.status).toBe(200);
        highest = Math.max(highest, server.writer.pendingCount);
      }
      // Each of the 4 streams may add one event after the last room check.
      expect(highest).toBeLessThanOrEqual(maxPendingEvents + 4);

      await locker.query("rollback");
      const replies = await Promise.all(streams);
      for (const r of replies) expect(r.filter((x) => x.type !== "ACK")).toEqual([]);
      expect((await count()) - before).toBe(4_000);
    } finally {
      await locker.end().catch(() => {});
      await server.close();
      await database.close();
    }
  });

  it("the database goes away and comes back: ERROR while down, /readyz 503, ACK and 200 after", async () => {
    const target = new URL(owner.url as string);
    const proxy: TcpProxy = await startTcpProxy({
      host: target.hostname,
      port: Number(target.port),
    });
    const viaProxy = new URL(owner.url as string);
    viaProxy.port = String(proxy.port);
    let database: Database | undefined;
    let server: RunningServer | undefined;
    try {
      database = await openDatabase({ url: viaProxy.toString(), statementTimeoutMs: 2_000 });
      server = await startServer(database, { flushIntervalMs: 10 });
      const client = server.grpcClient();
      const hostId = await register(client);
      expect(await readyz(server)).toBe(200);

      await proxy.down();
      const lost = makeEvent(hostId);
      const during = await streamAll(client, [lost]);
      expect(during).toEqual([
        {
          type: "ERROR",
          alertId: lost.alertId,
          error: "not stored: the database is unavailable; send it again",
        },
      ]);
      expect(await readyz(server)).toBe(503);

      await proxy.up();
      const after = await streamAll(client, [lost]);
      expect(after).toEqual([{ type: "ACK", alertId: lost.alertId }]);
      expect(await readyz(server)).toBe(200);
    } finally {
      await server?.close();
      await database?.close();
      await proxy.close();
    }
  });
});

describe("readiness without a database fault", () => {
  it("is 200 on a healthy embedded database", async () => {
    const database = await createTestDatabase("pglite");
    const server = await startServer(database);
    try {
      expect(await readyz(server)).toBe(200);
      expect(server.writer.failing).toBeUndefined();
    } finally {
      await server.close();
      await database.dispose();
    }
  });
});
