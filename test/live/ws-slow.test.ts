/**
 * /ws under pressure (docs/websocket.md): clients that stop reading, `dropped` and close
 * code 4008, heartbeats and pings, dead connections, one frame per committed batch, and
 * shutdown. Real server, real gRPC agents, real `ws` clients whose TCP socket is paused
 * to play a browser that hangs.
 */
import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import type { AgentEvent } from "../../src/gen/alert/alert_pb.js";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import {
  type ConnectOptions,
  connectFeed,
  connectLive,
  type FeedClient,
  type FeedMessage,
  subscribers,
} from "../support/ws-client.js";

/**
 * About 60 kB of event_detail, so a few dozen alerts fill the socket buffers; random, so
 * permessage-deflate (which the test clients accept) cannot shrink it.
 */
const bulky = new TextEncoder().encode(
  JSON.stringify({ blob: randomBytes(45_000).toString("base64") }),
);

/** Filling socket buffers through the database takes a while on a busy machine. */
const floodTimeoutMs = 90_000;

/** Polls a counter that has no event, with a deadline. */
async function eventually(what: string, test: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.each(backends)("/ws slow clients, heartbeats and batching [%s]", (kind) => {
  let database: TestDatabase | undefined;
  let server: RunningServer | undefined;
  const clients: FeedClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await server?.close();
    server = undefined;
    await database?.dispose();
    database = undefined;
  });

  /** A fresh database and a server over it; `store` may wrap the real store. */
  async function start(
    overrides: Partial<Config> = {},
    store?: (real: AlertStore) => AlertStore,
  ): Promise<RunningServer> {
    database = await createTestDatabase(kind);
    const extra = store === undefined ? {} : { store: store(createAlertStore(database)) };
    server = await startServer(database, { flushIntervalMs: 5, ...overrides }, extra);
    return server;
  }

  function running(): RunningServer {
    if (server === undefined) throw new Error("no server");
    return server;
  }

  async function open(options: ConnectOptions = {}): Promise<FeedClient> {
    const client = await connectFeed(running().wsUrl, options);
    clients.push(client);
    return client;
  }

  async function openLive(options: ConnectOptions = {}) {
    const opened = await connectLive(running().wsUrl, options);
    clients.push(opened.client);
    return opened;
  }

  /** Streams `events` from one agent; every one must be ACKed. */
  async function commit(events: readonly AgentEvent[]): Promise<void> {
    const replies = await streamAll(running().grpcClient(), events);
    expect(replies.map((r) => r.type)).toEqual(events.map(() => "ACK"));
  }

  /**
   * Streams bulky alerts, a few per stream (one committed batch each), until `done()`;
   * every event must be ACKed: a client that does not read never slows ingestion.
   */
  async function flood(hostId: string, done: () => boolean): Promise<void> {
    for (let round = 0; round < 200; round++) {
      await commit(Array.from({ length: 8 }, () => makeEvent(hostId, { eventDetailJson: bulky })));
      if (done()) return;
    }
    throw new Error("200 rounds of alerts and still not done");
  }

  async function storedSeqs(): Promise<number[]> {
    if (database === undefined) throw new Error("no database");
    const rows = await database.rows<{ seq: string }>(
      sql`select seq::text as seq from alerts order by alerts.seq`,
    );
    return rows.map((r) => Number(r.seq));
  }

  it(
    "a version-1 client that stops reading loses alerts alone, and on resuming is told in dropped exactly which ones it missed",
    async () => {
      const srv = await start({
        subscriberBuffer: 2,
        wsHighWaterBytes: 1024,
        wsSlowCloseMs: 3_600_000,
      });
      const hostId = await register(srv.grpcClient());
      const { client, live } = await openLive();
      expect(live.seq).toBe(0);

      client.pauseReading();
      await flood(hostId, () => srv.broadcaster.drops.buffer_full > 0);
      // A few more batches while it is still behind.
      await flood(hostId, () => true);
      await flood(hostId, () => true);
      const all = await storedSeqs();
      expect(srv.wsStats.slowClosed).toBe(0);

      client.resumeReading();
      const dropped = (): FeedMessage[] => client.messages.filter((m) => m.type === "dropped");
      const droppedCount = (): number => dropped().reduce((n, m) => n + Number(m.count), 0);
      // Everything is accounted for: each alert was either received or reported dropped.
      await client.until(
        () => (client.seqs().length + droppedCount() === all.length ? true : undefined),
        "every alert received or reported dropped",
      );

      const received = client.seqs();
      const receivedSet = new Set(received);
      expect(receivedSet.size).toBe(received.length);
      expect(received).toEqual([...received].sort((a, b) => a - b));
      const missing = all.filter((s) => !receivedSet.has(s));
      expect(received.every((s) => all.includes(s))).toBe(true);
      expect(missing.length).toBeGreaterThan(0);
      expect(srv.broadcaster.drops.buffer_full).toBe(missing.length);

      const reports = dropped().map((m) => ({
        count: Number(m.count),
        from: Number(m.from_seq),
        to: Number(m.to_seq),
      }));
      expect(reports.length).toBeGreaterThan(0);
      // Each report counts exactly the missing alerts in its range; together they bound them.
      for (const r of reports) {
        expect(r.count).toBe(missing.filter((s) => s >= r.from && s <= r.to).length);
      }
      expect(Math.min(...reports.map((r) => r.from))).toBe(missing[0]);
      expect(Math.max(...reports.map((r) => r.to))).toBe(missing.at(-1));
      expect(client.socket.readyState).toBe(client.socket.OPEN);

      // What the doc says to do next: reconnect with since = the last seq before from_seq.
      const since = Math.max(0, ...received.filter((s) => s < (missing[0] as number)));
      const again = await openLive({ query: { since: String(since) } });
      const replayed = new Set(again.client.seqs());
      expect(missing.every((s) => replayed.has(s))).toBe(true);
    },
    floodTimeoutMs,
  );

  it(
    "a version-1 client that stays behind longer than TRIPWIRE_WS_SLOW_CLOSE_MS is closed with 4008",
    async () => {
      const srv = await start({ subscriberBuffer: 2, wsHighWaterBytes: 1024, wsSlowCloseMs: 300 });
      const hostId = await register(srv.grpcClient());
      const { client } = await openLive();
      client.pauseReading();
      await flood(hostId, () => srv.broadcaster.drops.buffer_full > 0);
      await eventually("the slow client is closed", () => srv.wsStats.slowClosed > 0);
      // The close frame waits behind what the client did not read.
      client.resumeReading();
      const closed = await client.closed;
      expect(closed.code).toBe(4008);
      expect(closed.reason).toMatch(/since/);
      expect(srv.wsStats.slowClosed).toBe(1);
    },
    floodTimeoutMs,
  );

  it(
    "a version-0 client that misses an alert is closed with 4008",
    async () => {
      const srv = await start({ subscriberBuffer: 2, wsHighWaterBytes: 1024 });
      const hostId = await register(srv.grpcClient());
      const client = await open();
      await subscribers(srv.broadcaster, 1);
      client.pauseReading();
      await flood(hostId, () => srv.broadcaster.drops.buffer_full > 0);
      await eventually("the version-0 client is closed", () => srv.wsStats.slowClosed > 0);
      client.resumeReading();
      expect((await client.closed).code).toBe(4008);
      expect(client.messages.every((m) => m.type === "alert")).toBe(true);
      expect(srv.wsStats.slowClosed).toBe(1);
    },
    floodTimeoutMs,
  );

  it("a quiet version-1 client receives heartbeat messages with server_time and the newest seq, and pings; version 0 gets pings only", async () => {
    const srv = await start({ wsHeartbeatMs: 200 });
    const hostId = await register(srv.grpcClient());
    await commit([makeEvent(hostId), makeEvent(hostId)]);
    const { client } = await openLive();
    const v0 = await open();

    const first = await client.nextOfType("heartbeat");
    expect(Object.keys(first).sort()).toEqual(["seq", "server_time", "type"]);
    expect(first.seq).toBe(2);
    expect(String(first.server_time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    await client.pingCount(1);

    await commit([makeEvent(hostId)]);
    await client.alertAtLeast(3);
    const afterAlert = client.messages.length;
    const second = await client.nextOfType("heartbeat", afterAlert);
    expect(second.seq).toBe(3);

    // Two pings: at least one heartbeat interval passed, and version 0 heard nothing else.
    await v0.pingCount(2);
    await v0.alertAtLeast(3);
    expect(v0.messages.map((m) => m.type)).toEqual(["alert"]);
  });

  it("a client that does not answer pings is terminated; one that answers stays", async () => {
    const srv = await start({ wsHeartbeatMs: 200 });
    const dead = await open({ autoPong: false, protocols: ["tripwire.v1"] });
    const { client: alive } = await openLive();

    const closed = await dead.closed;
    expect(closed.code).toBe(1006); // terminated: no close frame
    expect(dead.pings).toBeGreaterThan(0);
    expect(srv.wsStats.deadTerminated).toBe(1);

    await alive.pingCount(alive.pings + 2);
    expect(alive.socket.readyState).toBe(alive.socket.OPEN);
    expect(srv.wsStats.deadTerminated).toBe(1);
  });

  it("200 alerts committed in one batch reach a version-1 client in one alerts frame (and a version-0 client as 200 frames)", async () => {
    const batchSizes: number[] = [];
    // The batch fills at exactly 200, long before the interval could end it (quiet streams
    // off: the stream's first events would go ahead in a batch of their own).
    const srv = await start(
      { batchSize: 200, flushIntervalMs: 60_000, quietStreamRate: 0 },
      (real) => ({
        upsertHost: (h) => real.upsertHost(h),
        findHostname: (id) => real.findHostname(id),
        insertAlerts: (alerts) => {
          batchSizes.push(alerts.length);
          return real.insertAlerts(alerts);
        },
      }),
    );
    const hostId = await register(srv.grpcClient());
    const { client } = await openLive();
    const v0 = await open();
    await subscribers(srv.broadcaster, 2);

    const events = Array.from({ length: 200 }, () => makeEvent(hostId));
    await commit(events);
    expect(batchSizes).toEqual([200]);
    await client.alertAtLeast(200);
    await v0.alertAtLeast(200);

    const frames = client.messages.filter((m) => m.type === "alerts");
    expect(frames).toHaveLength(1);
    expect(client.seqs()).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(client.alerts().map((a) => a.alert_id)).toEqual(events.map((e) => e.alertId));
    expect(v0.messages).toHaveLength(200);
  });

  it("a lone alert is delivered at once, in a frame of its own", async () => {
    const srv = await start();
    const hostId = await register(srv.grpcClient());
    const { client } = await openLive();
    const event = makeEvent(hostId);
    await commit([event]);
    const frame = await client.nextOfType("alerts");
    expect(frame.items).toHaveLength(1);
    expect(client.alerts().map((a) => a.alert_id)).toEqual([event.alertId]);
  });

  it("closing the server closes every feed connection with 1001", async () => {
    const srv = await start();
    const { client } = await openLive();
    const v0 = await open();
    await subscribers(srv.broadcaster, 2);
    server = undefined;
    await srv.close();
    expect((await client.closed).code).toBe(1001);
    expect((await v0.closed).code).toBe(1001);
  });
});
