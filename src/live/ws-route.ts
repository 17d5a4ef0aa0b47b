/**
 * GET /ws: the live alert feed for browsers. Each connection subscribes to the
 * broadcaster and writes every committed alert as one JSON text frame,
 * `{"type":"alert","data":{…}}` (the wire contract).
 */
import type { FastifyInstance } from "fastify";
import type { WebSocket } from "ws";
import type { Broadcaster } from "../broadcast/broadcaster.js";
import type { Logger } from "../logger.js";

/** Close code sent to browsers when the server shuts down (RFC 6455 "going away"). */
export const closeGoingAway = 1001;

/** Dependencies and settings of the WebSocket route. */
export interface WsRouteDeps {
  readonly broadcaster: Broadcaster;
  readonly log: Logger;
  /** Bytes queued on one socket before the writer waits for the browser to read. */
  readonly highWaterBytes: number;
}

/** Registers GET /ws on an app that has @fastify/websocket. */
export function registerWsRoute(app: FastifyInstance, deps: WsRouteDeps): void {
  app.get("/ws", { websocket: true }, (socket) => {
    void feed(socket, deps);
  });
}

async function feed(socket: WebSocket, deps: WsRouteDeps): Promise<void> {
  const abort = new AbortController();
  socket.once("close", () => abort.abort());
  // Inbound messages are not part of this protocol version; a client error ends the socket.
  socket.on("error", () => socket.terminate());
  const subscription = deps.broadcaster.subscribe(abort.signal);
  try {
    for await (const batch of subscription.batches()) {
      if (socket.readyState !== socket.OPEN) break;
      let last: Promise<void> | undefined;
      for (let i = 0; i < batch.length; i++) {
        const alert = batch[i];
        if (alert === undefined) continue;
        // The frame string is built once per alert and shared by every subscriber.
        if (i === batch.length - 1 && socket.bufferedAmount >= deps.highWaterBytes) {
          last = new Promise<void>((resolve) => socket.send(alert.frame, () => resolve()));
        } else {
          socket.send(alert.frame);
        }
      }
      // A browser that does not read makes this wait; meanwhile its subscription buffer
      // fills and the broadcaster drops for it alone. Ingestion never waits here.
      if (last !== undefined) await last;
    }
  } catch (err) {
    deps.log.warn({ err }, "websocket feed ended with an error");
  } finally {
    abort.abort();
    if (socket.readyState === socket.OPEN) socket.close(closeGoingAway, "server shutting down");
  }
}
