/**
 * A lean AlertService client for the benchmark's load agents: RegisterAgent through
 * connect-node, StreamAlerts as plain gRPC written directly on a node:http2 stream.
 *
 * The load generator shares the machine's two cores with the server and PostgreSQL, and
 * connect-node's client runs every message through the same per-message async pipeline
 * the server's fast path avoids (docs/performance.md, "Ingest hot path"). Here events
 * are encoded with protobuf-es and written in one buffer per turn of the event loop, and
 * replies are split from the DATA chunks and decoded in one loop. Same bytes on the wire
 * as any gRPC client; the simulated agent's logic (pacing, in-flight bound, matching
 * replies) is unchanged, it only gets this as its client.
 */
import * as http2 from "node:http2";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  type AgentEvent,
  AgentEventSchema,
  AlertService,
  type ServerCommand,
  ServerCommandSchema,
} from "../../src/gen/alert/alert_pb.js";

/** The two calls the simulated agent makes, over one HTTP/2 connection. */
export type LeanAlertClient = Pick<Client<typeof AlertService>, "registerAgent" | "streamAlerts">;

/** A lean client and the connection to close after it. */
export interface LeanClient {
  readonly client: LeanAlertClient;
  close(): void;
}

/** Opens one HTTP/2 connection to `baseUrl` (h2c) for one agent. */
export function createLeanClient(baseUrl: string): LeanClient {
  const session = http2.connect(baseUrl);
  session.on("error", () => {});
  const unary = createClient(AlertService, createGrpcTransport({ baseUrl }));
  const client = {
    registerAgent: unary.registerAgent,
    streamAlerts: (events: AsyncIterable<AgentEvent>, options?: { signal?: AbortSignal }) =>
      streamAlerts(session, events, options?.signal),
  } as unknown as LeanAlertClient;
  return { client, close: () => session.close() };
}

async function* streamAlerts(
  session: http2.ClientHttp2Session,
  events: AsyncIterable<AgentEvent>,
  signal: AbortSignal | undefined,
): AsyncGenerator<ServerCommand> {
  const stream = session.request({
    ":method": "POST",
    ":path": "/alert.AlertService/StreamAlerts",
    "content-type": "application/grpc",
    te: "trailers",
  });
  const onAbort = (): void => {
    stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  signal?.addEventListener("abort", onAbort, { once: true });

  // Replies decoded and not yet taken, and how the stream ended.
  let replies: ServerCommand[] = [];
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const nudge = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  let held = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    let buf = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
    let at = 0;
    while (buf.length - at >= 5) {
      const length = buf.readUInt32BE(at + 1);
      if (buf.length - at - 5 < length) break;
      replies.push(fromBinary(ServerCommandSchema, buf.subarray(at + 5, at + 5 + length)));
      at += 5 + length;
    }
    buf = buf.subarray(at);
    held = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf);
    nudge();
  });
  stream.on("trailers", (trailers) => {
    const status = Number(trailers["grpc-status"] ?? 0);
    if (status !== 0) {
      const message = decodeURIComponent(String(trailers["grpc-message"] ?? ""));
      failure = new ConnectError(message, status as Code);
    }
  });
  stream.on("error", (err) => {
    failure ??= err;
  });
  stream.on("close", () => {
    if (failure === undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
      failure = new ConnectError(`stream reset (${stream.rstCode})`, Code.Canceled);
    }
    ended = true;
    nudge();
  });

  // Events are encoded as they come and written once per turn of the event loop.
  const send = async (): Promise<void> => {
    let pending: Buffer[] = [];
    let scheduled = false;
    const flush = (): void => {
      scheduled = false;
      if (pending.length === 0 || stream.destroyed) return;
      stream.write(pending.length === 1 ? pending[0] : Buffer.concat(pending));
      pending = [];
    };
    for await (const event of events) {
      const message = toBinary(AgentEventSchema, event);
      const frame = Buffer.allocUnsafe(5 + message.length);
      frame[0] = 0;
      frame.writeUInt32BE(message.length, 1);
      frame.set(message, 5);
      pending.push(frame);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    }
    flush();
    if (!stream.destroyed) stream.end();
  };
  void send().catch((err: unknown) => {
    failure ??= err instanceof Error ? err : new Error(String(err));
    stream.close(http2.constants.NGHTTP2_CANCEL);
  });

  try {
    for (;;) {
      if (replies.length > 0) {
        const ready = replies;
        replies = [];
        yield* ready;
        continue;
      }
      if (ended) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    if (failure !== undefined) throw failure;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}
