/**
 * GET /ws: the live alert feed (docs/websocket.md).
 *
 * Each connection subscribes to the live feed first, then replays from the database up
 * to the feed's watermark (everything published before it subscribed), then forwards
 * live batches above the watermark: no gap and no duplicate at the switch. Version 0
 * clients get one `{"type":"alert","data":…}` frame per alert (the wire contract);
 * version 1 clients get one `alerts` frame per batch plus control messages.
 */
import type { Socket } from "node:net";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { WebSocket } from "ws";
import type { Subscription } from "../broadcast/broadcaster.js";
import type { LiveAlert, LiveBatch } from "../broadcast/live-batch.js";
import { alertsFrame } from "../broadcast/live-batch.js";
import type { LiveFeed } from "../broadcast/live-feed.js";
import { createViewerAccessCheck, type ViewerAccessSettings } from "../http/viewer-access.js";
import type { Logger } from "../logger.js";
import type { FeedStore } from "../storage/feed-store.js";
import { describeFilter, type FeedFilter, isOpen, matches } from "./feed-filter.js";
import { FeedParamError, type FeedParams, parseFeedParams, parseFilter } from "./feed-params.js";
import { acceptsSharedDeflate, deflatedTextFrame, textFrames } from "./ws-frames.js";

/** Close code sent when the server shuts down (RFC 6455 "going away"). */
export const closeGoingAway = 1001;
/** Close code for a client that fell behind for too long (or, in version 0, missed alerts). */
export const closeTooSlow = 4008;

/** Settings of the feed route. */
export interface WsSettings extends ViewerAccessSettings {
  readonly highWaterBytes: number;
  readonly replayLimit: number;
  readonly heartbeatMs: number;
  readonly slowCloseMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerToken: number;
}

/** Dependencies of the feed route. */
export interface WsRouteDeps {
  readonly feed: LiveFeed;
  readonly store: FeedStore;
  readonly log: Logger;
  readonly settings: WsSettings;
  /** Host status changes, sent to version-1 clients as `host_status`; none when omitted. */
  readonly hostStatus?: HostStatusSource;
}

/** Where host status changes come from (src/hosts/host-liveness.ts). */
export interface HostStatusSource {
  /** Calls `listener` with each change's encoded `host_status` frame; returns its removal. */
  onChange(listener: (change: { readonly frame: Buffer }) => void): () => void;
}

/** Counters of the feed route, for metrics and tests. */
export interface WsStats {
  /** Connections closed with 4008 because they stayed behind. */
  slowClosed: number;
  /** Connections terminated because they did not answer a ping. */
  deadTerminated: number;
}

interface Connection {
  readonly socket: WebSocket;
  readonly version: 0 | 1;
  /** Whole batches go out as the shared permessage-deflate frame (src/live/ws-frames.ts). */
  readonly sharedDeflate: boolean;
  alive: boolean;
  lastSentAt: number;
  lastSeq: number;
  subscription: Subscription | undefined;
}

const replayPage = 1_000;

/** Registers GET /ws on an app that has @fastify/websocket; returns its counters. */
export function registerWsRoute(app: FastifyInstance, deps: WsRouteDeps): WsStats {
  const { settings, log } = deps;
  const stats: WsStats = { slowClosed: 0, deadTerminated: 0 };
  const checkAccess = createViewerAccessCheck(settings);
  const connections = new Set<Connection>();
  const params = new WeakMap<FastifyRequest, FeedParams>();
  /** Open connections per token (by its digest), for the per-token limit. */
  const perToken = new Map<string, number>();
  const tokenKeys = new WeakMap<FastifyRequest, string>();

  if (settings.tokens.length === 0) {
    log.warn(
      {},
      "the alert feed (/ws) and the history API (/api) are open to anyone who can reach this port: set TRIPWIRE_WS_TOKENS",
    );
  }

  // Checked before the upgrade, so a refused client gets a plain HTTP answer.
  const admit = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (connections.size >= settings.maxConnections) {
      await reply.code(503).send({ error: "too many feed connections; try another instance" });
      return;
    }
    const access = checkAccess(req);
    if (!access.ok) {
      await reply.code(access.status).send({ error: access.error });
      return;
    }
    const key = access.tokenKey;
    if (key !== undefined) {
      if ((perToken.get(key) ?? 0) >= settings.maxConnectionsPerToken) {
        await reply.code(429).send({ error: "too many feed connections with this token" });
        return;
      }
      tokenKeys.set(req, key);
    }
    try {
      const offered = String(req.headers["sec-websocket-protocol"] ?? "")
        .split(",")
        .map((p) => p.trim());
      params.set(
        req,
        parseFeedParams(req.query as Record<string, string>, offered, settings.replayLimit),
      );
    } catch (err) {
      if (!(err instanceof FeedParamError)) throw err;
      await reply.code(400).send({ error: err.message });
    }
  };

  app.get("/ws", { websocket: true, preValidation: admit }, (socket, req) => {
    const p = params.get(req);
    if (p === undefined) {
      socket.close(1011, "missing parameters");
      return;
    }
    const conn: Connection = {
      socket,
      version: p.version,
      sharedDeflate: p.version === 1 && acceptsSharedDeflate(socket.extensions),
      alive: true,
      lastSentAt: Date.now(),
      lastSeq: 0,
      subscription: undefined,
    };
    connections.add(conn);
    const key = tokenKeys.get(req);
    if (key !== undefined) perToken.set(key, (perToken.get(key) ?? 0) + 1);
    socket.once("close", () => {
      connections.delete(conn);
      if (key === undefined) return;
      const left = (perToken.get(key) ?? 1) - 1;
      if (left === 0) perToken.delete(key);
      else perToken.set(key, left);
    });
    socket.on("pong", () => {
      conn.alive = true;
    });
    void serve(conn, p, req.socket, deps).catch((err: unknown) => {
      log.warn({ err }, "feed connection failed");
      socket.terminate();
    });
  });

  // One timer for every connection: pings, heartbeats and the too-slow rule.
  let lastPing = Date.now();
  const tick = setInterval(
    () => {
      const now = Date.now();
      // A tick may run a little early or late; within a tenth of the interval counts as due.
      const ping = now - lastPing >= settings.heartbeatMs * 0.9;
      if (ping) lastPing = now;
      for (const conn of connections) {
        const sub = conn.subscription;
        if (sub !== undefined) {
          const behind =
            conn.version === 0
              ? sub.dropped > 0
              : sub.droppingSince > 0 && now - sub.droppingSince >= settings.slowCloseMs;
          if (behind) {
            stats.slowClosed++;
            connections.delete(conn);
            closeSlow(conn);
            continue;
          }
        }
        if (!ping) continue;
        // A pong queues behind data the client has not read yet: a client that is behind
        // is left to the too-slow rule (4008) rather than taken for dead.
        if (!conn.alive && conn.socket.bufferedAmount === 0) {
          stats.deadTerminated++;
          connections.delete(conn);
          conn.socket.terminate();
          continue;
        }
        conn.alive = false;
        conn.socket.ping();
        if (conn.version === 1 && now - conn.lastSentAt >= settings.heartbeatMs) {
          send(
            conn,
            `{"type":"heartbeat","server_time":"${new Date(now).toISOString()}","seq":${conn.lastSeq}}`,
          );
        }
      }
    },
    Math.min(settings.heartbeatMs / 2, 1_000),
  );
  tick.unref();
  app.addHook("onClose", async () => clearInterval(tick));

  return stats;
}

function closeSlow(conn: Connection): void {
  conn.socket.close(closeTooSlow, "too slow; reconnect with since=<last seq received>");
  // A client that does not read will not read the close frame either.
  setTimeout(() => conn.socket.terminate(), 2_000).unref();
}

// Never compressed by ws (see perMessageDeflateOptions): sends stay synchronous and in order.
const textFrame = { binary: false, compress: false } as const;

/** Sends one text message; a Buffer is sent as it is (already UTF-8), not re-encoded. */
function send(conn: Connection, frame: string | Buffer, done?: () => void): void {
  conn.lastSentAt = Date.now();
  if (done === undefined) conn.socket.send(frame, textFrame);
  else conn.socket.send(frame, textFrame, () => done());
}

/** Version-0 frames as UTF-8, encoded once per alert however many subscribers get it. */
const frameBytes = new WeakMap<LiveAlert, Buffer>();

function bytesOf(alert: LiveAlert): Buffer {
  let bytes = frameBytes.get(alert);
  if (bytes === undefined) {
    bytes = Buffer.from(alert.frame);
    frameBytes.set(alert, bytes);
  }
  return bytes;
}

/** Each batch's `alerts` message as one compressed frame, built once for every socket. */
const deflatedFrames = new WeakMap<LiveBatch, Buffer>();

function deflatedFrameOf(batch: LiveBatch): Buffer {
  let frame = deflatedFrames.get(batch);
  if (frame === undefined) {
    frame = deflatedTextFrame(batch.frameV1);
    deflatedFrames.set(batch, frame);
  }
  return frame;
}

/** Each batch's version-0 frames (one per alert) in one buffer, built once for every socket. */
const v0Frames = new WeakMap<LiveBatch, Buffer>();

function v0FramesOf(batch: LiveBatch): Buffer {
  let frames = v0Frames.get(batch);
  if (frames === undefined) {
    frames = textFrames(batch.alerts.map(bytesOf));
    v0Frames.set(batch, frames);
  }
  return frames;
}

/** Sends alerts (already filtered) in the connection's version; resolves when it may send more. */
function sendAlerts(
  conn: Connection,
  alerts: readonly LiveAlert[],
  wholeBatch: LiveBatch | undefined,
  raw: Socket,
  highWaterBytes: number,
): Promise<void> | undefined {
  const last = alerts[alerts.length - 1];
  if (last === undefined) return undefined;
  conn.lastSeq = last.seq;
  // Past the high-water mark, the caller waits until this write reaches the socket.
  const wait = conn.socket.bufferedAmount >= highWaterBytes;
  if (wholeBatch !== undefined && (conn.sharedDeflate || conn.version === 0)) {
    // Frames built once for everyone: the batch compressed (version 1), or one frame per
    // alert in one buffer (version 0). ws writes its own (never compressed) frames
    // straight to this socket too, so writing these here keeps every message in order.
    if (conn.socket.readyState !== WebSocket.OPEN) return undefined;
    conn.lastSentAt = Date.now();
    const frame = conn.sharedDeflate ? deflatedFrameOf(wholeBatch) : v0FramesOf(wholeBatch);
    if (!wait) {
      raw.write(frame);
      return undefined;
    }
    return new Promise((resolve) => raw.write(frame, () => resolve()));
  }
  if (conn.version === 1) {
    // One frame per batch; a whole unfiltered batch reuses the frame shared by everyone.
    const frame = wholeBatch !== undefined ? wholeBatch.frameV1 : alertsFrame(alerts);
    if (!wait) {
      send(conn, frame);
      return undefined;
    }
    return new Promise((resolve) => send(conn, frame, resolve));
  }
  // Version 0 with a filter: one frame per matching alert, written to the socket in one go.
  raw.cork();
  let result: Promise<void> | undefined;
  for (let i = 0; i < alerts.length; i++) {
    const alert = alerts[i] as LiveAlert;
    if (i === alerts.length - 1 && wait)
      result = new Promise((resolve) => send(conn, bytesOf(alert), resolve));
    else send(conn, bytesOf(alert));
  }
  raw.uncork();
  return result;
}

async function serve(
  conn: Connection,
  p: FeedParams,
  raw: Socket,
  deps: WsRouteDeps,
): Promise<void> {
  const { feed, store, settings } = deps;
  const { socket } = conn;
  let filter: FeedFilter = p.filter;
  const abort = new AbortController();
  socket.once("close", () => abort.abort());
  // ws closes the connection itself on a protocol error (1002/1007/1009); terminating
  // here could cut off that close frame.
  socket.on("error", () => {});

  // Subscribe before reading the watermark: every alert above it arrives live.
  const subscription = feed.subscribe(abort.signal);
  conn.subscription = subscription;
  const upto = feed.watermark;

  if (conn.version === 1) {
    socket.on("message", (data, isBinary) => {
      const reply = onClientMessage(String(data), isBinary);
      if (reply.filter !== undefined) filter = reply.filter;
      send(conn, reply.frame);
    });
    send(
      conn,
      JSON.stringify({
        type: "hello",
        protocol: 1,
        server_time: new Date().toISOString(),
        seq: upto,
        heartbeat_ms: settings.heartbeatMs,
        filters: describeFilter(filter),
      }),
    );
    // Not filtered: filters select alerts, and a page's host list covers every host.
    const off = deps.hostStatus?.onChange((change) => {
      if (socket.readyState === socket.OPEN) send(conn, change.frame);
    });
    if (off !== undefined) socket.once("close", off);
  }

  // Replay: since → every stored alert after it; history → the latest N.
  let cursor = upto;
  if (p.since !== undefined) {
    if (p.since > upto || upto - p.since > settings.replayLimit) {
      if (conn.version === 1) {
        send(
          conn,
          JSON.stringify({
            type: "reset",
            reason: p.since > upto ? "cursor_ahead" : "replay_limit",
            missed_from_seq: p.since + 1,
            seq: upto,
          }),
        );
      } else {
        socket.close(
          closeTooSlow,
          p.since > upto
            ? "since is ahead of the newest alert; reload"
            : `since is more than ${settings.replayLimit} alerts behind; reload`,
        );
        return;
      }
    } else {
      let after = p.since;
      while (after < upto && !abort.signal.aborted) {
        const page = await store.alertsBetween(after, upto, replayPage, filter);
        const last = page[page.length - 1];
        if (last !== undefined)
          await sendAlerts(conn, page, undefined, raw, settings.highWaterBytes);
        after = page.length < replayPage || last === undefined ? upto : last.seq;
      }
    }
  } else if (p.history > 0) {
    const page = await store.latestAlerts(upto, p.history, filter);
    await sendAlerts(conn, page, undefined, raw, settings.highWaterBytes);
  }
  conn.lastSeq = upto;
  if (conn.version === 1) send(conn, `{"type":"live","seq":${upto}}`);

  for await (const batch of subscription.batches()) {
    if (socket.readyState !== socket.OPEN) break;
    const drops = subscription.takeDrops();
    if (drops !== undefined && conn.version === 1) {
      send(
        conn,
        `{"type":"dropped","count":${drops.count},"from_seq":${drops.fromSeq},"to_seq":${drops.toSeq}}`,
      );
    }
    if (batch.toSeq <= cursor) continue;
    const fresh =
      batch.fromSeq > cursor ? batch.alerts : batch.alerts.filter((a) => a.seq > cursor);
    cursor = batch.toSeq;
    const open = isOpen(filter);
    const selected = open ? fresh : fresh.filter((a) => matches(filter, a));
    const whole = open && fresh === batch.alerts ? batch : undefined;
    const wait = sendAlerts(conn, selected, whole, raw, settings.highWaterBytes);
    conn.lastSeq = batch.toSeq;
    // A browser that does not read makes this wait; meanwhile its subscription buffer
    // fills and drops for it alone. Ingestion never waits here.
    if (wait !== undefined) await wait;
  }
}

function onClientMessage(text: string, isBinary: boolean): { frame: string; filter?: FeedFilter } {
  const error = (e: string) => ({ frame: JSON.stringify({ type: "error", error: e }) });
  if (isBinary) return error("messages must be JSON text");
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return error("message is not valid JSON");
  }
  if (
    typeof msg !== "object" ||
    msg === null ||
    (msg as { type?: unknown }).type !== "set_filters"
  ) {
    return error('unknown message type; expected "set_filters"');
  }
  const m = msg as {
    min_severity?: string | null;
    host_ids?: string[] | null;
    tripwire_types?: string[] | null;
  };
  try {
    if (m.host_ids !== undefined && m.host_ids !== null && !Array.isArray(m.host_ids))
      throw new FeedParamError("host_ids must be an array");
    if (
      m.tripwire_types !== undefined &&
      m.tripwire_types !== null &&
      !Array.isArray(m.tripwire_types)
    ) {
      throw new FeedParamError("tripwire_types must be an array");
    }
    const filter = parseFilter(m.min_severity, m.host_ids, m.tripwire_types);
    return { frame: JSON.stringify({ type: "filters", filters: describeFilter(filter) }), filter };
  } catch (err) {
    if (err instanceof FeedParamError) return error(err.message);
    throw err;
  }
}
