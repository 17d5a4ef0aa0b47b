/**
 * The gRPC fast path of StreamAlerts (src/ingest/stream-alerts-grpc.ts) on the wire, with
 * a raw HTTP/2 client: it speaks gRPC exactly as Connect does — headers, replies,
 * trailers, errors — whatever the chunking of the request, coalesces the replies that are
 * ready together into one write, and leaves every other kind of request to Connect.
 */
import * as http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AgentEvent,
  AgentEventSchema,
  AlertService,
  ServerCommandSchema,
} from "../../src/gen/alert/alert_pb.js";
import { decodeReply, makeEvent, type Reply, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

const streamPath = "/alert.AlertService/StreamAlerts";
const maxMessageBytes = 4_096;

/** What a raw gRPC call got back. */
interface RawCall {
  readonly headers: http2.IncomingHttpHeaders;
  /** Each DATA chunk as the client received it. */
  readonly chunks: Buffer[];
  readonly trailers: http2.IncomingHttpHeaders;
}

function envelope(bytes: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out[0] = flags;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

function envelopes(events: readonly AgentEvent[]): Buffer {
  return Buffer.concat(events.map((e) => envelope(toBinary(AgentEventSchema, e))));
}

/** The ServerCommands in a response body, in order. */
function repliesIn(body: Buffer): Reply[] {
  const out: Reply[] = [];
  for (let at = 0; at < body.length; ) {
    const length = body.readUInt32BE(at + 1);
    out.push(decodeReply(fromBinary(ServerCommandSchema, body.subarray(at + 5, at + 5 + length))));
    at += 5 + length;
  }
  return out;
}

/** One StreamAlerts call: writes `pieces` in turn, half-closes, reads to the end. */
async function rawCall(
  baseUrl: string,
  pieces: readonly Uint8Array[],
  headers: Record<string, string> = {},
): Promise<RawCall> {
  const session = http2.connect(baseUrl);
  try {
    const req = session.request({
      ":method": "POST",
      ":path": streamPath,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    const chunks: Buffer[] = [];
    const done = new Promise<RawCall>((resolve, reject) => {
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      req.on("response", (h) => {
        head = h;
      });
      req.on("trailers", (t) => {
        trailers = t;
      });
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve({ headers: head, chunks, trailers }));
      req.on("error", reject);
    });
    for (const piece of pieces) {
      await new Promise<void>((resolve, reject) =>
        req.write(piece, (err) => (err ? reject(err) : resolve())),
      );
    }
    req.end();
    return await done;
  } finally {
    session.close();
  }
}

describe.each(backends)("StreamAlerts gRPC fast path [%s]", (kind) => {
  let database: TestDatabase;
  let fast: RunningServer;
  let viaConnect: RunningServer;
  let hostId: string;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    const settings = { maxMessageBytes, flushIntervalMs: 20 };
    fast = await startServer(database, { ...settings, grpcFastPath: "on" });
    viaConnect = await startServer(database, { ...settings, grpcFastPath: "off" });
    hostId = await register(fast.grpcClient(), "fast-path-host");
    await register(viaConnect.grpcClient(), "fast-path-host");
  });
  afterAll(async () => {
    await fast?.close();
    await viaConnect?.close();
    await database?.dispose();
  });

  it("answers every event of a request cut at every byte, as Connect would", async () => {
    const events = [
      makeEvent(hostId),
      makeEvent(hostId, { tripwireType: "USB" }),
      makeEvent(hostId, { ruleName: "r".repeat(200) }),
    ];
    const bytes = envelopes(events);
    const pieces = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
    const call = await rawCall(fast.baseUrl, pieces);
    const reference = await rawCall(viaConnect.baseUrl, [envelopes([makeEvent(hostId)])]);
    const { date: _d1, ...headers } = call.headers;
    const { date: _d2, ...connectHeaders } = reference.headers;
    expect(headers).toEqual(connectHeaders);
    expect(headers["content-type"]).toBe("application/grpc+proto");
    expect(call.trailers).toEqual(reference.trailers);
    expect(call.trailers["grpc-status"]).toBe("0");
    const replies = repliesIn(Buffer.concat(call.chunks));
    expect(replies.map((r) => r.alertId).sort()).toEqual(events.map((e) => e.alertId).sort());
    expect(replies.find((r) => r.alertId === events[0]?.alertId)?.type).toBe("ACK");
    expect(replies.find((r) => r.alertId === events[1]?.alertId)?.error).toMatch(
      /tripwire_type "USB" is not one of/,
    );
  });

  it("writes the replies that are ready together as one DATA chunk, one ServerCommand per event", async () => {
    // One batch commits all 100 at once, so their ACKs are ready at the same moment (quiet
    // streams off: the stream's first events would go ahead in a batch of their own).
    const single = await startServer(database, {
      batchSize: 100,
      flushIntervalMs: 60_000,
      quietStreamRate: 0,
    });
    try {
      const events = Array.from({ length: 100 }, () => makeEvent(hostId));
      const call = await rawCall(single.baseUrl, [envelopes(events)]);
      expect(call.trailers["grpc-status"]).toBe("0");
      expect(call.chunks).toHaveLength(1);
      const replies = repliesIn(Buffer.concat(call.chunks));
      expect(replies).toHaveLength(100);
      expect(new Set(replies.map((r) => r.alertId))).toEqual(new Set(events.map((e) => e.alertId)));
      expect(replies.every((r) => r.type === "ACK")).toBe(true);
    } finally {
      await single.close();
    }
  });

  it.each([
    ["a message over the size limit", () => [Buffer.from([0, 0, 0x10, 0, 1])]],
    ["a compressed envelope without grpc-encoding", () => [envelope(new Uint8Array(0), 1)]],
    ["bytes that are not an AgentEvent", () => [envelope(new Uint8Array([0x0a, 9, 1]))]],
    ["an envelope cut short", () => [Buffer.from([0, 0, 0, 0, 9, 1, 2])]],
  ])("ends the stream on %s with the status and message Connect gives", async (_, body) => {
    const [mine, theirs] = await Promise.all([
      rawCall(fast.baseUrl, body()),
      rawCall(viaConnect.baseUrl, body()),
    ]);
    expect(mine.trailers["grpc-status"]).not.toBe("0");
    expect({
      status: mine.trailers["grpc-status"],
      message: mine.trailers["grpc-message"],
    }).toEqual({
      status: theirs.trailers["grpc-status"],
      message: theirs.trailers["grpc-message"],
    });
  });

  it("leaves compressed and deadline-bound calls to Connect, which answers them as before", async () => {
    const transport = createGrpcTransport({ baseUrl: fast.baseUrl, defaultTimeoutMs: 30_000 });
    const events = [makeEvent(hostId), makeEvent(hostId)];
    const replies = await streamAll(createClient(AlertService, transport), events);
    expect(replies.map((r) => r.type)).toEqual(["ACK", "ACK"]);
    // The fast path knows no compression: it would end this call with INTERNAL.
    const event = makeEvent(hostId);
    const gzipped = await rawCall(
      fast.baseUrl,
      [envelope(gzipSync(toBinary(AgentEventSchema, event)), 1)],
      { "grpc-encoding": "gzip" },
    );
    expect(gzipped.trailers["grpc-status"]).toBe("0");
    expect(repliesIn(Buffer.concat(gzipped.chunks))).toEqual([
      { type: "ACK", alertId: event.alertId },
    ]);
  });
});
