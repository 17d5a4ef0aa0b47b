/**
 * One cleartext port for HTTP/1.1 and HTTP/2.
 *
 * gRPC agents speak HTTP/2 with prior knowledge (h2c): the connection opens with the
 * HTTP/2 preface. Browsers, WebSocket upgrades and Connect/gRPC-Web over HTTP/1.1 open
 * with a request line. Node's cleartext HTTP/2 server cannot fall back to HTTP/1.1, so
 * this server peeks at the first bytes of each connection and hands it to the HTTP/2 or
 * the HTTP/1.1 server, both of which call the same request handler (Fastify's).
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import type * as net from "node:net";
import { keepSessionAlive } from "./keepalive.js";

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Fastify's request handler; HTTP/2 requests reach it through Node's compatibility API. */
type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Settings of the one-port server. */
export interface OnePortOptions {
  /** Interval of HTTP/2 keepalive pings; a session that misses one is destroyed (0: off). */
  readonly keepaliveMs?: number;
  /** How long a closing server lets HTTP/2 sessions finish before destroying them. */
  readonly closeGraceMs: number;
  /** How long a new connection may take to send its first bytes. */
  readonly prefaceTimeoutMs: number;
  /** HTTP/2 settings sent to clients. */
  readonly http2Settings?: http2.Settings;
}

/**
 * Creates the server for Fastify's `serverFactory`: an http.Server (so Fastify and
 * @fastify/websocket see what they expect) whose connections are routed by preface.
 * Its `close()` also ends the HTTP/2 sessions, so closing never hangs on open streams.
 */
export function createOnePortServer(handler: Handler, options: OnePortOptions): http.Server {
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(
    { settings: options.http2Settings ?? {} },
    handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // A session error (peer reset, bad frame) must not become an uncaught exception.
    session.on("error", () => {});
    keepSessionAlive(session, options.keepaliveMs ?? 0);
  });

  const h1ConnectionListeners = h1.listeners("connection") as Array<(s: net.Socket) => void>;
  h1.removeAllListeners("connection");
  const toH1 = (socket: net.Socket): void => {
    for (const listener of h1ConnectionListeners) listener.call(h1, socket);
  };

  // Connections that have not yet shown which protocol they speak.
  const undecided = new Set<net.Socket>();
  h1.on("connection", (socket: net.Socket) => {
    undecided.add(socket);
    socket.setTimeout(options.prefaceTimeoutMs, () => socket.destroy());
    socket.once("close", () => undecided.delete(socket));
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, preface.length);
      const isPrefix = seen.subarray(0, n).equals(preface.subarray(0, n));
      if (isPrefix && seen.length < preface.length) return; // need more bytes to decide
      socket.off("data", onData);
      socket.off("error", onEarlyError);
      socket.off("end", onEarlyEnd);
      socket.setTimeout(0);
      undecided.delete(socket);
      socket.pause();
      socket.unshift(seen);
      if (isPrefix) {
        // The HTTP/2 session takes over the socket's handle and reads what we put back.
        h2.emit("connection", socket);
      } else {
        toH1(socket);
        socket.resume();
      }
    };
    const onEarlyError = (): void => {
      socket.destroy();
    };
    // A peer that ends its side before showing a protocol never will; without this the
    // half-open socket (http.Server allows those) would wait for the preface timeout.
    const onEarlyEnd = (): void => {
      socket.destroy();
    };
    socket.on("data", onData);
    socket.on("error", onEarlyError);
    socket.on("end", onEarlyEnd);
  });

  const close = h1.close.bind(h1);
  h1.close = ((callback?: (err?: Error) => void) => {
    close(callback);
    for (const socket of undecided) socket.destroy();
    for (const session of sessions) {
      // GOAWAY: no new streams; open ones may finish within the grace period.
      session.close();
      setTimeout(() => session.destroy(), options.closeGraceMs).unref();
    }
    return h1;
  }) as typeof h1.close;
  return h1;
}
