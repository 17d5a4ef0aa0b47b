/**
 * Peers that vanish without closing: a half-open connection that never answers, and an
 * agent whose network freezes mid-stream. HTTP/2 keepalive pings find them, and the
 * server frees their sessions and streams while it keeps serving everyone else.
 */
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
// An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
const emptySettings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

describe("vanished peers", () => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    server = await startServer(database, { http2KeepaliveMs: 200, flushIntervalMs: 10 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("closes an HTTP/2 connection whose peer never answers a ping", async () => {
    const socket = net.connect(server.port, "127.0.0.1");
    socket.on("data", () => {}); // read, but never answer anything
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write(Buffer.concat([preface, emptySettings]));
    await closed; // the server gave up on it; without keepalive this never happens
    expect(socket.destroyed).toBe(true);
  });

  it("frees the session of an agent whose network froze mid-stream; other agents are unaffected", async () => {
    // A proxy whose forwarding we can freeze without closing anything (a pulled cable).
    const sockets: net.Socket[] = [];
    let serverSideClosed: Promise<void> | undefined;
    const proxy = net.createServer((client) => {
      const upstream = net.connect(server.port, "127.0.0.1");
      serverSideClosed = new Promise((resolve) => upstream.once("close", () => resolve()));
      sockets.push(client, upstream);
      client.on("error", () => {});
      upstream.on("error", () => {});
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", () => resolve()));
    const proxyPort = (proxy.address() as net.AddressInfo).port;
    try {
      const { createClient } = await import("@connectrpc/connect");
      const { createGrpcTransport } = await import("@connectrpc/connect-node");
      const { AlertService } = await import("../../src/gen/alert/alert_pb.js");
      const frozen = createClient(
        AlertService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${proxyPort}` }),
      );
      const hostId = await register(frozen);
      // An open stream with one ACKed event, then the network freezes.
      const first = makeEvent(hostId);
      let release: () => void = () => {};
      const hold = new Promise<void>((resolve) => {
        release = resolve;
      });
      async function* events() {
        yield first;
        await hold;
      }
      const stream = frozen.streamAlerts(events());
      const it = stream[Symbol.asyncIterator]();
      const ack = await it.next();
      expect(ack.done).toBe(false);
      // Nothing passes either way any more; the server's pings are read and lost.
      for (const s of sockets) s.unpipe();
      for (const s of sockets) s.on("data", () => {}).resume();
      await serverSideClosed; // the server closed its side: session and stream freed

      // The server still serves others.
      const client = server.grpcClient();
      const other = await register(client);
      expect((await streamAll(client, [makeEvent(other)]))[0]?.type).toBe("ACK");
      release();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });
});
