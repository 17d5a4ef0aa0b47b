/**
 * StreamAlerts as deployed agents call it — gRPC over HTTP/2, binary protobuf, no
 * compression, no deadline — served without connect-es's per-message pipeline.
 *
 * Connect runs every message through a chain of async generators each way, decodes and
 * encodes by reflection, and writes each reply with its own promise and DATA frame; per
 * alert that cost more CPU than everything else the server does (docs/performance.md,
 * "Ingest hot path"). Here a request chunk is split into envelopes and decoded in one
 * synchronous loop, and all replies ready at once go out as one write. The protocol is
 * the same, byte for byte; any other request (Connect, gRPC-Web, JSON, compression,
 * `grpc-timeout`, HTTP/1.1) goes to the Connect handler unchanged.
 */
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import type {
  UniversalHandler,
  UniversalServerRequest,
  UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { createLinkedAbortController } from "@connectrpc/connect/protocol";
import {
  contentTypeProto,
  headerContentType,
  headerEncoding,
  headerGrpcStatus,
  headerTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { AlertService } from "../gen/alert/alert_pb.js";
import type { Logger } from "../logger.js";
import { decodeAgentEvent, encodeReplies } from "./agent-event-codec.js";
import { AlertStream, type AlertStreamDeps } from "./alert-stream.js";

/** What the fast path needs besides the streams' shared state. */
export interface StreamAlertsGrpcOptions {
  readonly streams: AlertStreamDeps;
  /** Largest request message accepted, as Connect's `readMaxBytes`. */
  readonly readMaxBytes: number;
  /** Largest reply message, as Connect's `writeMaxBytes`. */
  readonly writeMaxBytes: number;
  /** Ends every open stream (the server's RPC deadline at shutdown). */
  readonly shutdownSignal: AbortSignal;
  readonly log: Logger;
}

/**
 * Puts the fast path in front of Connect's StreamAlerts handler among `handlers` (a
 * Connect router's, before the Fastify plugin registers them).
 */
export function useStreamAlertsGrpc(
  handlers: UniversalHandler[],
  options: StreamAlertsGrpcOptions,
): void {
  const i = handlers.findIndex((h) => h.method === AlertService.method.streamAlerts);
  const connect = handlers[i];
  if (connect === undefined) throw new Error("StreamAlerts is not among the router's handlers");
  handlers[i] = withStreamAlertsGrpc(connect, options);
}

/**
 * Wraps Connect's StreamAlerts handler: plain gRPC requests take the fast path, all
 * others the Connect handler. Routes, methods and content types stay Connect's.
 */
export function withStreamAlertsGrpc(
  connect: UniversalHandler,
  options: StreamAlertsGrpcOptions,
): UniversalHandler {
  const fast = createStreamAlertsGrpc(options);
  const handle = (req: UniversalServerRequest): Promise<UniversalServerResponse> =>
    isPlainGrpc(req) ? fast(req) : connect(req);
  return Object.assign(handle, {
    protocolNames: connect.protocolNames,
    allowedMethods: connect.allowedMethods,
    supportedContentType: connect.supportedContentType,
    requestPath: connect.requestPath,
    service: connect.service,
    method: connect.method,
  });
}

/** gRPC, binary, over HTTP/2, uncompressed and without a deadline: what agents send. */
function isPlainGrpc(req: UniversalServerRequest): boolean {
  if (req.method !== "POST" || !req.httpVersion.startsWith("2")) return false;
  const type = req.header.get(headerContentType)?.toLowerCase();
  if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
  const encoding = req.header.get(headerEncoding);
  if (encoding !== null && encoding !== "identity") return false;
  if (req.header.has(headerTimeout)) return false;
  return isByteStream(req.body);
}

function isByteStream(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

/** The fast-path handler: same headers, trailers and statuses as Connect's gRPC handler. */
function createStreamAlertsGrpc(
  options: StreamAlertsGrpcOptions,
): (req: UniversalServerRequest) => Promise<UniversalServerResponse> {
  return async (req) => {
    const trailer = new Headers({ [headerGrpcStatus]: "0" });
    const controller = createLinkedAbortController(req.signal, options.shutdownSignal);
    const body = replies(req, controller, trailer, options);
    return {
      status: 200,
      header: new Headers({ [headerContentType]: contentTypeProto }),
      body,
      trailer,
    };
  };
}

/** The response body: every reply ready at a time as one chunk; the status at the end. */
async function* replies(
  req: UniversalServerRequest,
  controller: AbortController,
  trailer: Headers,
  options: StreamAlertsGrpcOptions,
): AsyncGenerator<Uint8Array> {
  let stream: AlertStream | undefined;
  try {
    // Before anything is read: an unauthenticated stream ends with Unauthenticated.
    stream = new AlertStream(
      options.streams,
      req.contextValues ?? createContextValues(),
      controller.signal,
    );
    void readEvents(req.body as AsyncIterable<Uint8Array>, stream, options.readMaxBytes);
    for (;;) {
      const ready = await stream.take();
      if (ready === undefined) break;
      const chunk = encodeReplies(ready.alertIds, ready.errors, options.writeMaxBytes);
      // Suspended at `yield` until the write completes: the stall watch's window.
      stream.writing();
      yield chunk;
      stream.written(ready.alertIds.length);
    }
  } catch (err) {
    if (!(err instanceof ConnectError)) {
      // Connect would answer this as Internal without a word; say what happened.
      options.log.error({ err }, "StreamAlerts failed unexpectedly");
    }
    setTrailerStatus(
      trailer,
      err instanceof ConnectError
        ? err
        : new ConnectError("internal error", Code.Internal, undefined, undefined, err),
    );
  } finally {
    stream?.close();
    controller.abort();
  }
}

/**
 * Splits the request body into gRPC envelopes and hands each decoded event to the
 * stream, synchronously for all the envelopes of a chunk unless the stream must wait.
 * Records how reading ended on the stream; never rejects.
 */
async function readEvents(
  body: AsyncIterable<Uint8Array>,
  stream: AlertStream,
  readMaxBytes: number,
): Promise<void> {
  try {
    const it = body[Symbol.asyncIterator]();
    // Bytes of an envelope that continues in a later chunk, and how many there are.
    let held: Uint8Array[] = [];
    let heldBytes = 0;
    // The size of the held envelope (header included), once its header has arrived.
    let wanted = 0;
    for (;;) {
      const next = await it.next();
      if (next.done) break;
      let chunk = next.value;
      if (heldBytes > 0) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (wanted === 0 && heldBytes >= 5) {
          wanted = 5 + envelopeLength(Buffer.concat(held), 0, readMaxBytes);
        }
        // Join once the whole envelope is here, not at every chunk of a large one.
        if (wanted === 0 || heldBytes < wanted) continue;
        chunk = Buffer.concat(held, heldBytes);
        held = [];
        heldBytes = 0;
        wanted = 0;
      }
      let at = 0;
      while (chunk.length - at >= 5) {
        const length = envelopeLength(chunk, at, readMaxBytes);
        if (chunk.length - at - 5 < length) break;
        if (((chunk[at] as number) & 0x01) !== 0) {
          throw new ConnectError(
            "received compressed envelope, but do not know how to decompress",
            Code.Internal,
          );
        }
        const message = chunk.subarray(at + 5, at + 5 + length);
        at += 5 + length;
        const go = stream.accept(parse(message));
        if (go !== true && !(await go)) {
          // Stop reading, but leave the request open: the replies still go out on it.
          stream.readerEnded();
          return;
        }
      }
      if (at < chunk.length) {
        const rest = chunk.subarray(at);
        held = [rest];
        heldBytes = rest.length;
        wanted = heldBytes >= 5 ? 5 + envelopeLength(rest, 0, readMaxBytes) : 0;
      }
    }
    if (heldBytes > 0) {
      throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    }
    stream.readerEnded();
  } catch (err) {
    stream.readerEnded(err);
  }
}

/** The message length in the envelope header at `at`; refuses more than `readMaxBytes`. */
function envelopeLength(b: Uint8Array, at: number, readMaxBytes: number): number {
  const length =
    (((b[at + 1] as number) << 24) |
      ((b[at + 2] as number) << 16) |
      ((b[at + 3] as number) << 8) |
      (b[at + 4] as number)) >>>
    0;
  if (length > readMaxBytes) {
    throw new ConnectError(
      `message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`,
      Code.ResourceExhausted,
    );
  }
  return length;
}

/** Decodes one event, failing as Connect's parser does. */
function parse(message: Uint8Array): ReturnType<typeof decodeAgentEvent> {
  try {
    return decodeAgentEvent(message);
  } catch (err) {
    const m = err instanceof Error ? err.message : String(err);
    throw new ConnectError(`parse binary: ${m}`, Code.Internal);
  }
}
