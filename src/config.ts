/**
 * Every setting of the server, read from the environment in this one module.
 *
 * Each entry carries its environment variable, default and doc, so the README table
 * and `--help` come from the same place. A bad value stops startup with a message that
 * names the variable and what it accepts.
 */

/** One setting: where it comes from, what it accepts and what it means. */
interface Setting<T> {
  readonly env: string;
  readonly doc: string;
  /** The default as written in docs; `undefined` means "unset". */
  readonly defaultText: string;
  readonly parse: (raw: string | undefined) => T;
}

/** Thrown for a setting whose value is not acceptable; the message names the variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

function integer(env: string, def: number, min: number, max: number, doc: string): Setting<number> {
  return {
    env,
    doc,
    defaultText: String(def),
    parse(raw) {
      if (raw === undefined || raw.trim() === "") return def;
      const s = raw.trim();
      const n = Number(s);
      if (!/^-?\d+$/.test(s) || !Number.isSafeInteger(n) || n < min || n > max) {
        throw new ConfigError(
          `${env}=${JSON.stringify(raw)} is not valid: expected a whole number from ${min} to ${max}`,
        );
      }
      return n;
    },
  };
}

function text(env: string, def: string, doc: string): Setting<string> {
  return {
    env,
    doc,
    defaultText: def === "" ? "(unset)" : def,
    parse: (raw) => (raw === undefined || raw.trim() === "" ? def : raw.trim()),
  };
}

function optionalUrl(
  env: string,
  protocols: readonly string[],
  doc: string,
): Setting<string | undefined> {
  return {
    env,
    doc,
    defaultText: "(unset)",
    parse(raw) {
      if (raw === undefined || raw.trim() === "") return undefined;
      const expected = protocols.map((p) => `${p}//…`).join(" or ");
      let url: URL;
      try {
        url = new URL(raw.trim());
      } catch {
        throw new ConfigError(`${env} is not a valid URL: expected ${expected}`);
      }
      if (!protocols.includes(url.protocol)) {
        throw new ConfigError(
          `${env} has protocol ${url.protocol.slice(0, -1)}: expected ${expected}`,
        );
      }
      return raw.trim();
    },
  };
}

function optionalPath(env: string, doc: string): Setting<string | undefined> {
  return {
    env,
    doc,
    defaultText: "(unset)",
    parse: (raw) => (raw === undefined || raw.trim() === "" ? undefined : raw.trim()),
  };
}

function oneOf<const T extends string>(
  env: string,
  values: readonly T[],
  def: T,
  defaultText: string,
  doc: string,
): Setting<T> {
  return {
    env,
    doc,
    defaultText,
    parse(raw) {
      if (raw === undefined || raw.trim() === "") return def;
      const value = raw.trim() as T;
      if (!values.includes(value)) {
        throw new ConfigError(
          `${env}=${JSON.stringify(raw)} is not valid: expected one of ${values.join(", ")}`,
        );
      }
      return value;
    },
  };
}

function list(env: string, doc: string): Setting<readonly string[]> {
  return {
    env,
    doc,
    defaultText: "(unset)",
    parse: (raw) =>
      (raw ?? "")
        .split(",")
        .map((v) => v.trim())
        .filter((v) => v !== ""),
  };
}

/** The settings, in the order the docs list them. */
export const settings = {
  port: integer(
    "PORT",
    8080,
    0,
    65535,
    "TCP port for every protocol (gRPC, Connect, gRPC-Web, WebSocket, HTTP).",
  ),
  host: text("HOST", "127.0.0.1", "Address to listen on; `0.0.0.0` or `::` for every interface."),
  tlsCert: optionalPath(
    "TRIPWIRE_TLS_CERT",
    "PEM file of the server certificate (and chain). Set with `TRIPWIRE_TLS_KEY` to serve TLS: HTTP/2 and HTTP/1.1 by ALPN on the one port. Unset: cleartext (h2c and HTTP/1.1).",
  ),
  tlsKey: optionalPath("TRIPWIRE_TLS_KEY", "PEM file of the server certificate's private key."),
  tlsClientCa: optionalPath(
    "TRIPWIRE_TLS_CLIENT_CA",
    "PEM bundle of the CA(s) that issue agent certificates (needs TLS). Set: agents are asked for a client certificate, its CN is their hostname and they may only send events for that host. Browsers (`/`, `/ws`) need none.",
  ),
  tlsClientAuth: oneOf(
    "TRIPWIRE_TLS_CLIENT_AUTH",
    ["require", "optional"],
    "require",
    "require",
    "With `TRIPWIRE_TLS_CLIENT_CA`: `require` refuses AlertService calls without a verified client certificate (Unauthenticated); `optional` also accepts calls without one (not bound to a host). A certificate that fails verification is refused either way.",
  ),
  databaseUrl: optionalUrl(
    "DATABASE_URL",
    ["postgres:", "postgresql:"],
    "PostgreSQL connection URL. Unset: the embedded PGlite database in `TRIPWIRE_DATA_DIR`.",
  ),
  dataDir: text(
    "TRIPWIRE_DATA_DIR",
    ".data/pglite",
    "Directory of the embedded database (used only without `DATABASE_URL`).",
  ),
  dbPoolSize: integer(
    "TRIPWIRE_DB_POOL_SIZE",
    10,
    1,
    1000,
    "Maximum PostgreSQL connections of this instance.",
  ),
  dbStatementTimeoutMs: integer(
    "TRIPWIRE_DB_STATEMENT_TIMEOUT_MS",
    5_000,
    0,
    3_600_000,
    "PostgreSQL statement timeout (lock waits included): a stalled database answers events with ERROR after this long instead of leaving them waiting; 0: none.",
  ),
  maxEventAgeSeconds: integer(
    "TRIPWIRE_MAX_EVENT_AGE_SECONDS",
    300,
    1,
    31_536_000,
    "Events older than this (by their timestamp) are rejected.",
  ),
  maxFutureSkewSeconds: integer(
    "TRIPWIRE_MAX_FUTURE_SKEW_SECONDS",
    60,
    0,
    86_400,
    "Events this far ahead of the server clock are rejected.",
  ),
  flushIntervalMs: integer(
    "TRIPWIRE_FLUSH_INTERVAL_MS",
    100,
    1,
    60_000,
    "The batch writer commits pending alerts at least this often.",
  ),
  batchSize: integer(
    "TRIPWIRE_BATCH_SIZE",
    1000,
    1,
    100_000,
    "The batch writer commits as soon as this many alerts are pending.",
  ),
  maxConcurrentFlushes: integer(
    "TRIPWIRE_MAX_CONCURRENT_FLUSHES",
    2,
    1,
    64,
    "Batches being committed at once (PostgreSQL; the embedded database runs one at a time).",
  ),
  maxInFlightPerStream: integer(
    "TRIPWIRE_MAX_IN_FLIGHT_PER_STREAM",
    1000,
    1,
    1_000_000,
    "Un-ACKed events per agent stream; at the bound the server stops reading that stream until replies go out.",
  ),
  quietStreamRate: integer(
    "TRIPWIRE_QUIET_STREAM_RATE",
    100,
    0,
    1_000_000,
    "A stream that sent at most this many events in the current and in the last second is quiet: while busier streams' alerts are queued or being committed, its events go out in the next free flush slot in a batch of their own (taking turns with the busy streams' batches) instead of waiting for the busy streams' next batch, so one host's burst does not delay the other hosts' ACKs. 0: off.",
  ),
  replyStallTimeoutMs: integer(
    "TRIPWIRE_REPLY_STALL_TIMEOUT_MS",
    60_000,
    100,
    3_600_000,
    "An agent stream whose replies could not be written for this long (the agent stopped reading them) is cancelled, freeing what it holds; the agent resends its un-ACKed events.",
  ),
  grpcFastPath: oneOf(
    "TRIPWIRE_GRPC_FAST_PATH",
    ["on", "off"],
    "on",
    "on",
    '`on`: StreamAlerts over plain gRPC (HTTP/2, binary, uncompressed, no `grpc-timeout`: what agents send) is served by a dedicated handler instead of connect-es\'s per-message pipeline, with the same bytes on the wire (docs/performance.md, "Ingest hot path"). `off`: Connect serves it like every other protocol.',
  ),
  maxPendingEvents: integer(
    "TRIPWIRE_MAX_PENDING_EVENTS",
    100_000,
    1,
    10_000_000,
    "Events waiting for the batch writer across all streams; at the bound streams wait before reading more.",
  ),
  hostRateLimit: integer(
    "TRIPWIRE_HOST_RATE_LIMIT",
    10_000,
    0,
    10_000_000,
    'Events per second one host may send (token bucket); beyond it, events get ERROR "rate limited". 0: no limit.',
  ),
  hostRateBurst: integer(
    "TRIPWIRE_HOST_RATE_BURST",
    20_000,
    1,
    100_000_000,
    "Events one host may send at once above its rate before it is limited.",
  ),
  maxStreamsPerHost: integer(
    "TRIPWIRE_MAX_STREAMS_PER_HOST",
    4,
    0,
    10_000,
    "Concurrent StreamAlerts streams sending for one host; a stream beyond it ends with RESOURCE_EXHAUSTED. 0: no limit.",
  ),
  maxStreamsPerConnection: integer(
    "TRIPWIRE_MAX_STREAMS_PER_CONNECTION",
    100,
    1,
    10_000,
    "Concurrent HTTP/2 streams per agent connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).",
  ),
  http2KeepaliveMs: integer(
    "TRIPWIRE_HTTP2_KEEPALIVE_MS",
    30_000,
    0,
    3_600_000,
    "Interval of HTTP/2 pings to agents; a connection that does not answer one in time is closed and its streams freed. 0: off.",
  ),
  hostSeenFlushMs: integer(
    "TRIPWIRE_HOST_SEEN_FLUSH_MS",
    5_000,
    10,
    600_000,
    "How often hosts' `last_seen` is written (one statement for every host seen since the last write) and silent hosts are looked for.",
  ),
  hostOfflineAfterMs: integer(
    "TRIPWIRE_HOST_OFFLINE_AFTER_MS",
    90_000,
    20,
    86_400_000,
    "A host with no open StreamAlerts stream that has not been seen for this long is OFFLINE. At least twice `TRIPWIRE_HOST_SEEN_FLUSH_MS`.",
  ),
  maxEventDetailBytes: integer(
    "TRIPWIRE_MAX_EVENT_DETAIL_BYTES",
    65_536,
    2,
    16_777_216,
    "Largest accepted event_detail_json.",
  ),
  maxRuleNameLength: integer(
    "TRIPWIRE_MAX_RULE_NAME_LENGTH",
    256,
    1,
    65_536,
    "Longest accepted rule_name, in characters.",
  ),
  maxMessageBytes: integer(
    "TRIPWIRE_MAX_MESSAGE_BYTES",
    1_048_576,
    1024,
    268_435_456,
    "Largest RPC message the server reads or writes.",
  ),
  subscriberBuffer: integer(
    "TRIPWIRE_SUBSCRIBER_BUFFER",
    64,
    1,
    1_000_000,
    "Per-WebSocket-subscriber buffer, in committed batches; a full buffer drops alerts for that subscriber alone.",
  ),
  wsCompression: oneOf(
    "TRIPWIRE_WS_COMPRESSION",
    ["on", "off"],
    "on",
    "on",
    "Offer permessage-deflate on /ws: each batch is compressed once and the same frame goes to every version-1 subscriber that accepted it (about 9× fewer bytes).",
  ),
  wsHighWaterBytes: integer(
    "TRIPWIRE_WS_HIGH_WATER_BYTES",
    1_048_576,
    1024,
    1_073_741_824,
    "Bytes queued on one WebSocket before the server waits for the browser to read them.",
  ),
  wsReplayLimit: integer(
    "TRIPWIRE_WS_REPLAY_LIMIT",
    10_000,
    1,
    10_000_000,
    "Most alerts a /ws client can catch up on with `since` (or load with `history`); further behind, it is told to reload.",
  ),
  wsHeartbeatMs: integer(
    "TRIPWIRE_WS_HEARTBEAT_MS",
    15_000,
    100,
    3_600_000,
    "Interval of WebSocket pings (and `heartbeat` messages); a connection that misses one is terminated.",
  ),
  wsSlowCloseMs: integer(
    "TRIPWIRE_WS_SLOW_CLOSE_MS",
    10_000,
    100,
    3_600_000,
    "A /ws client that keeps losing alerts for this long is closed with code 4008.",
  ),
  wsMaxMessageBytes: integer(
    "TRIPWIRE_WS_MAX_MESSAGE_BYTES",
    16_384,
    128,
    16_777_216,
    "Largest message a /ws client may send (larger: close code 1009).",
  ),
  wsMaxConnections: integer(
    "TRIPWIRE_WS_MAX_CONNECTIONS",
    10_000,
    1,
    1_000_000,
    "Most /ws connections this instance serves; beyond it, new ones get HTTP 503.",
  ),
  wsMaxConnectionsPerToken: integer(
    "TRIPWIRE_WS_MAX_CONNECTIONS_PER_TOKEN",
    100,
    1,
    1_000_000,
    "Most /ws connections open at once with one token; beyond it, new ones get HTTP 429.",
  ),
  wsTokens: list(
    "TRIPWIRE_WS_TOKENS",
    "Comma-separated access tokens for /ws (`?token=` or `Authorization: Bearer`). Unset: the feed is open, and a warning is logged.",
  ),
  wsAllowedOrigins: list(
    "TRIPWIRE_WS_ALLOWED_ORIGINS",
    "Comma-separated `Origin` values allowed to open /ws (e.g. `https://soc.example.com`). Unset: any.",
  ),
  apiDefaultLimit: integer(
    "TRIPWIRE_API_DEFAULT_LIMIT",
    100,
    1,
    100_000,
    "Alerts per page of GET /api/alerts when the request gives no `limit`.",
  ),
  apiMaxLimit: integer(
    "TRIPWIRE_API_MAX_LIMIT",
    1000,
    1,
    100_000,
    "Largest `limit` GET /api/alerts accepts; a larger one is refused with 400.",
  ),
  retentionDays: integer(
    "TRIPWIRE_RETENTION_DAYS",
    0,
    0,
    36_500,
    "Alerts received more than this many days ago are deleted by a periodic job. 0: keep every alert forever (evidence is only deleted when asked for).",
  ),
  retentionIntervalMs: integer(
    "TRIPWIRE_RETENTION_INTERVAL_MS",
    3_600_000,
    10,
    86_400_000,
    "How often the retention job runs (also once at start), with `TRIPWIRE_RETENTION_DAYS` above 0.",
  ),
  retentionBatch: integer(
    "TRIPWIRE_RETENTION_BATCH",
    1000,
    1,
    100_000,
    "Alerts the retention job deletes per statement; it yields between statements, so ingestion goes on.",
  ),
  redisUrl: optionalUrl(
    "REDIS_URL",
    ["redis:", "rediss:"],
    "Redis for several instances: alerts committed by one reach the /ws clients of all.",
  ),
  redisChannel: text(
    "TRIPWIRE_REDIS_CHANNEL",
    "tripwire:alerts",
    "Redis pub/sub channel of the live feed.",
  ),
  feedGapRepairMs: integer(
    "TRIPWIRE_FEED_GAP_REPAIR_MS",
    250,
    1,
    60_000,
    "How long the live feed waits for a missing batch from another instance before reading it from the database.",
  ),
  feedPollMs: integer(
    "TRIPWIRE_FEED_POLL_MS",
    1_000,
    0,
    3_600_000,
    "How often the live feed checks the database for alerts that no message announced (other instances, Redis outages); 0: never.",
  ),
  metricsToken: text(
    "TRIPWIRE_METRICS_TOKEN",
    "",
    "Token that `GET /metrics` requires (`Authorization: Bearer` or `?token=`). Unset: /metrics is open to anyone who can reach the port.",
  ),
  shutdownTimeoutMs: integer(
    "TRIPWIRE_SHUTDOWN_TIMEOUT_MS",
    10_000,
    0,
    600_000,
    "On shutdown, how long open streams may finish before they are ended.",
  ),
  logLevel: text(
    "TRIPWIRE_LOG_LEVEL",
    "info",
    "One of fatal, error, warn, info, debug, trace, silent.",
  ),
} as const;

type Settings = typeof settings;

/** The validated configuration of one server. */
export type Config = { readonly [K in keyof Settings]: ReturnType<Settings[K]["parse"]> };

const logLevels = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/**
 * Reads and validates every setting from `env` (usually `process.env`).
 * Throws a ConfigError naming the first bad variable.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const out: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(settings)) {
    out[key] = setting.parse(env[setting.env]);
  }
  const config = out as Config;
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new ConfigError("TRIPWIRE_TLS_CERT and TRIPWIRE_TLS_KEY must be set together");
  }
  if (config.tlsClientCa !== undefined && config.tlsCert === undefined) {
    throw new ConfigError(
      "TRIPWIRE_TLS_CLIENT_CA needs TLS: set TRIPWIRE_TLS_CERT and TRIPWIRE_TLS_KEY too",
    );
  }
  if ((env.TRIPWIRE_TLS_CLIENT_AUTH ?? "").trim() !== "" && config.tlsClientCa === undefined) {
    // Asking for `require` without a CA would leave agents unauthenticated, silently.
    throw new ConfigError(
      "TRIPWIRE_TLS_CLIENT_AUTH needs TRIPWIRE_TLS_CLIENT_CA: without a CA no agent is asked for a certificate",
    );
  }
  if (config.apiDefaultLimit > config.apiMaxLimit) {
    throw new ConfigError(
      `TRIPWIRE_API_DEFAULT_LIMIT (${config.apiDefaultLimit}) is above TRIPWIRE_API_MAX_LIMIT (${config.apiMaxLimit}): expected at most the maximum`,
    );
  }
  if (config.hostOfflineAfterMs < 2 * config.hostSeenFlushMs) {
    // Instances refresh last_seen of connected hosts between flushes; a shorter time
    // would let another instance take a quiet, connected host for a silent one.
    throw new ConfigError(
      `TRIPWIRE_HOST_OFFLINE_AFTER_MS=${config.hostOfflineAfterMs} is not valid: expected at least twice TRIPWIRE_HOST_SEEN_FLUSH_MS (${config.hostSeenFlushMs})`,
    );
  }
  if (!logLevels.has(config.logLevel)) {
    throw new ConfigError(
      `TRIPWIRE_LOG_LEVEL=${JSON.stringify(config.logLevel)} is not valid: expected one of ${[...logLevels].join(", ")}`,
    );
  }
  return config;
}

/** The default configuration, with `overrides` applied: for tests and embedding. */
export function configWith(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}

/** The settings as a Markdown table (README, `--help`): one row per variable. */
export function settingsTable(): string {
  const rows = Object.values(settings).map(
    (s) =>
      `| \`${s.env}\` | ${s.defaultText === "(unset)" ? "(unset)" : `\`${s.defaultText}\``} | ${s.doc} |`,
  );
  return ["| Variable | Default | Meaning |", "|---|---|---|", ...rows].join("\n");
}
