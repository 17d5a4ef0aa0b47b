/**
 * The server's Prometheus metrics (docs/metrics.md): one prom-client Registry per
 * server, never the global one, so several servers in one process keep apart.
 *
 * The hot path stays cheap: per event, the AlertService only increments plain numbers
 * in IngestStats and observes one histogram value per ACK; per batch, the writer
 * observes two. Everything else (counters kept elsewhere, gauges of current state) is
 * read from its owner when /metrics is scraped.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { DropReason } from "../broadcast/broadcaster.js";
import type { LiveFeed } from "../broadcast/live-feed.js";
import { createIngestStats, type IngestStats, rejectReasons } from "../ingest/ingest-stats.js";
import type { WsStats } from "../live/ws-route.js";
import type { BatchWriter } from "../storage/batch-writer.js";

/** What the scrape-time metrics read, once the server is built. */
export interface MetricsSources {
  readonly feed: LiveFeed;
  readonly wsStats: WsStats;
  readonly writer: BatchWriter;
  /** Whether the database answers and takes writes (the /readyz check). */
  readonly databaseUp: () => Promise<boolean>;
}

/** The metrics of one server, and the recorders its parts are given. */
export interface ServerMetrics {
  readonly registry: Registry;
  /** For the AlertService: counted per event, read at scrape time. */
  readonly ingest: IngestStats;
  /** For the batch writer: one call per INSERT statement. */
  readonly onFlush: (alerts: number, seconds: number) => void;
  /** Registers the metrics read from `sources` at scrape time. Call once. */
  watch(sources: MetricsSources): void;
}

const dropReasons: readonly DropReason[] = ["buffer_full"];

/** Builds the registry with the ingest and storage metrics and the process defaults. */
export function createMetrics(): ServerMetrics {
  const registry = new Registry();
  // Standard names (process_*, nodejs_*), unprefixed, so stock dashboards work.
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const ackLatency = new Histogram({
    name: "tripwire_ack_latency_seconds",
    help: "Time from reading an event off an agent stream to yielding its ACK (the batch commit is most of it).",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const batchSize = new Histogram({
    name: "tripwire_batch_size_alerts",
    help: "Alerts per INSERT statement of the batch writer.",
    buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
    registers,
  });
  const flushDuration = new Histogram({
    name: "tripwire_flush_duration_seconds",
    help: "Time each INSERT statement of the batch writer took, committed or failed.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  // prom-client's observe costs about 0.25 µs; once per ACK is affordable.
  const ingest = createIngestStats((seconds) => ackLatency.observe(seconds));

  counterOf(
    registers,
    "tripwire_events_received_total",
    "Events read from agent streams.",
    () => ingest.received,
  );
  counterOf(
    registers,
    "tripwire_events_accepted_total",
    "Events stored for the first time and ACKed.",
    () => ingest.accepted,
  );
  counterOf(
    registers,
    "tripwire_events_duplicate_total",
    "Events ACKed whose alert_id was already stored (agent replays); not stored again.",
    () => ingest.duplicates,
  );
  new Counter({
    name: "tripwire_events_rejected_total",
    help: "Events answered with ERROR (too_many_streams: the stream was ended instead), by reason.",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      for (const reason of rejectReasons) this.inc({ reason }, ingest.rejected[reason]);
    },
  });
  gaugeOf(
    registers,
    "tripwire_events_in_flight",
    "Events read from agent streams and not yet answered.",
    () => ingest.inFlight,
  );
  gaugeOf(
    registers,
    "tripwire_agent_streams_open",
    "StreamAlerts streams open now.",
    () => ingest.openStreams,
  );

  return {
    registry,
    ingest,
    onFlush(alerts, seconds) {
      batchSize.observe(alerts);
      flushDuration.observe(seconds);
    },
    watch(sources) {
      watchSources(registers, sources);
    },
  };
}

function watchSources(registers: Registry[], sources: MetricsSources): void {
  const { feed, wsStats, writer } = sources;
  gaugeOf(
    registers,
    "tripwire_writer_pending_events",
    "Events queued in the batch writer, not yet sent to the database.",
    () => writer.pendingCount,
  );
  gaugeOf(
    registers,
    "tripwire_ws_subscribers",
    "Live feed subscribers (WebSocket connections on /ws).",
    () => feed.size,
  );
  new Counter({
    name: "tripwire_ws_dropped_alerts_total",
    help: "Alerts not delivered to a live feed subscriber, by reason (buffer_full: it read too slowly).",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      for (const reason of dropReasons) this.inc({ reason }, feed.drops[reason]);
    },
  });
  new Counter({
    name: "tripwire_ws_closed_total",
    help: "WebSocket connections the server closed, by reason (too_slow: code 4008; unresponsive: no pong).",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      this.inc({ reason: "too_slow" }, wsStats.slowClosed);
      this.inc({ reason: "unresponsive" }, wsStats.deadTerminated);
    },
  });
  counterOf(
    registers,
    "tripwire_feed_repaired_alerts_total",
    "Alerts the live feed read back from the database because no message brought them.",
    () => feed.repaired,
  );
  new Gauge({
    name: "tripwire_database_up",
    help: "1 when the database answers and takes writes (as /readyz checks), else 0.",
    registers,
    async collect() {
      this.set((await sources.databaseUp()) ? 1 : 0);
    },
  });
  // Without REDIS_URL there is no Redis to be up or down: the metric is absent.
  if (feed.redisConnected !== undefined) {
    gaugeOf(
      registers,
      "tripwire_redis_up",
      "1 while the live feed's Redis subscription is connected, else 0.",
      () => (feed.redisConnected === true ? 1 : 0),
    );
  }
}

/** A counter whose value lives elsewhere: read when scraped. */
function counterOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A gauge of current state, read when scraped. */
function gaugeOf(registers: Registry[], name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers,
    collect() {
      this.set(read());
    },
  });
}
