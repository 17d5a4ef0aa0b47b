/**
 * The seed's StreamAlerts cases, over a real server and a real gRPC (HTTP/2) client,
 * on every database backend.
 */
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LiveAlert } from "../../src/broadcast/live-batch.js";
import type { AlertStore } from "../../src/storage/alert-store.js";
import { createAlertStore } from "../../src/storage/alert-store.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

describe.each(backends)("StreamAlerts [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    server = await startServer(database, { flushIntervalMs: 20 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  async function storedIds(): Promise<string[]> {
    const rows = await database.rows<{ alert_id: string }>(
      sql`select alert_id::text as alert_id from alerts order by seq`,
    );
    return rows.map((r) => r.alert_id);
  }

  it("TestStreamAlerts_PersistsAndBroadcasts: a valid event is stored, broadcast once and ACKed", async () => {
    const client = server.grpcClient();
    const hostId = await register(client, "persist-host");
    const abort = new AbortController();
    const received: LiveAlert[] = [];
    const subscription = server.broadcaster.subscribe(abort.signal);
    const firstBroadcast = (async () => {
      for await (const alert of subscription) {
        received.push(alert);
        return;
      }
    })();

    const event = makeEvent(hostId, { ruleName: "persist-rule" });
    const replies = await streamAll(client, [event]);
    await firstBroadcast;
    abort.abort();

    expect(replies).toEqual([{ type: "ACK", alertId: event.alertId }]);
    expect(await storedIds()).toContain(event.alertId);
    expect(received).toHaveLength(1);
    expect(received[0]?.alertId).toBe(event.alertId);
    expect(JSON.parse(received[0]?.dataJson ?? "{}").hostname).toBe("persist-host");
    expect(received[0]?.seq).toBeGreaterThan(0);
  });

  it("TestStreamAlerts_SlowSubscriberDoesNotBlock: 10 events are all ACKed while a subscriber never reads", async () => {
    // A server of its own, whose subscribers hold 2 batches.
    const small = await startServer(database, { flushIntervalMs: 5, subscriberBuffer: 2 });
    try {
      const client = small.grpcClient();
      const hostId = await register(client);
      const abort = new AbortController();
      const stalled = small.broadcaster.subscribe(abort.signal); // never iterated
      const replies: string[] = [];
      // One stream per event, so each commits in its own batch and needs its own slot.
      for (let i = 0; i < 10; i++) {
        const event = makeEvent(hostId);
        const [reply] = await streamAll(client, [event]);
        replies.push(`${reply?.type}:${reply?.alertId === event.alertId}`);
      }
      abort.abort();
      expect(replies).toEqual(Array(10).fill("ACK:true"));
      // The buffer filled after 2 batches; the other 8 were dropped for it alone.
      expect(stalled.dropped).toBe(8);
    } finally {
      await small.close();
    }
  });

  it("TestStreamAlerts_InvalidTripwireType: ERROR with the reason, nothing stored", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const bad = makeEvent(hostId, { tripwireType: "USB" });
    const replies = await streamAll(client, [bad]);
    expect(replies).toHaveLength(1);
    expect(replies[0]?.type).toBe("ERROR");
    expect(replies[0]?.alertId).toBe(bad.alertId);
    expect(replies[0]?.error).toMatch(/tripwire_type "USB" is not one of FILE, NETWORK, PROCESS/);
    expect(await storedIds()).not.toContain(bad.alertId);
  });

  it("TestStreamAlerts_StaleTimestamp: an event older than 5 minutes gets ERROR naming the bound", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const stale = makeEvent(hostId, {
      timestampUs: (BigInt(Date.now()) - 301_000n) * 1000n,
    });
    const replies = await streamAll(client, [stale]);
    expect(replies[0]?.type).toBe("ERROR");
    expect(replies[0]?.error).toMatch(/older than the maximum event age of 300 s \(server time /);
    expect(await storedIds()).not.toContain(stale.alertId);
  });
});

describe("StreamAlerts with a failing database", () => {
  let database: TestDatabase;
  let server: RunningServer;
  let failing = true;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    const real = createAlertStore(database);
    const store: AlertStore = {
      upsertHost: (h) => real.upsertHost(h),
      findHostname: (id) => real.findHostname(id),
      insertAlerts: (alerts) =>
        failing
          ? Promise.reject(Object.assign(new Error("connection terminated"), { code: "57P01" }))
          : real.insertAlerts(alerts),
    };
    server = await startServer(database, { flushIntervalMs: 10 }, { store });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("TestStreamAlerts_StoreError_SendsErrorACK: a failed batch answers ERROR and broadcasts nothing; a retry then succeeds", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const abort = new AbortController();
    const received: string[] = [];
    const watching = (async () => {
      for await (const alert of server.broadcaster.subscribe(abort.signal))
        received.push(alert.alertId);
    })();

    const event = makeEvent(hostId);
    failing = true;
    const first = await streamAll(client, [event]);
    expect(first).toHaveLength(1);
    expect(first[0]?.type).toBe("ERROR");
    expect(first[0]?.error).toMatch(/database is unavailable; send it again/);

    failing = false;
    const retry = await streamAll(client, [event]);
    expect(retry).toEqual([{ type: "ACK", alertId: event.alertId }]);
    abort.abort();
    await watching;
    // Only the successful retry was broadcast.
    expect(received).toEqual([event.alertId]);
  });
});
