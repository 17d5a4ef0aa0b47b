/**
 * buildServer: the whole server as a Fastify instance that has not started listening.
 * main.ts is the only place that reads the environment, listens and handles signals.
 */
import type { TLSSocket } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import websocket from "@fastify/websocket";
import Fastify, { type FastifyInstance, type FastifyServerOptions } from "fastify";
import { registerAlertsRoute } from "./api/alerts-route.js";
import { registerHostsRoute } from "./api/hosts-route.js";
import { type LiveFeed, startLiveFeed } from "./broadcast/live-feed.js";
import type { Config } from "./config.js";
import { AlertService } from "./gen/alert/alert_pb.js";
import type { HostLiveness } from "./hosts/host-liveness.js";
import { startHostLiveness } from "./hosts/start-host-liveness.js";
import { jsonTextDecoder } from "./http/json-text-decoder.js";
import { registerMetricsRoute } from "./http/metrics-route.js";
import { createOnePortServer } from "./http/one-port.js";
import { createTlsServer, readTlsMaterial } from "./http/tls.js";
import { createViewerAccessCheck } from "./http/viewer-access.js";
import { agentConnection, connectionOf } from "./ingest/agent-connection.js";
import { peerContextValues } from "./ingest/agent-identity.js";
import { alertStreamDeps, createAlertService } from "./ingest/alert-service.js";
import { HostDirectory } from "./ingest/host-directory.js";
import { HostRateLimiter } from "./ingest/rate-limiter.js";
import { cancelTransport, transportCanceller } from "./ingest/reply-stall-watch.js";
import { useStreamAlertsGrpc } from "./ingest/stream-alerts-grpc.js";
import { registerDashboardRoutes } from "./live/dashboard-route.js";
import { subprotocolV1 } from "./live/feed-params.js";
import { perMessageDeflateOptions } from "./live/ws-frames.js";
import { closeGoingAway, registerWsRoute, type WsStats } from "./live/ws-route.js";
import { createMetrics } from "./observability/metrics.js";
import { type AlertStore, createAlertStore } from "./storage/alert-store.js";
import { BatchWriter } from "./storage/batch-writer.js";
import type { Database } from "./storage/database.js";
import { checkDatabase } from "./storage/database-health.js";
import { createFeedStore } from "./storage/feed-store.js";
import { createHistoryStore } from "./storage/history-store.js";
import { type RetentionJob, startRetention } from "./storage/retention.js";

/** What the server is built from. The caller owns `database` and closes it after the app. */
export interface ServerDeps {
  readonly config: Config;
  readonly database: Database;
  /** Defaults to the store over `database`; tests pass a failing one. */
  readonly store?: AlertStore;
  /** Fastify logger settings; defaults to pino at the configured level. */
  readonly logger?: FastifyServerOptions["logger"];
}

/** The built server and the parts tests and main.ts reach into. */
export interface Server {
  readonly app: FastifyInstance;
  /** The live feed: the Broadcaster of committed alerts, sequenced across instances. */
  readonly broadcaster: LiveFeed;
  readonly writer: BatchWriter;
  readonly wsStats: WsStats;
  /** The retention job; undefined when TRIPWIRE_RETENTION_DAYS is 0 (keep everything). */
  readonly retention: RetentionJob | undefined;
  /** Which hosts are ONLINE; writes hosts.last_seen. */
  readonly liveness: HostLiveness;
}

/**
 * Builds the server: AlertService (gRPC, gRPC-Web, Connect) and the WebSocket feed on one
 * port, health routes, and the batch writer between them. Call `app.listen()` to serve
 * and `app.close()` to stop; closing flushes the writer so every answered event is stored.
 */
export async function buildServer(deps: ServerDeps): Promise<Server> {
  const { config, database } = deps;
  const tls = readTlsMaterial(config);
  const app = Fastify({
    logger: deps.logger ?? { level: config.logLevel },
    serverFactory: (handler) =>
      tls === undefined
        ? createOnePortServer(handler, {
            closeGraceMs: config.shutdownTimeoutMs,
            prefaceTimeoutMs: 10_000,
            http2Settings: { maxConcurrentStreams: config.maxStreamsPerConnection },
            keepaliveMs: config.http2KeepaliveMs,
          })
        : createTlsServer(handler, {
            tls,
            closeGraceMs: config.shutdownTimeoutMs,
            handshakeTimeoutMs: 10_000,
            http2Settings: { maxConcurrentStreams: config.maxStreamsPerConnection },
            keepaliveMs: config.http2KeepaliveMs,
          }),
    // Closing answers new requests with 503 by setting `Connection: close`, which is not
    // allowed on HTTP/2 responses; our close path refuses new streams with GOAWAY instead.
    return503OnClosing: false,
    forceCloseConnections: true,
    bodyLimit: config.maxMessageBytes,
  });

  const log = app.log;
  const store = deps.store ?? createAlertStore(database);
  const feedStore = createFeedStore(database);
  const metrics = createMetrics();
  const broadcaster = await startLiveFeed({
    source: feedStore,
    bufferSize: config.subscriberBuffer,
    gapRepairMs: config.feedGapRepairMs,
    pollMs: config.feedPollMs,
    redis:
      config.redisUrl === undefined
        ? undefined
        : { url: config.redisUrl, channel: config.redisChannel },
    log: log.child({ component: "live-feed" }),
  });
  const writer = new BatchWriter(store, {
    flushIntervalMs: config.flushIntervalMs,
    batchSize: config.batchSize,
    // The embedded database runs one statement at a time; more would only queue.
    maxConcurrentFlushes: database.kind === "pglite" ? 1 : config.maxConcurrentFlushes,
    maxPending: config.maxPendingEvents,
    onCommitted: (alerts) => broadcaster.publishBatch(alerts),
    onFlush: metrics.onFlush,
    log: log.child({ component: "batch-writer" }),
  });
  const hosts = new HostDirectory(store);
  const hostLiveness = await startHostLiveness({
    database,
    config,
    log: log.child({ component: "hosts" }),
  });
  const shutdown = new AbortController();
  // Aborts whatever RPC is still open once the shutdown timeout has passed.
  const rpcDeadline = new AbortController();
  app.addHook("preClose", async () => {
    // Agent streams stop reading and answer what they read; commit it now rather than
    // at the next interval, so they can end with UNAVAILABLE promptly.
    shutdown.abort();
    hostLiveness.liveness.stopping();
    void writer.flush();
    setTimeout(
      () =>
        rpcDeadline.abort(new ConnectError("server is shutting down; reconnect", Code.Unavailable)),
      config.shutdownTimeoutMs,
    ).unref();
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const health = await checkDatabase(database, writer, healthTimeoutMs);
    if (!health.ok) {
      reply.code(503);
      return { status: "unavailable", error: health.error };
    }
    return { status: "ready", database: database.kind };
  });

  await app.register(fastifyConnectPlugin, {
    routes(router) {
      const serviceDeps = {
        store,
        writer,
        hosts,
        log: log.child({ component: "alert-service" }),
        limits: config,
        shutdown: shutdown.signal,
        clientAuth: tls?.clientCa === undefined ? "off" : config.tlsClientAuth,
        liveness: hostLiveness.liveness,
        maxStreamsPerHost: config.maxStreamsPerHost,
        replyStallTimeoutMs: config.replyStallTimeoutMs,
        stats: metrics.ingest,
        rateLimiter: new HostRateLimiter({
          ratePerSecond: config.hostRateLimit,
          burst: config.hostRateBurst,
        }),
      } as const;
      const streams = alertStreamDeps(serviceDeps);
      router.service(AlertService, createAlertService(serviceDeps, streams));
      if (config.grpcFastPath === "on") {
        useStreamAlertsGrpc(router.handlers, {
          streams,
          readMaxBytes: config.maxMessageBytes,
          writeMaxBytes: config.maxMessageBytes,
          shutdownSignal: rpcDeadline.signal,
          log: serviceDeps.log,
        });
      }
    },
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    // A longer grpc-timeout would overflow Node's setTimeout, which then fires after 1 ms
    // and ends the call at once; refuse it with INVALID_ARGUMENT instead.
    maxTimeoutMs: 2_147_483_647,
    // connect-es passes the decoder on to its JSON codec (the type leaves it out).
    jsonOptions: jsonCodecOptions,
    // Our own signal, not the plugin's shutdownTimeoutMs, whose timer keeps the process
    // alive for the whole timeout even when every stream has ended.
    shutdownSignal: rpcDeadline.signal,
    // The caller's certificate status, from the TLS socket (the service decides per call),
    // and how to cancel the call's transport when its replies stall.
    contextValues: (req) =>
      peerContextValues(req.raw.socket as Partial<TLSSocket> | null)
        .set(cancelTransport, transportCanceller(req.raw))
        // Lets a stream be tied to the host that registered on its connection (liveness).
        .set(agentConnection, connectionOf(req.raw)),
  });

  await app.register(websocket, {
    options: {
      maxPayload: config.wsMaxMessageBytes,
      perMessageDeflate: config.wsCompression === "on" ? perMessageDeflateOptions : false,
      handleProtocols: (offered: Set<string>) =>
        offered.has(subprotocolV1) ? subprotocolV1 : false,
    },
    preClose(done) {
      for (const client of this.websocketServer.clients) {
        client.close(closeGoingAway, "server shutting down");
      }
      done();
    },
  });
  const wsStats = registerWsRoute(app, {
    feed: broadcaster,
    store: feedStore,
    log: log.child({ component: "ws" }),
    settings: {
      highWaterBytes: config.wsHighWaterBytes,
      replayLimit: config.wsReplayLimit,
      heartbeatMs: config.wsHeartbeatMs,
      slowCloseMs: config.wsSlowCloseMs,
      tokens: config.wsTokens,
      allowedOrigins: config.wsAllowedOrigins,
      maxConnections: config.wsMaxConnections,
      maxConnectionsPerToken: config.wsMaxConnectionsPerToken,
    },
    hostStatus: hostLiveness.liveness,
  });
  registerHostsRoute(app, {
    store: hostLiveness.store,
    liveness: hostLiveness.liveness,
    checkAccess: createViewerAccessCheck({
      tokens: config.wsTokens,
      allowedOrigins: config.wsAllowedOrigins,
    }),
  });

  registerDashboardRoutes(app);
  metrics.watch({
    feed: broadcaster,
    wsStats,
    writer,
    databaseUp: async () => (await checkDatabase(database, writer, healthTimeoutMs)).ok,
  });
  registerMetricsRoute(app, { registry: metrics.registry, token: config.metricsToken });
  registerAlertsRoute(app, {
    store: createHistoryStore(database),
    feed: broadcaster,
    access: { tokens: config.wsTokens, allowedOrigins: config.wsAllowedOrigins },
    limits: { defaultLimit: config.apiDefaultLimit, maxLimit: config.apiMaxLimit },
    log: log.child({ component: "api" }),
  });
  const retention =
    config.retentionDays > 0
      ? startRetention({
          database,
          settings: {
            days: config.retentionDays,
            intervalMs: config.retentionIntervalMs,
            batchSize: config.retentionBatch,
          },
          log: log.child({ component: "retention" }),
        })
      : undefined;

  app.addHook("onClose", async () => {
    await retention?.close();
    // Every event a stream has read is committed (and answered) before the database goes.
    await writer.close();
    await hostLiveness.close();
    broadcaster.close();
  });

  return { app, broadcaster, writer, wsStats, retention, liveness: hostLiveness.liveness };
}

/** connect-es's default, plus the decoder that keeps JSON error messages encodable. */
const jsonCodecOptions = { ignoreUnknownFields: true, textDecoder: jsonTextDecoder };

/** How long /readyz and the database metric wait for each database probe. */
const healthTimeoutMs = 2_000;
