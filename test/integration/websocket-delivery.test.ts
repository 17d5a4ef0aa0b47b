/**
 * End to end over the wire: an agent streams over gRPC (HTTP/2), a browser listens on
 * the WebSocket feed of the same server, on every database backend.
 */
import { once } from "node:events";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

/** One frame as the browser received it. */
interface Frame {
  readonly text: string;
  readonly binary: boolean;
}

/** A WebSocket client of /ws that records every frame. */
interface Feed {
  readonly socket: WebSocket;
  readonly frames: Frame[];
  /** Resolves with the first frame whose text contains `needle`. */
  frameWith(needle: string): Promise<Frame>;
}

/** Keys of `data` in the wire contract's alert frame, plus the server's `seq`. */
const contractKeys = [
  "alert_id",
  "event_detail",
  "host_id",
  "hostname",
  "received_at",
  "rule_name",
  "seq",
  "severity",
  "timestamp",
  "tripwire_type",
];

/**
 * Opens /ws and returns once the server's route handler has subscribed to the
 * broadcaster, so nothing published afterwards can be missed. There is no event for
 * the subscription, so its count is polled, with a deadline.
 */
async function openFeed(server: RunningServer): Promise<Feed> {
  const before = server.broadcaster.size;
  const socket = new WebSocket(server.wsUrl);
  const frames: Frame[] = [];
  let check = (): void => {};
  socket.on("message", (data, binary) => {
    frames.push({ text: String(data), binary });
    check();
  });
  await once(socket, "open");
  const deadline = Date.now() + 10_000;
  while (server.broadcaster.size <= before) {
    if (Date.now() > deadline) throw new Error("the /ws route never subscribed");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const waitFor = <T>(test: () => T | undefined): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const previous = check;
      const onClose = (): void => reject(new Error(`socket closed after ${frames.length} frames`));
      check = () => {
        previous();
        const hit = test();
        if (hit !== undefined) {
          socket.off("close", onClose);
          resolve(hit);
        }
      };
      socket.once("close", onClose);
      check();
    });
  return {
    socket,
    frames,
    frameWith: (needle) => waitFor(() => frames.find((f) => f.text.includes(needle))),
  };
}

/** RFC 3339 with six fractional digits, computed here independently of the server. */
function rfc3339Micros(us: bigint): string {
  const ms = Number(us / 1000n);
  const micros = (us % 1_000_000n).toString().padStart(6, "0");
  return `${new Date(ms).toISOString().slice(0, 19)}.${micros}Z`;
}

describe.each(backends)("WebSocket delivery [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer | undefined;
  const sockets: WebSocket[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.terminate();
    await server?.close();
    server = undefined;
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("TestIntegration_IngestedEventAppearsOnWebSocketSubscription: an event streamed over gRPC arrives as exactly one alert frame carrying the values sent", async () => {
    server = await startServer(database, { flushIntervalMs: 20 });
    const client = server.grpcClient();
    const hostId = await register(client, "ws-delivery-host");
    const feed = await openFeed(server);
    sockets.push(feed.socket);

    // Microseconds that a millisecond clock could not produce, and strings that need escaping.
    const timestampUs = BigInt(Date.now() - 5_000) * 1000n + 123n;
    const detail = { path: "/etc/shadow", pid: 4242, note: 'quote " and ✓' };
    const event = makeEvent(hostId, {
      timestampUs,
      tripwireType: "NETWORK",
      ruleName: 'outbound "beacon" ✓',
      severity: "WARN",
      eventDetailJson: new TextEncoder().encode(JSON.stringify(detail)),
    });
    const sentAt = Date.now();
    const replies = await streamAll(client, [event]);
    const answeredAt = Date.now();
    expect(replies).toEqual([{ type: "ACK", alertId: event.alertId }]);

    const frame = await feed.frameWith(event.alertId);
    // A second event, sent after the first was answered, marks the end of what the first
    // could have produced: the feed delivers in commit order.
    const marker = makeEvent(hostId);
    await streamAll(client, [marker]);
    await feed.frameWith(marker.alertId);

    expect(feed.frames.map((f) => f.text.includes(event.alertId))).toEqual([true, false]);
    expect(frame.binary).toBe(false);
    const message = JSON.parse(frame.text) as { type: unknown; data: Record<string, unknown> };
    expect(Object.keys(message).sort()).toEqual(["data", "type"]);
    expect(message.type).toBe("alert");
    const data = message.data;
    expect(Object.keys(data).sort()).toEqual(contractKeys);
    expect(data).toMatchObject({
      alert_id: event.alertId,
      host_id: hostId,
      hostname: "ws-delivery-host",
      timestamp: rfc3339Micros(timestampUs),
      tripwire_type: "NETWORK",
      rule_name: 'outbound "beacon" ✓',
      severity: "WARN",
      event_detail: detail,
    });
    // received_at is the server's clock: RFC 3339 with microseconds, taken while the
    // event was in flight (a second of slack for clock granularity, not for speed).
    expect(data.received_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const receivedAt = Date.parse(String(data.received_at));
    expect(receivedAt).toBeGreaterThanOrEqual(sentAt - 1_000);
    expect(receivedAt).toBeLessThanOrEqual(answeredAt + 1_000);
    // seq is the row's seq in the database.
    const rows = await database.rows<{ seq: string }>(
      sql`select seq::text as seq from alerts where alert_id = ${event.alertId}::uuid`,
    );
    expect(rows).toHaveLength(1);
    expect(data.seq).toBe(Number(rows[0]?.seq));
  });

  it("a WebSocket client that keeps up receives every one of 500 alerts committed in a single flush, each exactly once", async () => {
    const real = createAlertStore(database);
    const batchSizes: number[] = [];
    const store: AlertStore = {
      upsertHost: (h) => real.upsertHost(h),
      findHostname: (id) => real.findHostname(id),
      insertAlerts: (alerts) => {
        batchSizes.push(alerts.length);
        return real.insertAlerts(alerts);
      },
    };
    // The batch fills at exactly 500, long before the interval could end it.
    // Quiet streams off: the stream's first events would go ahead in a batch of their own.
    server = await startServer(
      database,
      { batchSize: 500, flushIntervalMs: 60_000, quietStreamRate: 0 },
      { store },
    );
    const client = server.grpcClient();
    const hostId = await register(client);
    const feed = await openFeed(server);
    sockets.push(feed.socket);

    const events = Array.from({ length: 500 }, () => makeEvent(hostId));
    const replies = await streamAll(client, events);
    expect(replies.filter((r) => r.type === "ACK")).toHaveLength(500);
    expect(batchSizes).toEqual([500]);

    // The feed writes a committed batch to the socket before that batch's ACKs can reach
    // the agent, and closing sends the close frame after them: so every frame the batch
    // produced (a duplicate included) is counted below, and a drop shows as a shortfall.
    const closed = once(feed.socket, "close");
    await server.close();
    server = undefined;
    const [code] = (await closed) as [number];
    expect(code).toBe(1001);

    const ids = feed.frames.map((f) => {
      const message = JSON.parse(f.text) as { type: string; data: { alert_id: string } };
      expect(message.type).toBe("alert");
      return message.data.alert_id;
    });
    expect(ids).toHaveLength(500);
    expect(new Set(ids).size).toBe(500);
    expect([...ids].sort()).toEqual(events.map((e) => e.alertId).sort());
  });

  it("an event that fails validation is not delivered to the WebSocket", async () => {
    server = await startServer(database, { flushIntervalMs: 20 });
    const client = server.grpcClient();
    const hostId = await register(client);
    const feed = await openFeed(server);
    sockets.push(feed.socket);

    const bad = makeEvent(hostId, { tripwireType: "USB" });
    const badReplies = await streamAll(client, [bad]);
    expect(badReplies.map((r) => r.type)).toEqual(["ERROR"]);
    // A valid event afterwards: once its frame is here, the invalid one had its chance.
    const good = makeEvent(hostId);
    await streamAll(client, [good]);
    await feed.frameWith(good.alertId);

    expect(feed.frames).toHaveLength(1);
    expect(feed.frames[0]?.text).toContain(good.alertId);
    expect(feed.frames.some((f) => f.text.includes(bad.alertId))).toBe(false);
  });
});
