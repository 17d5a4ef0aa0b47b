/**
 * Agents pipeline: they send events as they come and read replies in a separate loop.
 * These tests stream that way over a real gRPC (HTTP/2) connection, on every backend.
 */
import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentEvent } from "../../src/gen/alert/alert_pb.js";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import type { NewAlert } from "../../src/storage/alert-types.js";
import { decodeReply, makeEvent, type Reply, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

/** A promise with its resolver, for moments the test decides. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe.each(backends)("pipelined StreamAlerts [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    // A bound far below what one stream sends, so streams keep hitting it and resuming.
    server = await startServer(database, { flushIntervalMs: 20, maxInFlightPerStream: 64 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  async function storedCount(hostId: string): Promise<number> {
    const rows = await database.rows<{ n: string }>(
      sql`select count(*)::text as n from alerts where host_id = ${hostId}::uuid`,
    );
    return Number(rows[0]?.n);
  }

  it("2000 events sent on one stream without waiting for replies, far more than the in-flight bound, are all ACKed and all stored", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const events = Array.from({ length: 2000 }, () => makeEvent(hostId));

    const replies = await streamAll(client, events);

    expect(replies).toHaveLength(2000);
    expect(replies.every((r) => r.type === "ACK")).toBe(true);
    expect(replies.map((r) => r.alertId).sort()).toEqual(events.map((e) => e.alertId).sort());
    expect(await storedCount(hostId)).toBe(2000);
  });

  it("the server holds at most maxInFlightPerStream un-ACKed events of a stream while the database is stuck, then ACKs them all", async () => {
    const real = createAlertStore(database);
    const gate = deferred();
    let gateOpen = false;
    let rowsHeldInInsert = 0;
    const firstInsert = deferred<readonly NewAlert[]>();
    const store: AlertStore = {
      upsertHost: (h) => real.upsertHost(h),
      findHostname: (id) => real.findHostname(id),
      async insertAlerts(alerts) {
        if (!gateOpen) {
          rowsHeldInInsert += alerts.length;
          firstInsert.resolve(alerts);
          await gate.promise;
          rowsHeldInInsert -= alerts.length;
        }
        return real.insertAlerts(alerts);
      },
    };
    // A batch of exactly the bound goes to the database the moment the server holds it;
    // the interval is long so that nothing else decides when batches form.
    const bounded = await startServer(
      database,
      { maxInFlightPerStream: 5, batchSize: 5, flushIntervalMs: 60_000 },
      { store },
    );
    try {
      const client = bounded.grpcClient();
      const hostId = await register(client);
      const events = Array.from({ length: 200 }, () => makeEvent(hostId));
      const allOffered = deferred();
      async function* offer(): AsyncGenerator<AgentEvent> {
        yield* events;
        allOffered.resolve();
      }
      const replies: Reply[] = [];
      const streamed = (async () => {
        for await (const cmd of client.streamAlerts(offer())) replies.push(decodeReply(cmd));
      })();

      expect(await firstInsert.promise).toHaveLength(5);
      // The client has written all 200 (they fit in the HTTP/2 window), and a round trip
      // on the same connection lets the server read whatever reached it: a server
      // without the bound would hold more by now.
      await allOffered.promise;
      await register(client);
      expect(rowsHeldInInsert + bounded.writer.pendingCount).toBe(5);
      expect(replies).toHaveLength(0);

      gateOpen = true;
      gate.resolve();
      await streamed;
      expect(replies).toHaveLength(200);
      expect(replies.every((r) => r.type === "ACK")).toBe(true);
      expect(new Set(replies.map((r) => r.alertId))).toEqual(new Set(events.map((e) => e.alertId)));
      expect(await storedCount(hostId)).toBe(200);
    } finally {
      gateOpen = true;
      gate.resolve();
      await bounded.close();
    }
  });

  it("an invalid event between valid ones gets ERROR and the stream carries on to a normal end", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const before = Array.from({ length: 10 }, () => makeEvent(hostId));
    const bad = makeEvent(hostId, { severity: "PANIC" });
    const after = Array.from({ length: 10 }, () => makeEvent(hostId));

    // streamAll half-closes after the last event and returns only when the server ends
    // the stream with OK; an error status would reject.
    const replies = await streamAll(client, [...before, bad, ...after]);

    expect(
      replies
        .filter((r) => r.type === "ACK")
        .map((r) => r.alertId)
        .sort(),
    ).toEqual([...before, ...after].map((e) => e.alertId).sort());
    const errors = replies.filter((r) => r.type === "ERROR");
    expect(errors).toHaveLength(1);
    expect(errors[0]?.alertId).toBe(bad.alertId);
    expect(errors[0]?.error).toMatch(/severity "PANIC" is not one of INFO, WARN, CRITICAL/);
    expect(replies).toHaveLength(21);
    expect(await storedCount(hostId)).toBe(20);
  });

  it("an event for a host_id that was never registered gets ERROR telling the agent to call RegisterAgent", async () => {
    const client = server.grpcClient();
    const unknownHost = randomUUID();
    const event = makeEvent(unknownHost);

    const replies = await streamAll(client, [event]);

    expect(replies).toHaveLength(1);
    expect(replies[0]?.type).toBe("ERROR");
    expect(replies[0]?.alertId).toBe(event.alertId);
    expect(replies[0]?.error).toMatch(/RegisterAgent/);
    expect(await storedCount(unknownHost)).toBe(0);
  });
});
