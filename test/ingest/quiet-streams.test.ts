/**
 * A host that sends little is not held up by one that bursts: over real gRPC streams, a
 * quiet stream's alert is committed and ACKed while a busy stream's alerts still wait
 * for their batch, on every backend.
 */
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeReply, makeEvent, type Reply, register } from "../support/agent.js";
import { eventQueue } from "../support/agent-stream.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

describe.each(backends)("quiet streams during a burst [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    // Nothing but a full batch or the quiet rule can commit within the test: the flush
    // interval is a minute, and the batch fills only when the test says.
    server = await startServer(database, {
      flushIntervalMs: 60_000,
      batchSize: 19,
      quietStreamRate: 1,
    });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("ACKs a quiet host's alert at once while a busy host's alerts wait for their batch, and stores them all", async () => {
    const client = server.grpcClient();
    const busyHost = await register(client, "busy-host");
    const quietHost = await register(client, "quiet-host");

    // The busy stream sends 10 events without waiting. Its first finds the writer idle
    // and queues for the interval; the second (2 in this second, over the quiet rate of
    // 1/s) makes the stream busy, so the quiet one queued before it is committed at once.
    const busy = eventQueue();
    const busyEvents = Array.from({ length: 10 }, () => makeEvent(busyHost));
    const busyReplies: Reply[] = [];
    let firstReply: () => void = () => {};
    const first = new Promise<void>((resolve) => {
      firstReply = resolve;
    });
    const busyDone = (async () => {
      for await (const cmd of client.streamAlerts(busy.events)) {
        busyReplies.push(decodeReply(cmd));
        firstReply();
      }
    })().catch(() => {});
    busy.push(...busyEvents);
    await first;
    expect(busyReplies.map((r) => r.alertId)).toEqual([busyEvents[0]?.alertId]);

    // A quiet host's alert skips the busy host's queued batch.
    const quiet = eventQueue();
    const quietEvent = makeEvent(quietHost);
    const quietReplies = client.streamAlerts(quiet.events)[Symbol.asyncIterator]();
    quiet.push(quietEvent);
    const reply = await quietReplies.next();
    expect(reply.done).toBe(false);
    expect(decodeReply((reply as IteratorYieldResult<never>).value)).toMatchObject({
      type: "ACK",
      alertId: quietEvent.alertId,
    });
    expect(busyReplies).toHaveLength(1);
    const stored = await database.rows<{ alert_id: string }>(
      sql`select alert_id::text as alert_id from alerts where host_id = ${busyHost}::uuid`,
    );
    expect(stored.map((r) => r.alert_id)).toEqual([busyEvents[0]?.alertId]);

    // Ten more fill the busy host's batch (events 2 to 20): all of them are committed.
    const more = Array.from({ length: 10 }, () => makeEvent(busyHost));
    busy.push(...more);
    busy.close();
    quiet.close();
    await busyDone;
    const sent = [...busyEvents, ...more];
    expect(
      busyReplies
        .filter((r) => r.type === "ACK")
        .map((r) => r.alertId)
        .sort(),
    ).toEqual(sent.map((e) => e.alertId).sort());
    const all = await database.rows<{ n: string }>(
      sql`select count(*)::text as n from alerts where host_id in (${busyHost}::uuid, ${quietHost}::uuid)`,
    );
    expect(Number(all[0]?.n)).toBe(21);
  });
});
