/**
 * buildServer: the whole server as a Fastify instance that has not started listening.
 * main.ts is the only place that reads the environment, listens and handles signals.
 */
import type { TLSSocket } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import websocket from "@fastify/websocket";
import { sql } from "drizzle-orm";
import Fastify, { type FastifyInstance, type FastifyServerOptions } from "fastify";
import { type LiveFeed, startLiveFeed } from "./broadcast/live-feed.js";
import type { Config } from "./config.js";
import { AlertService } from "./gen/alert/alert_pb.js";
import { jsonTextDecoder } from "./http/json-text-decoder.js";
import { createOnePortServer } from "./http/one-port.js";
import { createTlsServer, readTlsMaterial } from "./http/tls.js";
import { peerContextValues } from "./ingest/agent-identity.js";
import { alertStreamDeps, createAlertService } from "./ingest/alert-service.js";
import { HostDirectory } from "./ingest/host-directory.js";
import { HostRateLimiter } from "./ingest/rate-limiter.js";
import { useStreamAlertsGrpc } from "./ingest/stream-alerts-grpc.js";
import { registerDashboardRoutes } from "./live/dashboard-route.js";
import { subprotocolV1 } from "./live/feed-params.js";
import { closeGoingAway, registerWsRoute, type WsStats } from "./live/ws-route.js";
import { type AlertStore, createAlertStore } from "./storage/alert-store.js";
import { BatchWriter } from "./storage/batch-writer.js";
import type { Database } from "./storage/database.js";
import { createFeedStore } from "./storage/feed-store.js";

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
    log: log.child({ component: "batch-writer" }),
  });
  const hosts = new HostDirectory(store);
  const shutdown = new AbortController();
  // Aborts whatever RPC is still open once the shutdown timeout has passed.
  const rpcDeadline = new AbortController();
  app.addHook("preClose", async () => {
    // Agent streams stop reading and answer what they read; commit it now rather than
    // at the next interval, so they can end with UNAVAILABLE promptly.
    shutdown.abort();
    void writer.flush();
    setTimeout(
      () =>
        rpcDeadline.abort(new ConnectError("server is shutting down; reconnect", Code.Unavailable)),
      config.shutdownTimeoutMs,
    ).unref();
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    try {
      await withTimeout(database.ping(), 2_000);
    } catch (err) {
      reply.code(503);
      return { status: "unavailable", error: `database unreachable: ${rootMessage(err)}` };
    }
    if (writer.failing !== undefined) {
      // The last batch failed (a lock held, a stall): ready again once the table answers.
      try {
        await withTimeout(database.rows(sql`select 1 from alerts limit 1`), 2_000);
        writer.recovered();
      } catch {
        reply.code(503);
        return { status: "unavailable", error: `database is not taking writes: ${writer.failing}` };
      }
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
        maxStreamsPerHost: config.maxStreamsPerHost,
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
    // The caller's certificate status, from the TLS socket; the service decides per call.
    contextValues: (req) => peerContextValues(req.raw.socket as Partial<TLSSocket> | null),
  });

  await app.register(websocket, {
    options: {
      maxPayload: config.wsMaxMessageBytes,
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
  });

  registerDashboardRoutes(app);

  app.addHook("onClose", async () => {
    // Every event a stream has read is committed (and answered) before the database goes.
    await writer.close();
    broadcaster.close();
  });

  return { app, broadcaster, writer, wsStats };
}

/** The innermost cause's message (Drizzle wraps driver errors as "Failed query: …"). */
function rootMessage(err: unknown): string {
  let e = err;
  for (let i = 0; i < 5 && e instanceof Error && e.cause !== undefined; i++) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

/** connect-es's default, plus the decoder that keeps JSON error messages encodable. */
const jsonCodecOptions = { ignoreUnknownFields: true, textDecoder: jsonTextDecoder };

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
