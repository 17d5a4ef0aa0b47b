/**
 * RegisterAgent: the stable host_id per hostname, the server clock, refused hostnames,
 * and the seam where a verified client certificate decides the hostname.
 */
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configWith } from "../../src/config.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { createAlertService, verifiedClientCn } from "../../src/ingest/alert-service.js";
import { HostDirectory } from "../../src/ingest/host-directory.js";
import { silentLogger } from "../../src/logger.js";
import { createAlertStore } from "../../src/storage/alert-store.js";
import { BatchWriter } from "../../src/storage/batch-writer.js";
import { register } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The ConnectError code of a rejected call, or undefined if it did not reject. */
async function codeOf(call: Promise<unknown>): Promise<string | undefined> {
  try {
    await call;
    return undefined;
  } catch (err) {
    return Code[ConnectError.from(err).code];
  }
}

describe.each(backends)("RegisterAgent [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    server = await startServer(database);
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("the same hostname gets the same host_id on every call", async () => {
    const client = server.grpcClient();
    const first = await register(client, "stable-host");
    expect(first).toMatch(uuidPattern);
    expect(await register(client, "stable-host")).toBe(first);
    expect(await register(server.grpcClient(), "stable-host")).toBe(first);
  });

  it("the same hostname gets the same host_id from two server instances on one database", async () => {
    const other = await startServer(database);
    try {
      // Registered first on one instance, then on the other, in both orders.
      const a = await register(server.grpcClient(), "shared-host-a");
      expect(await register(other.grpcClient(), "shared-host-a")).toBe(a);
      const b = await register(other.grpcClient(), "shared-host-b");
      expect(await register(server.grpcClient(), "shared-host-b")).toBe(b);
      expect(b).not.toBe(a);
    } finally {
      await other.close();
    }
  });

  it("different hostnames get different host_ids", async () => {
    const client = server.grpcClient();
    const ids = await Promise.all(
      ["alpha", "beta", "gamma", "Alpha"].map((h) => register(client, h)),
    );
    expect(new Set(ids).size).toBe(4);
  });

  it("server_time_us is the server's clock in Unix microseconds", async () => {
    const before = Date.now();
    const res = await server
      .grpcClient()
      .registerAgent({ hostname: "clock-host", platform: "linux", agentVersion: "test" });
    const after = Date.now();
    // A bound on the value's meaning (microseconds, now), far wider than any scheduling delay.
    const ms = Number(res.serverTimeUs / 1000n);
    expect(ms).toBeGreaterThanOrEqual(before - 60_000);
    expect(ms).toBeLessThanOrEqual(after + 60_000);
  });

  it("an empty hostname is refused with InvalidArgument", async () => {
    const client = server.grpcClient();
    expect(await codeOf(client.registerAgent({ hostname: "", platform: "linux" }))).toBe(
      "InvalidArgument",
    );
    expect(await codeOf(client.registerAgent({ hostname: "   ", platform: "linux" }))).toBe(
      "InvalidArgument",
    );
  });

  it("a hostname containing NUL is refused with InvalidArgument", async () => {
    const client = server.grpcClient();
    expect(await codeOf(client.registerAgent({ hostname: "evil\u0000host" }))).toBe(
      "InvalidArgument",
    );
  });

  it("the CN of a verified client certificate decides the host, whatever hostname the request reports", async () => {
    const store = createAlertStore(database);
    const config = configWith();
    const writer = new BatchWriter(store, {
      flushIntervalMs: config.flushIntervalMs,
      batchSize: config.batchSize,
      maxConcurrentFlushes: 1,
      maxPending: config.maxPendingEvents,
      onCommitted: () => {},
      log: silentLogger,
    });
    const deps = {
      store,
      writer,
      hosts: new HostDirectory(store),
      log: silentLogger,
      limits: config,
      shutdown: new AbortController().signal,
    };
    // In a real server the transport sets the value from the TLS socket; here a router
    // interceptor plays that part. (The in-memory transport of connect 2.1.2 does not
    // pass a call's own contextValues on to the handler.)
    const asVerifiedCertificate: Interceptor = (next) => (req) => {
      req.contextValues.set(verifiedClientCn, "cert-host");
      return next(req);
    };
    const transport = createRouterTransport(
      (router) => router.service(AlertService, createAlertService(deps)),
      { router: { interceptors: [asVerifiedCertificate] } },
    );
    try {
      const viaCertificate = await createClient(AlertService, transport).registerAgent({
        hostname: "self-reported-name",
        platform: "linux",
        agentVersion: "test",
      });
      expect(viaCertificate.hostId).toBe(await register(server.grpcClient(), "cert-host"));
      expect(viaCertificate.hostId).not.toBe(
        await register(server.grpcClient(), "self-reported-name"),
      );
    } finally {
      await writer.close();
    }
  });
});
