/**
 * The one port: every protocol the server speaks, on the same listening socket, with
 * real clients for each, and how that port behaves on bad input and on shutdown.
 */
import { once } from "node:events";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { type AgentEvent, AlertService } from "../../src/gen/alert/alert_pb.js";
import { decodeReply, makeEvent, register } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { subscribers } from "../support/ws-client.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The client transports an agent or a browser may use, by name. */
const transports: ReadonlyArray<readonly [string, (baseUrl: string) => Transport]> = [
  ["gRPC over HTTP/2 (h2c)", (baseUrl) => createGrpcTransport({ baseUrl })],
  ["Connect over HTTP/1.1", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" })],
  ["Connect over HTTP/2", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2" })],
  ["gRPC-Web over HTTP/1.1", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })],
];

/** GET over HTTP/1.1 with node:http; resolves with status and body. */
function getHttp1(
  baseUrl: string,
  path: string,
): Promise<{ status: number; httpVersion: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${baseUrl}${path}`, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, httpVersion: res.httpVersion, body }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

/** GET over cleartext HTTP/2 with prior knowledge (h2c), with node:http2. */
async function getH2c(baseUrl: string, path: string): Promise<{ status: number; body: string }> {
  const session = http2.connect(baseUrl);
  try {
    const req = session.request({ ":method": "GET", ":path": path });
    req.setEncoding("utf8");
    const [headers] = (await once(req, "response")) as [http2.IncomingHttpHeaders];
    let body = "";
    for await (const chunk of req) body += chunk as string;
    return { status: Number(headers[":status"]), body };
  } finally {
    session.close();
  }
}

/** Sends raw bytes on a fresh TCP connection; resolves with what came back once it closed. */
async function sendRaw(port: number, bytes: Buffer): Promise<Buffer> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  socket.on("error", () => {}); // a reset is one of the acceptable answers
  const closed = once(socket, "close");
  socket.write(bytes);
  await closed;
  return Buffer.concat(chunks);
}

/** The HTTP/2 frame type of GOAWAY (RFC 9113, 6.8). */
const goAwayFrame = 0x7;

/** The types of the HTTP/2 frames in `bytes`, read from their 9-byte headers. */
function frameTypes(bytes: Buffer): number[] {
  const types: number[] = [];
  for (let at = 0; at + 9 <= bytes.length; at += 9 + bytes.readUIntBE(at, 3)) {
    types.push(bytes.readUInt8(at + 3));
  }
  return types;
}

/** A promise with its resolver, for things the test decides when to end. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe.each(backends)("one port [%s]", (kind) => {
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

  it.each(transports)("RegisterAgent answers over %s", async (_name, transport) => {
    const client = createClient(AlertService, transport(server.baseUrl));
    const res = await client.registerAgent({
      hostname: "one-port-host",
      platform: "linux",
      agentVersion: "test",
    });
    expect(res.hostId).toMatch(uuidPattern);
    // Every protocol reaches the same service: the same hostname gets the same host_id.
    expect(res.hostId).toBe(await register(server.grpcClient(), "one-port-host"));
  });

  it("GET /healthz answers 200 over HTTP/1.1 and over h2c", async () => {
    const h1 = await getHttp1(server.baseUrl, "/healthz");
    expect(h1.status).toBe(200);
    expect(h1.httpVersion).toBe("1.1");
    expect(JSON.parse(h1.body)).toEqual({ status: "ok" });
    const h2 = await getH2c(server.baseUrl, "/healthz");
    expect(h2.status).toBe(200);
    expect(JSON.parse(h2.body)).toEqual({ status: "ok" });
  });

  it("GET /readyz answers 200 while the migrated database answers", async () => {
    const res = await getHttp1(server.baseUrl, "/readyz");
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ status: "ready", database: kind });
  });

  it("GET /readyz answers 503 once the database is unreachable", async () => {
    const doomed = await createTestDatabase(kind);
    const own = await startServer(doomed);
    let disposed = false;
    try {
      expect((await getHttp1(own.baseUrl, "/readyz")).status).toBe(200);
      await doomed.dispose(); // closes the pool (PostgreSQL: and drops the database)
      disposed = true;
      const res = await getHttp1(own.baseUrl, "/readyz");
      expect(res.status).toBe(503);
      const body = JSON.parse(res.body) as { status: string; error: string };
      expect(body.status).toBe("unavailable");
      expect(body.error).toMatch(/^database unreachable: /);
      // Liveness does not depend on the database.
      expect((await getHttp1(own.baseUrl, "/healthz")).status).toBe(200);
    } finally {
      await own.close();
      if (!disposed) await doomed.dispose();
    }
  });

  it("a WebSocket upgrade and gRPC calls share the port", async () => {
    const before = server.broadcaster.size;
    const socket = new WebSocket(server.wsUrl);
    try {
      await once(socket, "open");
      await subscribers(server.broadcaster, before + 1);
      const hostId = await register(server.grpcClient());
      expect(hostId).toMatch(uuidPattern);
      expect(socket.readyState).toBe(WebSocket.OPEN);
      expect(new URL(server.wsUrl).port).toBe(new URL(server.baseUrl).port);
    } finally {
      socket.terminate();
    }
  });

  it("a connection that sends garbage is refused and the server keeps serving", async () => {
    // Not HTTP at all: the HTTP/1.1 parser answers 400 and closes.
    const h1Answer = await sendRaw(
      server.port,
      Buffer.from("\u0000\u00ffgarbage \r\n\r\n", "latin1"),
    );
    expect(h1Answer.toString("latin1")).toMatch(/^HTTP\/1\.1 400 /);
    // The HTTP/2 preface, then bytes that are no valid frame: the session ends with GOAWAY.
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
    const h2Answer = await sendRaw(server.port, Buffer.concat([preface, Buffer.alloc(64, 0xff)]));
    expect(frameTypes(h2Answer)).toContain(goAwayFrame);

    expect(await register(server.grpcClient())).toMatch(uuidPattern);
    expect((await getHttp1(server.baseUrl, "/healthz")).status).toBe(200);
  });

  it("app.close() returns while a StreamAlerts stream is open and idle and a WebSocket is connected", async () => {
    const own = await startServer(database, { flushIntervalMs: 20, shutdownTimeoutMs: 200 });
    const client = own.grpcClient();
    const hostId = await register(client);
    const socket = new WebSocket(own.wsUrl);
    const wsClosed = once(socket, "close");
    await once(socket, "open");
    await subscribers(own.broadcaster, 1);

    // One event, answered; then the agent has nothing to say and keeps the stream open.
    const first = makeEvent(hostId);
    const idleUntil = deferred();
    async function* events(): AsyncGenerator<AgentEvent> {
      yield first;
      await idleUntil.promise;
    }
    const acked = deferred<string>();
    const streamEnded = (async (): Promise<unknown> => {
      try {
        for await (const cmd of client.streamAlerts(events())) acked.resolve(decodeReply(cmd).type);
        return undefined;
      } catch (err) {
        return err;
      }
    })();
    expect(await acked.promise).toBe("ACK");

    try {
      await own.close();
      const [code] = (await wsClosed) as [number];
      expect(code).toBe(1001);
      const err = await streamEnded;
      expect(err).toBeInstanceOf(ConnectError);
      // The server ends the stream with its shutdown error, which tells agents to reconnect.
      expect(Code[(err as ConnectError).code]).toBe("Unavailable");
      expect((err as ConnectError).rawMessage).toMatch(/shutting down/);
    } finally {
      idleUntil.resolve();
      socket.terminate();
    }
  });
});
