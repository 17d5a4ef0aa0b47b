/**
 * Several server instances on one PostgreSQL database, relaying committed batches over
 * Redis (src/broadcast/redis-relay.ts): every WebSocket subscriber of every instance gets
 * every alert exactly once, in seq order — over Redis alone when it is up, and with the
 * gap read back from PostgreSQL after Redis dies and comes back.
 *
 * Each suite runs its own redis-server (test/support/redis-server.ts), so it can kill it.
 */
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type LiveAlert, LiveBatch } from "../../src/broadcast/live-batch.js";
import { RedisRelay } from "../../src/broadcast/redis-relay.js";
import type { Config } from "../../src/config.js";
import type { Logger } from "../../src/logger.js";
import { StoredAlert } from "../../src/storage/alert-types.js";
import { type Database, openDatabase } from "../../src/storage/database.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { RecordingLogger } from "../support/recording-logger.js";
import { type PrivateRedis, startPrivateRedis } from "../support/redis-server.js";
import { type Received, ResumingClient, storedAlerts } from "../support/resuming-client.js";
import { type RunningServer, startServer } from "../support/server.js";
import { redisTargets } from "../support/services.js";

/** The Redis suites that also need PostgreSQL run only when both are configured. */
const postgresRedisTargets = process.env.TEST_DATABASE_URL === undefined ? [] : redisTargets;

/** Resolves once `condition()` holds; for states that no event announces. */
async function until(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A committed alert as another instance would have stored it. */
function storedAlert(seq: number): StoredAlert {
  const us = 1_772_047_501_123_456n + BigInt(seq);
  return new StoredAlert(
    {
      alertId: randomUUID(),
      hostId: "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
      hostname: 'web-01 "east"',
      timestampUs: us,
      tripwireType: "NETWORK",
      ruleName: "outbound-beacon ✓",
      severity: "WARN",
      eventDetailJson: '{"dst":"10.0.0.9","port":4444}',
      receivedAtUs: us + 2_500n,
    },
    seq,
  );
}

/** Where a relay under test delivers: every batch, and a way to await the next. */
class Inbox {
  readonly batches: LiveBatch[] = [];
  reconnects = 0;
  #next: Array<(batch: LiveBatch) => void> = [];
  readonly onBatch = (batch: LiveBatch): void => {
    this.batches.push(batch);
    for (const resolve of this.#next.splice(0)) resolve(batch);
  };
  readonly onReconnect = (): void => {
    this.reconnects++;
  };
  next(): Promise<LiveBatch> {
    return new Promise((resolve) => this.#next.push(resolve));
  }
}

describe("RedisRelay without Redis", () => {
  it("a relay whose Redis is unreachable fails to start, reports itself disconnected, and counts the batches it could not send instead of throwing or queueing them", async () => {
    // A port that nothing listens on.
    const probe = createServer().listen(0, "127.0.0.1");
    await once(probe, "listening");
    const { port } = probe.address() as { port: number };
    probe.close();
    await once(probe, "close");
    const inbox = new Inbox();
    const relay = new RedisRelay({
      url: `redis://127.0.0.1:${port}`,
      channel: "tripwire:test",
      onBatch: inbox.onBatch,
      onReconnect: inbox.onReconnect,
      log: new RecordingLogger(),
    });
    try {
      await expect(relay.start()).rejects.toThrow();
      expect(relay.connected).toBe(false);
      const batch = LiveBatch.of([storedAlert(1), storedAlert(2)]);

      expect(relay.publish(batch)).toBeUndefined();
      relay.publish(batch);

      expect(relay.unsent).toBe(2);
      expect(inbox.reconnects).toBe(0);
    } finally {
      await relay.close();
    }
  });
});

describe.each(redisTargets)("RedisRelay [%s]", () => {
  let redis: PrivateRedis;
  const relays: RedisRelay[] = [];
  const raw: Redis[] = [];

  function relay(channel: string, inbox: Inbox, log: Logger = new RecordingLogger()): RedisRelay {
    const r = new RedisRelay({
      url: redis.url,
      channel,
      onBatch: inbox.onBatch,
      onReconnect: inbox.onReconnect,
      log,
    });
    relays.push(r);
    return r;
  }

  function rawClient(): Redis {
    const client = new Redis(redis.url, { lazyConnect: true });
    raw.push(client);
    return client;
  }

  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.close()));
    for (const client of raw.splice(0)) client.disconnect();
  });
  afterAll(async () => {
    await redis?.stop("SIGTERM");
  });

  it("publishes a batch as its seq range and its alerts' JSON, and the other instance receives the same range and alerts while the sender ignores its own message", async () => {
    const channel = `tripwire:test:${randomUUID()}`;
    const mine = new Inbox();
    const theirs = new Inbox();
    const sender = relay(channel, mine);
    const receiver = relay(channel, theirs);
    await Promise.all([sender.start(), receiver.start()]);
    expect([sender.connected, receiver.connected]).toEqual([true, true]);
    expect(mine.reconnects).toBeGreaterThanOrEqual(1); // the first subscription counts
    const listener = rawClient();
    await listener.connect();
    await listener.subscribe(channel);
    const onChannel = once(listener, "message") as Promise<[string, string]>;

    // Seqs 1, 3 and 5 are numbers without rows: the range says so, the alerts cannot.
    const alerts = [storedAlert(2), storedAlert(4)];
    const arriving = theirs.next();
    sender.publish(new LiveBatch(alerts, 1, 5));

    const [, message] = await onChannel;
    expect(JSON.parse(message)).toEqual({
      o: sender.instanceId,
      f: 1,
      t: 5,
      a: alerts.map((a) => JSON.parse(a.dataJson)),
    });
    const batch = await arriving;
    expect([batch.fromSeq, batch.toSeq]).toEqual([1, 5]);
    const fields = (a: LiveAlert) => ({
      seq: a.seq,
      alertId: a.alertId,
      hostId: a.hostId,
      severity: a.severity,
      tripwireType: a.tripwireType,
      data: JSON.parse(a.dataJson) as unknown,
      frame: JSON.parse(a.frame) as unknown,
    });
    expect(batch.alerts.map(fields)).toEqual(alerts.map(fields));

    // The receiver answers; by the time the answer reaches the sender, its own message
    // (published earlier on the same channel) has passed it by.
    const answer = mine.next();
    receiver.publish(LiveBatch.of([storedAlert(6)]));
    expect((await answer).fromSeq).toBe(6);
    expect(mine.batches.map((b) => b.fromSeq)).toEqual([6]);
    expect(theirs.batches.map((b) => b.fromSeq)).toEqual([1]);
    expect(sender.unsent + receiver.unsent).toBe(0);
  });

  it("a relay started while Redis is down subscribes by itself once Redis comes up, and receives the other instance's batches", async () => {
    const own = await startPrivateRedis();
    try {
      await own.stop();
      const channel = `tripwire:test:${randomUUID()}`;
      const inbox = new Inbox();
      const late = new RedisRelay({
        url: own.url,
        channel,
        onBatch: inbox.onBatch,
        onReconnect: inbox.onReconnect,
        log: new RecordingLogger(),
      });
      relays.push(late);
      await expect(late.start()).rejects.toThrow();

      await own.restart();
      const sender = new RedisRelay({
        url: own.url,
        channel,
        onBatch: () => {},
        onReconnect: () => {},
        log: new RecordingLogger(),
      });
      relays.push(sender);
      await sender.start();
      // Pub/sub keeps nothing for a subscriber that is not there yet: send until it is.
      const arrived = inbox.next();
      const deadline = Date.now() + 20_000;
      let seq = 0;
      while (inbox.batches.length === 0) {
        if (Date.now() > deadline) throw new Error("the late relay never subscribed");
        sender.publish(LiveBatch.of([storedAlert(++seq)]));
        await Promise.race([arrived, new Promise((resolve) => setTimeout(resolve, 50))]);
      }
      expect((await arrived).fromSeq).toBeGreaterThanOrEqual(1);
      expect(late.connected).toBe(true);
    } finally {
      await Promise.all(relays.splice(0).map((r) => r.close()));
      await own.stop("SIGTERM");
    }
  });

  it("ignores messages on the channel that are not relay batches and keeps delivering the ones that are", async () => {
    const channel = `tripwire:test:${randomUUID()}`;
    const inbox = new Inbox();
    const log = new RecordingLogger();
    const receiver = relay(channel, inbox, log);
    const sender = relay(channel, new Inbox());
    await Promise.all([receiver.start(), sender.start()]);
    const stranger = rawClient();
    await stranger.connect();

    for (const junk of [
      "not json",
      "null",
      "[1,2]",
      '{"o":"someone","f":1,"t":1,"a":"nope"}',
      '{"o":"someone","f":"1","t":1,"a":[]}',
      '{"o":"someone","f":1,"t":1,"a":[null]}',
    ]) {
      await stranger.publish(channel, junk);
    }
    const arriving = inbox.next();
    sender.publish(LiveBatch.of([storedAlert(7)]));

    expect((await arriving).alerts.map((a) => a.seq)).toEqual([7]);
    expect(inbox.batches).toHaveLength(1);
    expect(log.messages("warn")).toContain("ignored a malformed message on the redis channel");
    expect(receiver.connected).toBe(true);
  });
});

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

/** Asserts that `client` holds exactly `stored`, in order, with nothing else said. */
function expectEverything(client: ResumingClient, stored: readonly Received[]): void {
  expect(client.notices).toEqual([]);
  expect(client.outOfOrder).toEqual([]);
  expect(difference(client.items, stored)).toEqual({ missing: [], unexpected: [] });
  expect(client.items).toEqual(stored);
}

/**
 * An agent that streams chunks of pipelined events until stopped, and counts ACKs.
 * `acked(n)` resolves once at least n of its events were ACKed.
 */
class StreamingAgent {
  ackedCount = 0;
  readonly nonAck: string[] = [];
  #stop = false;
  #waiters: Array<{ n: number; resolve: () => void }> = [];
  readonly done: Promise<void>;

  constructor(server: RunningServer, chunk: number) {
    this.done = (async () => {
      const client = server.grpcClient();
      const hostId = await register(client);
      while (!this.#stop) {
        const events = Array.from({ length: chunk }, () => makeEvent(hostId));
        const replies = await streamAll(client, events);
        for (const r of replies) if (r.type !== "ACK") this.nonAck.push(`${r.type} ${r.error}`);
        this.ackedCount += replies.filter((r) => r.type === "ACK").length;
        this.#waiters = this.#waiters.filter((w) => {
          if (this.ackedCount < w.n) return true;
          w.resolve();
          return false;
        });
      }
    })();
  }

  acked(n: number): Promise<void> {
    if (this.ackedCount >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  /** Stops after the chunk in flight and resolves when it is answered. */
  async stop(): Promise<void> {
    this.#stop = true;
    await this.done;
  }
}

describe.each(postgresRedisTargets)("two instances over Redis [%s]", () => {
  let redis: PrivateRedis;
  let database: TestDatabase;
  /** The second instance's own pool on the same database. */
  let other: Database;
  const servers: RunningServer[] = [];
  const clients: ResumingClient[] = [];
  const agents: StreamingAgent[] = [];

  /** Settings both instances share; each test gets a channel of its own. */
  function settings(overrides: Partial<Config> = {}): Partial<Config> {
    return {
      redisUrl: redis.url,
      redisChannel: `tripwire:test:${randomUUID()}`,
      flushIntervalMs: 5,
      batchSize: 40,
      subscriberBuffer: 4_096,
      ...overrides,
    };
  }

  async function subscriber(server: RunningServer): Promise<ResumingClient> {
    const client = new ResumingClient();
    clients.push(client);
    await client.connect(server.wsUrl);
    return client;
  }

  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  beforeEach(async () => {
    database = await createTestDatabase("postgres");
    other = await openDatabase({ url: database.url as string, poolSize: 5 });
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop().catch(() => {})));
    await Promise.all(clients.splice(0).map((c) => c.disconnect()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await other?.close();
    await database?.dispose();
    if (!redis.running) await redis.restart();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it("every alert committed by either instance reaches every WebSocket subscriber of both over Redis alone, exactly once and in seq order", async () => {
    // No poll, and a gap repair far beyond the test: the database is never read back,
    // so whatever an instance delivers of the other's commits came over Redis.
    const shared = settings({ feedPollMs: 0, feedGapRepairMs: 600_000 });
    const a = await startServer(database, shared);
    servers.push(a);
    const b = await startServer(other, shared);
    servers.push(b);
    expect([a.broadcaster.redisConnected, b.broadcaster.redisConnected]).toEqual([true, true]);
    const watchers = [
      await subscriber(a),
      await subscriber(a),
      await subscriber(b),
      await subscriber(b),
    ];

    const streams = [a, a, b, b].map(async (server) => {
      const client = server.grpcClient();
      const hostId = await register(client);
      const events = Array.from({ length: 250 }, () => makeEvent(hostId));
      const replies = await streamAll(client, events);
      expect(replies.map((r) => r.type)).toEqual(events.map(() => "ACK"));
    });
    await Promise.all(streams);

    const stored = await storedAlerts(database);
    expect(stored).toHaveLength(1_000);
    const newest = stored.at(-1)?.seq as number;
    await Promise.all(watchers.map((w) => w.untilSeq(newest)));
    for (const watcher of watchers) expectEverything(watcher, stored);
    expect([a.broadcaster.repaired, b.broadcaster.repaired]).toEqual([0, 0]);
    expect([a.broadcaster.watermark, b.broadcaster.watermark]).toEqual([newest, newest]);
  }, 60_000);

  it("an instance that learned nothing of the other's commits during an outage catches up as soon as Redis is back, without a poll or a commit of its own", async () => {
    const shared = settings({ feedPollMs: 0, feedGapRepairMs: 100 });
    const a = await startServer(database, shared);
    servers.push(a);
    const b = await startServer(other, shared);
    servers.push(b);
    const watcher = await subscriber(a);

    await redis.stop("SIGKILL");
    await until(
      "both instances notice the outage",
      () => a.broadcaster.redisConnected === false && b.broadcaster.redisConnected === false,
    );
    const client = b.grpcClient();
    const hostId = await register(client);
    const events = Array.from({ length: 200 }, () => makeEvent(hostId));
    expect((await streamAll(client, events)).every((r) => r.type === "ACK")).toBe(true);
    const stored = await storedAlerts(database);
    const newest = stored.at(-1)?.seq as number;
    // Nothing told A: no message, no poll, and no commit of its own to show a gap.
    expect(a.broadcaster.watermark).toBe(0);

    await redis.restart();
    await watcher.untilSeq(newest, 20_000);
    expectEverything(watcher, stored);
    expect(a.broadcaster.repaired).toBe(200);
  }, 60_000);

  it("when Redis dies mid-run, ingestion and local delivery go on, and once it is back every subscriber of both instances ends with every alert exactly once, in seq order", async () => {
    const shared = settings({ feedPollMs: 250, feedGapRepairMs: 100 });
    const a = await startServer(database, shared);
    servers.push(a);
    const b = await startServer(other, shared);
    servers.push(b);
    const watchers = [await subscriber(a), await subscriber(a), await subscriber(b)];
    const resuming = await subscriber(a);
    const fleet = [new StreamingAgent(a, 50), new StreamingAgent(b, 50)];
    agents.push(...fleet);
    const progress = (n: number) =>
      Promise.all(fleet.map((agent) => agent.acked(agent.ackedCount + n)));

    // Redis goes away while both agents are streaming.
    await progress(100);
    await redis.stop("SIGKILL");
    await until(
      "both instances notice the outage",
      () => a.broadcaster.redisConnected === false && b.broadcaster.redisConnected === false,
    );

    // Ingestion goes on, on both instances.
    await progress(100);
    // Local subscribers still get this instance's alerts.
    const probes: string[] = [];
    for (const server of [a, b]) {
      const client = server.grpcClient();
      const event = makeEvent(await register(client));
      expect((await streamAll(client, [event])).map((r) => r.type)).toEqual(["ACK"]);
      probes.push(event.alertId);
    }
    const [fromA, fromB] = probes as [string, string];
    await Promise.all([
      ...watchers.slice(0, 2).map((w) => w.untilAlert(fromA)),
      watchers[2]?.untilAlert(fromB),
      resuming.untilAlert(fromA),
    ]);
    expect(redis.running).toBe(false);
    expect([a.broadcaster.redisConnected, b.broadcaster.redisConnected]).toEqual([false, false]);
    // This one leaves during the outage and comes back after it with since.
    await resuming.disconnect();

    await redis.restart();
    await until(
      "both instances resubscribe",
      () => a.broadcaster.redisConnected === true && b.broadcaster.redisConnected === true,
    );
    await progress(100);
    await resuming.connect(a.wsUrl);
    await progress(50);
    await Promise.all(fleet.map((agent) => agent.stop()));

    expect(fleet.map((agent) => agent.nonAck)).toEqual([[], []]);
    const stored = await storedAlerts(database);
    expect(stored).toHaveLength(fleet.reduce((n, agent) => n + agent.ackedCount, 0) + 2);
    const newest = stored.at(-1)?.seq as number;
    await Promise.all([...watchers, resuming].map((w) => w.untilSeq(newest)));
    for (const watcher of [...watchers, resuming]) expectEverything(watcher, stored);
    // What the other instance committed during the outage came from PostgreSQL.
    expect(a.broadcaster.repaired).toBeGreaterThan(0);
    expect(b.broadcaster.repaired).toBeGreaterThan(0);
  }, 60_000);
});
