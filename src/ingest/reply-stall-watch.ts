/**
 * Finds agent streams whose replies stalled: the agent keeps its connection alive (HTTP/2
 * answers pings by itself) but stopped reading the stream, so its flow-control window is
 * full, the reply write never completes and the stream would hold its slot, its claimed
 * host and its un-ACKed events forever.
 *
 * Hot path: a stream only stamps when a reply write starts and clears the stamp when the
 * write completes (two assignments per reply, no timer per reply). One sweep timer,
 * running only while streams are open, cancels the ones stamped too long ago.
 */

import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { constants as http2 } from "node:http2";
import { createContextKey } from "@connectrpc/connect";

/**
 * Cancels the call's transport, set by the server for every call: the handler cannot
 * reach the HTTP/2 stream otherwise, and a stalled write only ends when the stream does.
 */
export const cancelTransport = createContextKey<() => void>(() => {}, {
  description: "cancels the call's HTTP/2 stream or HTTP/1.1 connection",
});

/** How to cancel `raw`: RST_STREAM (CANCEL) on HTTP/2; on HTTP/1.1 the connection goes. */
export function transportCanceller(raw: IncomingMessage | Http2ServerRequest): () => void {
  return () => {
    if ("stream" in raw) raw.stream.close(http2.NGHTTP2_CANCEL);
    else raw.socket.destroy();
  };
}

/** One open stream as the watch sees it. */
export interface WatchedStream {
  /** When the pending reply write started (ms, Date.now); 0 when no write is pending. */
  writeStartedAt: number;
  /** Cancels the stream's transport (RST_STREAM on HTTP/2, socket destroy on HTTP/1.1). */
  readonly cancel: () => void;
}

/** Watches open streams and cancels those whose reply writes stalled past `timeoutMs`. */
export class ReplyStallWatch {
  readonly #streams = new Set<WatchedStream>();
  readonly #timeoutMs: number;
  readonly #onStall: () => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number, onStall: () => void = () => {}) {
    this.#timeoutMs = timeoutMs;
    this.#onStall = onStall;
  }

  /** Starts watching `stream`; call the returned function when the stream ends. */
  watch(stream: WatchedStream): () => void {
    this.#streams.add(stream);
    // Four sweeps per timeout: a stalled stream is cancelled within 1.25 × the timeout.
    this.#timer ??= setInterval(() => this.#sweep(), Math.max(25, this.#timeoutMs / 4)).unref();
    return () => {
      this.#streams.delete(stream);
      if (this.#streams.size === 0 && this.#timer !== undefined) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    };
  }

  #sweep(): void {
    const cutoff = Date.now() - this.#timeoutMs;
    for (const stream of this.#streams) {
      if (stream.writeStartedAt !== 0 && stream.writeStartedAt < cutoff) {
        this.#streams.delete(stream);
        this.#onStall();
        stream.cancel();
      }
    }
  }
}
