/**
 * At-least-once agents replay alerts: an alert_id already stored is ACKed again but is
 * neither stored nor broadcast a second time, whether the replay arrives on the same
 * stream or on a later one.
 */
import { once } from "node:events";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { subscribers } from "../support/ws-client.js";

describe.each(backends)("replayed alerts [%s]", (kind) => {
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

  it("an alert_id sent twice on one stream and again on a later stream is ACKed each time, stored once and broadcast once", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);

    // Two live consumers: a browser on /ws and an in-process subscriber.
    const socket = new WebSocket(server.wsUrl);
    const frames: string[] = [];
    let onFrame = (): void => {};
    socket.on("message", (data) => {
      frames.push(String(data));
      onFrame();
    });
    await once(socket, "open");
    const abort = new AbortController();
    const subscription = server.broadcaster.subscribe(abort.signal);
    await subscribers(server.broadcaster, 2);
    const published: string[] = [];
    const consuming = (async () => {
      for await (const alert of subscription) published.push(alert.alertId);
    })();

    try {
      const event = makeEvent(hostId);
      const sameStream = await streamAll(client, [event, event]);
      expect(sameStream).toEqual([
        { type: "ACK", alertId: event.alertId },
        { type: "ACK", alertId: event.alertId },
      ]);
      // Later, as after a reconnect: its batch is committed, so only the database can tell.
      const laterStream = await streamAll(server.grpcClient(), [event]);
      expect(laterStream).toEqual([{ type: "ACK", alertId: event.alertId }]);

      // A fresh alert after the replays: once its frame is here, anything the replays
      // could have published is here too (the feed delivers in commit order).
      const marker = makeEvent(hostId);
      const markerSeen = new Promise<void>((resolve) => {
        onFrame = () => {
          if (frames.some((f) => f.includes(marker.alertId))) resolve();
        };
      });
      await streamAll(client, [marker]);
      await markerSeen;
      abort.abort();
      await consuming;

      const frameIds = frames.map(
        (f) => (JSON.parse(f) as { data: { alert_id: string } }).data.alert_id,
      );
      expect(frameIds).toEqual([event.alertId, marker.alertId]);
      expect(published).toEqual([event.alertId, marker.alertId]);
      const rows = await database.rows<{ n: string }>(
        sql`select count(*)::text as n from alerts where alert_id = ${event.alertId}::uuid`,
      );
      expect(rows[0]?.n).toBe("1");
    } finally {
      abort.abort();
      socket.terminate();
    }
  });

  it("a replay with the alert_id in upper case is the same alert: ACKed with the id as sent, not stored again", async () => {
    const client = server.grpcClient();
    const hostId = await register(client);
    const event = makeEvent(hostId);
    expect(await streamAll(client, [event])).toEqual([{ type: "ACK", alertId: event.alertId }]);

    const shouted = { ...event, alertId: event.alertId.toUpperCase() };
    expect(await streamAll(client, [shouted])).toEqual([{ type: "ACK", alertId: shouted.alertId }]);
    const rows = await database.rows<{ n: string }>(
      sql`select count(*)::text as n from alerts where alert_id = ${event.alertId}::uuid`,
    );
    expect(rows[0]?.n).toBe("1");
  });
});
