/**
 * The limit on concurrent StreamAlerts streams per host: one agent cannot open unbounded
 * streams for its host; other hosts are unaffected, and the slot frees when a stream ends.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentEvent } from "../../src/gen/alert/alert_pb.js";
import { decodeReply, makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

describe("streams per host", () => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    server = await startServer(database, { maxStreamsPerHost: 1, flushIntervalMs: 10 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("ends a second concurrent stream for the same host with RESOURCE_EXHAUSTED; other hosts and later streams work", async () => {
    const client = server.grpcClient();
    const hostId = await register(client, "one-stream-host");
    const otherHost = await register(client, "other-host");

    // Stream A: one event ACKed, then it stays open.
    let finishA: () => void = () => {};
    const holdA = new Promise<void>((resolve) => {
      finishA = resolve;
    });
    async function* eventsA(): AsyncGenerator<AgentEvent> {
      yield makeEvent(hostId);
      await holdA;
    }
    const a = client.streamAlerts(eventsA())[Symbol.asyncIterator]();
    const first = await a.next();
    expect(first.done).toBe(false);
    expect(decodeReply(first.value).type).toBe("ACK");

    // Stream B for the same host is refused.
    const refused = await streamAll(client, [makeEvent(hostId)]).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(refused?.code).toBe(Code.ResourceExhausted);
    expect(refused?.rawMessage).toMatch(/too many concurrent streams for this host/);

    // Another host is unaffected.
    expect((await streamAll(client, [makeEvent(otherHost)]))[0]?.type).toBe("ACK");

    // Once A ends, the host may open a stream again.
    finishA();
    expect((await a.next()).done).toBe(true);
    expect((await streamAll(client, [makeEvent(hostId)]))[0]?.type).toBe("ACK");
  });
});
