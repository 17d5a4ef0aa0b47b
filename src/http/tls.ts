/**
 * The one port over TLS: HTTP/2 and HTTP/1.1 chosen by ALPN, and client certificates for
 * agents.
 *
 * Browsers (the dashboard page, /ws) present no certificate, so the TLS layer asks for one
 * but never refuses a handshake without it (`requestCert`, not `rejectUnauthorized`).
 * Whether a certificate is required is decided per call by the AlertService, from the
 * socket's `authorized` flag (see ingest/agent-identity.ts).
 */
import { readFileSync } from "node:fs";
import type * as http from "node:http";
import * as http2 from "node:http2";
import type * as net from "node:net";
import type * as tls from "node:tls";
import { type Config, ConfigError } from "../config.js";
import { keepSessionAlive } from "./keepalive.js";

/** Fastify's request handler; both protocols reach it through Node's compatibility API. */
type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** The PEM material of the TLS settings, read from the files the configuration names. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The agents' CA bundle; undefined when agents are not asked for certificates. */
  readonly clientCa: Buffer | undefined;
}

/** Settings of the TLS server. */
export interface TlsServerOptions {
  readonly tls: TlsMaterial;
  /** Interval of HTTP/2 keepalive pings; a session that misses one is destroyed (0: off). */
  readonly keepaliveMs?: number;
  /** How long a closing server lets HTTP/2 sessions finish before destroying them. */
  readonly closeGraceMs: number;
  /** How long a new connection may take to complete its TLS handshake. */
  readonly handshakeTimeoutMs: number;
  /** HTTP/2 settings sent to clients. */
  readonly http2Settings?: http2.Settings;
}

/**
 * Reads the certificate, key and client CA that `config` names; undefined when TLS is off.
 * Throws a ConfigError naming the variable whose file cannot be read.
 */
export function readTlsMaterial(config: Config): TlsMaterial | undefined {
  if (config.tlsCert === undefined || config.tlsKey === undefined) {
    if (config.tlsCert !== undefined || config.tlsKey !== undefined) {
      throw new ConfigError("TRIPWIRE_TLS_CERT and TRIPWIRE_TLS_KEY must be set together");
    }
    if (config.tlsClientCa !== undefined) {
      throw new ConfigError(
        "TRIPWIRE_TLS_CLIENT_CA needs TLS: set TRIPWIRE_TLS_CERT and TRIPWIRE_TLS_KEY too",
      );
    }
    return undefined;
  }
  return {
    cert: readPem("TRIPWIRE_TLS_CERT", config.tlsCert),
    key: readPem("TRIPWIRE_TLS_KEY", config.tlsKey),
    clientCa:
      config.tlsClientCa === undefined
        ? undefined
        : readPem("TRIPWIRE_TLS_CLIENT_CA", config.tlsClientCa),
  };
}

function readPem(env: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${env}: cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * Creates the server for Fastify's `serverFactory`: an HTTP/2 server over TLS that also
 * serves HTTP/1.1 (ALPN), so gRPC, Connect, gRPC-Web, WebSocket upgrades and the page
 * share the port. Its `close()` also ends HTTP/2 sessions, idle or busy HTTP/1.1
 * connections and unfinished handshakes, so closing never hangs; upgraded WebSockets are
 * left to their own close handshake.
 */
export function createTlsServer(handler: Handler, options: TlsServerOptions): http.Server {
  const { tls: material } = options;
  let server: http2.Http2SecureServer;
  try {
    server = http2.createSecureServer(
      {
        allowHTTP1: true,
        cert: material.cert,
        key: material.key,
        minVersion: "TLSv1.2",
        handshakeTimeout: options.handshakeTimeoutMs,
        settings: options.http2Settings ?? {},
        ...(material.clientCa === undefined
          ? {}
          : { ca: material.clientCa, requestCert: true, rejectUnauthorized: false }),
      },
      handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
  } catch (err) {
    throw new ConfigError(
      `TRIPWIRE_TLS_CERT/TRIPWIRE_TLS_KEY/TRIPWIRE_TLS_CLIENT_CA are not usable: ${(err as Error).message}`,
    );
  }
  // Node's default for HTTP/1.1 keep-alive (this server type has none by itself).
  (server as unknown as { keepAliveTimeout: number }).keepAliveTimeout = 5_000;

  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // A session error (peer reset, bad frame) must not become an uncaught exception.
    session.on("error", () => {});
    keepSessionAlive(session, options.keepaliveMs ?? 0);
  });

  // TCP connections whose TLS handshake has not finished, by their address 4-tuple (the
  // TLS socket that results has the same one, and no public link to the raw socket).
  const handshaking = new Map<string, net.Socket>();
  server.on("connection", (raw: net.Socket) => {
    const key = connectionKey(raw);
    handshaking.set(key, raw);
    raw.once("close", () => {
      if (handshaking.get(key) === raw) handshaking.delete(key);
    });
  });

  // HTTP/1.1 connections (HTTP/2 ones belong to their session).
  const h1 = new Set<tls.TLSSocket>();
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    handshaking.delete(connectionKey(socket));
    if (socket.alpnProtocol === "h2") return;
    h1.add(socket);
    socket.once("close", () => h1.delete(socket));
  });
  server.on("upgrade", (_req: http.IncomingMessage, socket: net.Socket) => {
    // An upgraded socket belongs to the WebSocket now, which closes it with its own code.
    h1.delete(socket as tls.TLSSocket);
    if (server.listenerCount("upgrade") === 1) socket.destroy(); // nobody to take it
  });

  const close = server.close.bind(server);
  server.close = ((callback?: (err?: Error) => void) => {
    close(callback);
    for (const raw of handshaking.values()) raw.destroy();
    for (const socket of h1) socket.destroy();
    for (const session of sessions) {
      // GOAWAY: no new streams; open ones may finish within the grace period.
      session.close();
      setTimeout(() => session.destroy(), options.closeGraceMs).unref();
    }
    return server;
  }) as typeof server.close;
  return server as unknown as http.Server;
}

function connectionKey(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}
