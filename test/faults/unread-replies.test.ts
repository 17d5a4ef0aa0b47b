/**
 * An agent that sends events but never reads its replies: its HTTP/2 stream's window
 * fills with ACKs, the server's writes stall, and the server stops reading from it. The
 * stream would hold its resources forever; the reply-stall timeout cancels it instead.
 */
import * as http2 from "node:http2";
import { toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentEventSchema } from "../../src/gen/alert/alert_pb.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

/** gRPC's length-prefixed framing of one message. */
function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

describe.each(["on", "off"] as const)(
  "an agent that never reads its replies (gRPC fast path %s)",
  (grpcFastPath) => {
    let database: TestDatabase;
    let server: RunningServer;

    beforeAll(async () => {
      database = await createTestDatabase("pglite");
      server = await startServer(database, {
        flushIntervalMs: 10,
        maxInFlightPerStream: 200,
        replyStallTimeoutMs: 300,
        maxStreamsPerHost: 1,
        grpcFastPath,
      });
    });
    afterAll(async () => {
      await server?.close();
      await database?.dispose();
    });

    it("has its stream cancelled once replies stall, which frees its host's stream slot; other agents are unaffected", async () => {
      const hostId = await register(server.grpcClient(), "never-reads");
      // A small stream window on the agent's side: a few hundred ACKs fill it.
      const session = http2.connect(server.baseUrl, { settings: { initialWindowSize: 1024 } });
      session.on("error", () => {});
      const stream = session.request({
        ":method": "POST",
        ":path": "/alert.AlertService/StreamAlerts",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.pause(); // never read a byte of the replies
      const closed = new Promise<number>((resolve) =>
        stream.once("close", () => resolve(stream.rstCode)),
      );
      const ids: string[] = [];
      for (let i = 0; i < 2_000; i++) {
        const ev = makeEvent(hostId);
        ids.push(ev.alertId);
        stream.write(grpcFrame(toBinary(AgentEventSchema, ev)));
      }
      // Without the timeout this never settles: the stream stays open, stalled, forever.
      const rstCode = await closed;
      expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      session.destroy();
      // Nothing of it is left counted as open or in flight.
      const metrics = await (await fetch(`${server.baseUrl}/metrics`)).text();
      expect(metrics).toMatch(/^tripwire_agent_streams_open 0$/m);
      expect(metrics).toMatch(/^tripwire_events_in_flight 0$/m);

      // The host's only stream slot (maxStreamsPerHost 1) was released: it may stream again.
      const again = await streamAll(server.grpcClient(), [makeEvent(hostId)]);
      expect(again.map((r) => r.type)).toEqual(["ACK"]);
      // Another agent streams as usual.
      const other = server.grpcClient();
      const otherHost = await register(other, "reads-fine");
      const replies = await streamAll(other, [makeEvent(otherHost), makeEvent(otherHost)]);
      expect(replies.map((r) => r.type)).toEqual(["ACK", "ACK"]);
    });
  },
);
