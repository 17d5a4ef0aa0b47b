/**
 * GET /metrics (docs/metrics.md): real server, real gRPC agents, real /ws clients, and the
 * metrics read back over HTTP in the Prometheus text format, as a scraper reads them.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import type { AgentEvent } from "../../src/gen/alert/alert_pb.js";
import { openDatabase } from "../../src/storage/database.js";
import { decodeReply, makeEvent, type Reply, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { startPrivateRedis } from "../support/redis-server.js";
import { type RunningServer, startServer } from "../support/server.js";
import { redisTargets } from "../support/services.js";
import { connectFeed, connectLive, type FeedClient, subscribers } from "../support/ws-client.js";

/** One scrape: every sample line, keyed by name and labels as printed. */
type Samples = ReadonlyMap<string, number>;

function parseSamples(text: string): Samples {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

async function scrape(server: RunningServer, init?: RequestInit): Promise<Samples> {
  const res = await fetch(`${server.baseUrl}/metrics`, init);
  expect(res.status).toBe(200);
  return parseSamples(await res.text());
}

/** The value of one sample; fails the test when the scrape lacks it. */
function value(samples: Samples, key: string): number {
  const v = samples.get(key);
  if (v === undefined) throw new Error(`no sample ${key} in the scrape`);
  return v;
}

/** How much each sample grew between two scrapes. */
function deltas(before: Samples, after: Samples, keys: readonly string[]): Record<string, number> {
  return Object.fromEntries(keys.map((k) => [k, value(after, k) - value(before, k)]));
}

/** Scrapes until `key` has `expected`: for state that settles after a socket closes. */
async function scrapeUntil(server: RunningServer, key: string, expected: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  let last: number | undefined;
  while (Date.now() < deadline) {
    last = (await scrape(server)).get(key);
    if (last === expected) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`${key} stayed ${last}, expected ${expected}`);
}

const rejected = (reason: string): string => `tripwire_events_rejected_total{reason="${reason}"}`;

/** About 60 kB of event_detail, so a few dozen alerts fill the socket buffers. */
const bulky = new TextEncoder().encode(JSON.stringify({ blob: "x".repeat(60_000) }));

describe.each(backends)("GET /metrics [%s]", (kind) => {
  const databases: TestDatabase[] = [];
  const servers: RunningServer[] = [];
  const clients: FeedClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    for (const s of servers.splice(0)) await s.close();
    for (const d of databases.splice(0)) await d.dispose();
  });

  async function start(overrides: Partial<Config> = {}): Promise<RunningServer> {
    const database = await createTestDatabase(kind);
    databases.push(database);
    const server = await startServer(database, overrides);
    servers.push(server);
    return server;
  }

  it("answers in the Prometheus text format with every tripwire metric and the process defaults", async () => {
    const server = await start();
    const res = await fetch(`${server.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    const names = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(names).toEqual(
      expect.arrayContaining([
        "tripwire_events_received_total counter",
        "tripwire_events_accepted_total counter",
        "tripwire_events_duplicate_total counter",
        "tripwire_events_rejected_total counter",
        "tripwire_events_in_flight gauge",
        "tripwire_agent_streams_open gauge",
        "tripwire_ack_latency_seconds histogram",
        "tripwire_batch_size_alerts histogram",
        "tripwire_flush_duration_seconds histogram",
        "tripwire_writer_pending_events gauge",
        "tripwire_ws_subscribers gauge",
        "tripwire_ws_dropped_alerts_total counter",
        "tripwire_ws_closed_total counter",
        "tripwire_feed_repaired_alerts_total counter",
        "tripwire_database_up gauge",
        "process_cpu_seconds_total counter",
        "nodejs_eventloop_lag_seconds gauge",
      ]),
    );
    const samples = parseSamples(text);
    expect(value(samples, "tripwire_database_up")).toBe(1);
    // Every reason is there from the start, at 0, so rate() works before the first one.
    expect(value(samples, rejected("invalid"))).toBe(0);
    expect(value(samples, rejected("shutting_down"))).toBe(0);
    // Without REDIS_URL there is no Redis status at all.
    expect(samples.has("tripwire_redis_up")).toBe(false);
    // Low cardinality: no label but reason and le on our metrics.
    const ours = text.split("\n").filter((line) => line.startsWith("tripwire_"));
    const labels = new Set(
      ours.flatMap((line) => [...line.matchAll(/[{,](\w+)="/g)].map((m) => m[1])),
    );
    expect([...labels].sort()).toEqual(["le", "reason"]);
  });

  it("counts received, accepted, duplicate and rejected-by-reason events exactly, with one ACK latency per ACK and one batch per flush", async () => {
    // Batches close when 4 alerts are pending, never by the clock: one batch per stream below.
    const server = await start({ batchSize: 4, flushIntervalMs: 60_000 });
    const client = server.grpcClient();
    const hostId = await register(client);
    const keys = [
      "tripwire_events_received_total",
      "tripwire_events_accepted_total",
      "tripwire_events_duplicate_total",
      rejected("invalid"),
      rejected("too_old"),
      rejected("too_new"),
      rejected("unknown_host"),
      rejected("rate_limited"),
      "tripwire_ack_latency_seconds_count",
      'tripwire_ack_latency_seconds_bucket{le="+Inf"}',
      "tripwire_batch_size_alerts_count",
      "tripwire_batch_size_alerts_sum",
      "tripwire_flush_duration_seconds_count",
    ];
    const before = await scrape(server);

    const [a, b, c] = [makeEvent(hostId), makeEvent(hostId), makeEvent(hostId)];
    const nowUs = BigInt(Date.now()) * 1000n;
    const first = await streamAll(client, [
      a,
      b,
      c,
      a, // the agent's replay, in the same batch: ACKed, stored once
      makeEvent(hostId, { severity: "LOUD" }),
      makeEvent(hostId, { timestampUs: nowUs - 3_600_000_000n }),
      makeEvent(randomUUID()),
    ]);
    expect(first.map((r) => r.type).sort()).toEqual([
      "ACK",
      "ACK",
      "ACK",
      "ACK",
      "ERROR",
      "ERROR",
      "ERROR",
    ]);
    const afterFirst = await scrape(server);
    expect(deltas(before, afterFirst, keys)).toEqual({
      tripwire_events_received_total: 7,
      tripwire_events_accepted_total: 3,
      tripwire_events_duplicate_total: 1,
      [rejected("invalid")]: 1,
      [rejected("too_old")]: 1,
      [rejected("too_new")]: 0,
      [rejected("unknown_host")]: 1,
      [rejected("rate_limited")]: 0,
      tripwire_ack_latency_seconds_count: 4,
      'tripwire_ack_latency_seconds_bucket{le="+Inf"}': 4,
      tripwire_batch_size_alerts_count: 1,
      tripwire_batch_size_alerts_sum: 3, // the copy of `a` is not inserted twice
      tripwire_flush_duration_seconds_count: 1,
    });

    // Later, as after a reconnect: `b` again (only the database can tell) and three new.
    const second = await streamAll(server.grpcClient(), [
      b,
      makeEvent(hostId),
      makeEvent(hostId),
      makeEvent(hostId, { timestampUs: nowUs + 3_600_000_000n }),
      makeEvent(hostId),
    ]);
    expect(second.filter((r) => r.type === "ACK")).toHaveLength(4);
    const afterSecond = await scrape(server);
    expect(deltas(afterFirst, afterSecond, keys)).toEqual({
      tripwire_events_received_total: 5,
      tripwire_events_accepted_total: 3,
      tripwire_events_duplicate_total: 1,
      [rejected("invalid")]: 0,
      [rejected("too_old")]: 0,
      [rejected("too_new")]: 1,
      [rejected("unknown_host")]: 0,
      [rejected("rate_limited")]: 0,
      tripwire_ack_latency_seconds_count: 4,
      'tripwire_ack_latency_seconds_bucket{le="+Inf"}': 4,
      tripwire_batch_size_alerts_count: 1,
      tripwire_batch_size_alerts_sum: 4,
      tripwire_flush_duration_seconds_count: 1,
    });
    expect(value(afterSecond, "tripwire_events_in_flight")).toBe(0);
    expect(value(afterSecond, "tripwire_agent_streams_open")).toBe(0);
  });

  it("counts events refused by the host rate limit as rate_limited", async () => {
    const server = await start({ hostRateLimit: 1, hostRateBurst: 2 });
    const client = server.grpcClient();
    const hostId = await register(client);
    const replies = await streamAll(
      client,
      Array.from({ length: 5 }, () => makeEvent(hostId)),
    );
    const limited = replies.filter((r) => r.error?.startsWith("rate limited")).length;
    expect(limited).toBeGreaterThanOrEqual(2);
    const samples = await scrape(server);
    expect(value(samples, rejected("rate_limited"))).toBe(limited);
    expect(value(samples, "tripwire_events_accepted_total")).toBe(5 - limited);
  });

  it("shows an open stream and its unanswered events while the agent is connected, and neither once it is gone", async () => {
    // Nothing is committed until the test flushes the writer.
    const server = await start({ flushIntervalMs: 60_000 });
    const client = server.grpcClient();
    const hostId = await register(client);
    let finish = (): void => {};
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    async function* send(): AsyncGenerator<AgentEvent> {
      yield makeEvent(hostId);
      yield makeEvent(hostId);
      await finished;
    }
    const replies: Reply[] = [];
    let onReply = (): void => {};
    const streaming = (async () => {
      for await (const cmd of client.streamAlerts(send())) {
        replies.push(decodeReply(cmd));
        onReply();
      }
    })();

    await scrapeUntil(server, "tripwire_events_received_total", 2);
    let samples = await scrape(server);
    expect(value(samples, "tripwire_agent_streams_open")).toBe(1);
    expect(value(samples, "tripwire_events_in_flight")).toBe(2);
    expect(value(samples, "tripwire_writer_pending_events")).toBe(2);

    const acked = new Promise<void>((resolve) => {
      onReply = () => {
        if (replies.length === 2) resolve();
      };
    });
    await server.writer.flush();
    await acked;
    samples = await scrape(server);
    expect(value(samples, "tripwire_agent_streams_open")).toBe(1);
    expect(value(samples, "tripwire_events_in_flight")).toBe(0);
    expect(value(samples, "tripwire_writer_pending_events")).toBe(0);

    finish();
    await streaming;
    samples = await scrape(server);
    expect(value(samples, "tripwire_agent_streams_open")).toBe(0);
    expect(value(samples, "tripwire_events_in_flight")).toBe(0);
  });

  it("an agent that goes away with events unanswered leaves no stream or in-flight event counted", async () => {
    const server = await start({ flushIntervalMs: 60_000 });
    const client = server.grpcClient();
    const hostId = await register(client);
    const abort = new AbortController();
    async function* send(): AsyncGenerator<AgentEvent> {
      yield makeEvent(hostId);
      yield makeEvent(hostId);
      yield makeEvent(hostId);
      await new Promise((resolve) => abort.signal.addEventListener("abort", resolve));
    }
    const streaming = (async () => {
      for await (const _ of client.streamAlerts(send(), { signal: abort.signal })) {
      }
    })().catch(() => {});
    await scrapeUntil(server, "tripwire_events_in_flight", 3);
    abort.abort();
    await streaming;
    await scrapeUntil(server, "tripwire_agent_streams_open", 0);
    expect(value(await scrape(server), "tripwire_events_in_flight")).toBe(0);
  });

  it("counts WebSocket subscribers while they are connected", async () => {
    const server = await start();
    expect(value(await scrape(server), "tripwire_ws_subscribers")).toBe(0);
    const one = await connectLive(server.wsUrl);
    clients.push(one.client);
    const two = await connectLive(server.wsUrl);
    clients.push(two.client);
    // `live` arrives after the route subscribed: no waiting needed.
    expect(value(await scrape(server), "tripwire_ws_subscribers")).toBe(2);
    one.client.socket.close();
    await one.client.closed;
    await scrapeUntil(server, "tripwire_ws_subscribers", 1);
  });

  it("counts the alerts dropped for a client that stopped reading, by reason, and its 4008 close", async () => {
    const server = await start({ flushIntervalMs: 5, subscriberBuffer: 2, wsHighWaterBytes: 1024 });
    const hostId = await register(server.grpcClient());
    const client = await connectFeed(server.wsUrl);
    clients.push(client);
    await subscribers(server.broadcaster, 1);
    client.pauseReading();
    for (let round = 0; server.broadcaster.drops.buffer_full === 0; round++) {
      if (round === 200) throw new Error("200 rounds of alerts and nothing dropped");
      const events = Array.from({ length: 8 }, () => makeEvent(hostId, { eventDetailJson: bulky }));
      const replies = await streamAll(server.grpcClient(), events);
      expect(replies.every((r) => r.type === "ACK")).toBe(true);
    }
    // Every batch was published before its ACKs went out: the count is final.
    const dropped = server.broadcaster.drops.buffer_full;
    const samples = await scrape(server);
    expect(value(samples, 'tripwire_ws_dropped_alerts_total{reason="buffer_full"}')).toBe(dropped);
    // A version-0 client that missed alerts is closed as too slow.
    await scrapeUntil(server, 'tripwire_ws_closed_total{reason="too_slow"}', 1);
    client.resumeReading();
    expect((await client.closed).code).toBe(4008);
    expect(value(await scrape(server), 'tripwire_ws_closed_total{reason="unresponsive"}')).toBe(0);
  }, 90_000);

  it("with TRIPWIRE_METRICS_TOKEN, refuses a scrape without the token (401, JSON) and answers one with it as Bearer or ?token=", async () => {
    const server = await start({ metricsToken: "s3cret-token" });
    const none = await fetch(`${server.baseUrl}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get("content-type")).toMatch(/^application\/json/);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    expect(((await none.json()) as { error: string }).error).toMatch(
      /^a token is required: expected the value of TRIPWIRE_METRICS_TOKEN/,
    );
    const wrong = await fetch(`${server.baseUrl}/metrics`, {
      headers: { authorization: "Bearer not-it" },
    });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toMatch(/^the token is not valid/);
    const wrongQuery = await fetch(`${server.baseUrl}/metrics?token=not-it`);
    expect(wrongQuery.status).toBe(401);

    const bearer = await scrape(server, { headers: { authorization: "Bearer s3cret-token" } });
    expect(value(bearer, "tripwire_database_up")).toBe(1);
    const query = await fetch(`${server.baseUrl}/metrics?token=s3cret-token`);
    expect(query.status).toBe(200);
    expect(query.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it("two servers in one process keep their own metrics", async () => {
    const a = await start();
    const b = await start();
    const hostId = await register(a.grpcClient());
    await streamAll(a.grpcClient(), [makeEvent(hostId), makeEvent(hostId)]);
    const fromA = await scrape(a);
    const fromB = await scrape(b);
    expect(value(fromA, "tripwire_events_received_total")).toBe(2);
    expect(value(fromA, "tripwire_ack_latency_seconds_count")).toBe(2);
    expect(value(fromB, "tripwire_events_received_total")).toBe(0);
    expect(value(fromB, "tripwire_ack_latency_seconds_count")).toBe(0);
  });

  it("reports Redis down (0) while REDIS_URL points at nothing", async () => {
    const server = await start({ redisUrl: "redis://127.0.0.1:1", feedPollMs: 0 });
    expect(value(await scrape(server), "tripwire_redis_up")).toBe(0);
  });
});

describe.each(redisTargets)("GET /metrics with Redis [%s]", () => {
  it("reports Redis up (1) while the relay is connected and 0 once Redis is gone", async () => {
    const redis = await startPrivateRedis();
    const database = await createTestDatabase("pglite");
    const server = await startServer(database, {
      redisUrl: redis.url,
      redisChannel: `tripwire:test:${randomUUID()}`,
    });
    try {
      expect(value(await scrape(server), "tripwire_redis_up")).toBe(1);
      await redis.stop();
      await scrapeUntil(server, "tripwire_redis_up", 0);
    } finally {
      await server.close();
      await database.dispose();
      if (redis.running) await redis.stop();
    }
  });
});

describe.each(backends.filter((k) => k === "postgres"))(
  "GET /metrics, database faults [%s]",
  (kind) => {
    it("while a table lock stalls writes, counts the ERRORs as database_unavailable and reports the database down, then up again", async () => {
      const owner = await createTestDatabase(kind);
      const database = await openDatabase({ url: owner.url as string, statementTimeoutMs: 300 });
      const server = await startServer(database, { flushIntervalMs: 10 });
      const locker = new pg.Client({ connectionString: owner.url });
      await locker.connect();
      try {
        const client = server.grpcClient();
        const hostId = await register(client);
        expect(value(await scrape(server), "tripwire_database_up")).toBe(1);

        await locker.query("begin");
        await locker.query("lock table alerts in access exclusive mode");
        const events = Array.from({ length: 5 }, () => makeEvent(hostId));
        const during = await streamAll(client, events);
        expect(during.map((r) => r.type)).toEqual(Array(5).fill("ERROR"));
        const down = await scrape(server);
        expect(value(down, rejected("database_unavailable"))).toBe(5);
        expect(value(down, "tripwire_events_accepted_total")).toBe(0);
        expect(value(down, "tripwire_database_up")).toBe(0);
        // Failed statements are timed too.
        expect(value(down, "tripwire_flush_duration_seconds_count")).toBeGreaterThan(0);

        await locker.query("rollback");
        expect(value(await scrape(server), "tripwire_database_up")).toBe(1);
      } finally {
        await locker.end().catch(() => {});
        await server.close();
        await database.close();
        await owner.dispose();
      }
    });
  },
);
