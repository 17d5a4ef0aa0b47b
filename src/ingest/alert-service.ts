/**
 * The AlertService that agents call: RegisterAgent and the pipelined StreamAlerts.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type AgentEvent,
  type AlertService,
  RegisterResponseSchema,
  type ServerCommand,
  ServerCommandSchema,
} from "../gen/alert/alert_pb.js";
import type { HostActivity } from "../hosts/host-liveness.js";
import type { Logger } from "../logger.js";
import type { AlertStore } from "../storage/alert-store.js";
import { nowMicros } from "../storage/alert-types.js";
import type { BatchWriter, WriteError, WriteOutcome } from "../storage/batch-writer.js";
import { agentConnection, ConnectionHosts } from "./agent-connection.js";
import { authenticateAgent, type ClientAuthMode } from "./agent-identity.js";
import type { HostDirectory } from "./host-directory.js";
import { createIngestStats, type IngestStats, type RejectReason } from "./ingest-stats.js";
import { HostRateLimiter } from "./rate-limiter.js";
import { cancelTransport, ReplyStallWatch, type WatchedStream } from "./reply-stall-watch.js";
import { type ValidationLimits, validateEvent } from "./validation.js";

// Defined with the rest of the caller's identity; re-exported for existing importers.
export { verifiedClientCn } from "./agent-identity.js";

/** Dependencies and settings of the AlertService. */
export interface AlertServiceDeps {
  readonly store: AlertStore;
  readonly writer: BatchWriter;
  readonly hosts: HostDirectory;
  readonly log: Logger;
  readonly limits: ValidationLimits & { readonly maxInFlightPerStream: number };
  /**
   * Aborted when the server begins to shut down: streams stop reading, answer what
   * they have read once it is committed, then end with UNAVAILABLE so agents reconnect.
   */
  readonly shutdown: AbortSignal;
  /** Per-host event rate limit; none when omitted. */
  readonly rateLimiter?: HostRateLimiter;
  /** Most concurrent StreamAlerts streams sending for one host (0: no limit). */
  readonly maxStreamsPerHost?: number;
  /** Cancel a stream whose replies could not be written for this long; default 60 s. */
  readonly replyStallTimeoutMs?: number;
  /** Whether calls need a verified client certificate; default `off` (no client CA). */
  readonly clientAuth?: ClientAuthMode;
  /** Where events are counted (for /metrics); uncounted when omitted. */
  readonly stats?: IngestStats;
  /** Told of registrations, streams and events, for host liveness; none when omitted. */
  readonly liveness?: HostActivity;
}

/** The reject reason of each way a write can fail. */
const writeRejectReasons: Record<WriteError["reason"], RejectReason> = {
  database: "database_unavailable",
  rejected: "database_rejected",
  closed: "shutting_down",
};

const maxHostFieldLength = 253;
const maxMetaFieldLength = 256;
const encoder = new TextEncoder();

/** Builds the ACK for `alertId` (as the agent sent it, so it can match its queue). */
export function ackCommand(alertId: string): ServerCommand {
  return create(ServerCommandSchema, {
    type: "ACK",
    payload: encoder.encode(`{"alert_id":${JSON.stringify(alertId)}}`),
  });
}

/** Builds the ERROR for `alertId` with a reason the operator can act on. */
export function errorCommand(alertId: string, error: string): ServerCommand {
  return create(ServerCommandSchema, {
    type: "ERROR",
    payload: encoder.encode(JSON.stringify({ alert_id: alertId, error })),
  });
}

/** Implements the AlertService over the shared batch writer. */
export function createAlertService(deps: AlertServiceDeps): ServiceImpl<typeof AlertService> {
  const { store, writer, hosts, log, limits, shutdown } = deps;
  const clientAuth = deps.clientAuth ?? "off";
  const rateLimiter = deps.rateLimiter ?? new HostRateLimiter({ ratePerSecond: 0, burst: 0 });
  const stats = deps.stats ?? createIngestStats();
  const liveness = deps.liveness ?? noActivity;
  const connectionHosts = new ConnectionHosts();
  // Open streams per host_id they have sent for.
  const hostStreams = new Map<string, number>();
  const stallWatch = new ReplyStallWatch(deps.replyStallTimeoutMs ?? 60_000, () =>
    log.warn({}, "cancelled an agent stream that stopped reading its replies"),
  );

  return {
    async registerAgent(req, ctx) {
      // The verified certificate names the host, whatever the request says.
      const hostname = authenticateAgent(ctx.values, clientAuth) ?? req.hostname;
      checkField("hostname", hostname, maxHostFieldLength, true);
      checkField("platform", req.platform, maxMetaFieldLength, false);
      checkField("agent_version", req.agentVersion, maxMetaFieldLength, false);
      const { hostId } = await store.upsertHost({
        hostname,
        platform: req.platform,
        agentVersion: req.agentVersion,
      });
      hosts.remember(hostId, hostname);
      liveness.registered(hostId, hostname);
      connectionHosts.registered(ctx.values.get(agentConnection), { hostId, hostname });
      log.info(
        {
          hostname,
          hostId,
          agentVersion: req.agentVersion,
          // When the certificate's CN overrides it: a misconfigured (or lying) agent.
          ...(hostname === req.hostname ? {} : { reportedHostname: req.hostname }),
        },
        "agent registered",
      );
      return create(RegisterResponseSchema, { hostId, serverTimeUs: nowMicros() });
    },

    streamAlerts(requests, ctx) {
      return streamReplies(requests, ctx, {
        writer,
        hosts,
        limits,
        shutdown,
        clientAuth,
        rateLimiter,
        hostStreams,
        maxStreamsPerHost: deps.maxStreamsPerHost ?? 0,
        stallWatch,
        stats,
        liveness,
        connectionHosts,
      });
    },
  };
}

const noActivity: HostActivity = {
  registered() {},
  streamOpened() {},
  seen() {},
  streamClosed() {},
};

function checkField(name: string, value: string, max: number, required: boolean): void {
  if (required && value.trim() === "") {
    throw new ConnectError(`${name} is required`, Code.InvalidArgument);
  }
  if (value.length > max) {
    throw new ConnectError(`${name} is longer than ${max} characters`, Code.InvalidArgument);
  }
  if (value.includes("\u0000")) {
    throw new ConnectError(`${name} must not contain NUL characters`, Code.InvalidArgument);
  }
}

/**
 * One agent stream. A reader task pulls events continuously (agents pipeline) and
 * hands valid ones to the batch writer; replies are yielded as their batches commit,
 * in whatever order that happens. The reader stops pulling while the stream has
 * `maxInFlightPerStream` events without a reply written, so HTTP/2 flow control
 * slows the agent instead of memory growing.
 *
 * A caller with a verified client certificate may only send events of its own host: the
 * one host_id registered under the certificate's CN.
 */
async function* streamReplies(
  requests: AsyncIterable<AgentEvent>,
  ctx: HandlerContext,
  deps: Pick<AlertServiceDeps, "writer" | "hosts" | "limits" | "shutdown"> & {
    readonly clientAuth: ClientAuthMode;
    readonly rateLimiter: HostRateLimiter;
    readonly hostStreams: Map<string, number>;
    readonly maxStreamsPerHost: number;
    readonly stallWatch: ReplyStallWatch;
    readonly stats: IngestStats;
    readonly liveness: HostActivity;
    readonly connectionHosts: ConnectionHosts;
  },
): AsyncGenerator<ServerCommand> {
  const { writer, hosts, limits, shutdown, stats } = deps;
  // Before anything is read: an unauthenticated stream ends with Unauthenticated.
  const agentHostname = authenticateAgent(ctx.values, deps.clientAuth);
  const replies: ServerCommand[] = [];
  // performance.now() when each reply's event was read (NaN for an ERROR), index for
  // index with `replies`: a parallel array, so timing an ACK allocates nothing.
  const readAt: number[] = [];
  let inFlight = 0;
  let readerDone = false;
  let readerError: unknown;
  let stoppedByShutdown = false;
  // The hosts this stream counts against in hostStreams, released when it ends.
  const claimed = new Set<string>();
  // The hosts this stream keeps ONLINE (HostActivity), told when it ends. Until its first
  // event names the host, it is taken to be the host registered on the same connection.
  const live = new Set<string>();
  let assumed = deps.connectionHosts.hostOf(ctx.values.get(agentConnection));
  if (assumed !== undefined) {
    live.add(assumed.hostId);
    deps.liveness.streamOpened(assumed.hostId, assumed.hostname);
  }
  let wakeWriter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;

  // The generator is suspended at `yield` until connect-es has written the reply: a
  // stamp that stays set means the agent stopped reading (or vanished without a reset
  // that fails the write). Cancelling or aborting such a call does not resume the
  // generator, so its resources are released there as well as in `finally`.
  let released = false;
  const cancelTransportOfCall = ctx.values.get(cancelTransport);
  const watched: WatchedStream = {
    writeStartedAt: 0,
    cancel: () => {
      release();
      cancelTransportOfCall();
    },
  };
  const unwatch = deps.stallWatch.watch(watched);
  const release = (): void => {
    if (released) return;
    released = true;
    unwatch();
    stats.openStreams--;
    // Events this stream read and will never answer (the agent went away, or shutdown).
    stats.inFlight -= inFlight;
    for (const hostId of claimed) {
      const left = (deps.hostStreams.get(hostId) ?? 1) - 1;
      if (left <= 0) deps.hostStreams.delete(hostId);
      else deps.hostStreams.set(hostId, left);
    }
    for (const hostId of live) deps.liveness.streamClosed(hostId);
    ctx.signal.removeEventListener("abort", onAbort);
    shutdown.removeEventListener("abort", onAbort);
  };

  const reply = (cmd: ServerCommand, readAtMs = Number.NaN): void => {
    replies.push(cmd);
    readAt.push(readAtMs);
    const wake = wakeWriter;
    wakeWriter = undefined;
    wake?.();
  };
  const reject = (alertId: string, reason: RejectReason, error: string): void => {
    stats.rejected[reason]++;
    reply(errorCommand(alertId, error));
  };

  const read = async (): Promise<void> => {
    const it = requests[Symbol.asyncIterator]();
    for (;;) {
      if (inFlight >= limits.maxInFlightPerStream) {
        await new Promise<void>((resolve) => {
          wakeReader = resolve;
        });
        if (ctx.signal.aborted) return;
        if (shutdown.aborted) {
          stoppedByShutdown = true;
          return;
        }
      }
      const next = await it.next();
      // An event read after shutdown began is left unanswered: the agent sends it again.
      if (next.done) return;
      if (shutdown.aborted) {
        stoppedByShutdown = true;
        return;
      }
      const ev = next.value;
      const readAtMs = performance.now();
      inFlight++;
      stats.inFlight++;
      stats.received++;
      const verdict = validateEvent(ev, nowMicros(), limits);
      if (!verdict.ok) {
        reject(ev.alertId, verdict.kind, verdict.error);
        continue;
      }
      const event = verdict.event;
      const hostname = hosts.cached(event.hostId) ?? (await hosts.lookup(event.hostId));
      if (hostname === undefined) {
        reject(
          ev.alertId,
          "unknown_host",
          "host_id is not a registered host; call RegisterAgent first",
        );
        continue;
      }
      // Hostnames are unique and a host_id never changes hostname, so this is the check
      // "host_id is the one registered under the certificate's CN", at no extra lookup.
      if (agentHostname !== undefined && hostname !== agentHostname) {
        reject(ev.alertId, "host_mismatch", "host_id does not belong to this agent");
        continue;
      }
      if (released) return;
      if (!claimed.has(event.hostId)) {
        const open = deps.hostStreams.get(event.hostId) ?? 0;
        if (deps.maxStreamsPerHost > 0 && open >= deps.maxStreamsPerHost) {
          // Not answered: the stream ends, and the agent sends the event again elsewhere.
          stats.rejected.too_many_streams++;
          throw new ConnectError(
            `too many concurrent streams for this host (at most ${deps.maxStreamsPerHost}); use one stream per agent`,
            Code.ResourceExhausted,
          );
        }
        deps.hostStreams.set(event.hostId, open + 1);
        claimed.add(event.hostId);
        if (live.has(event.hostId)) deps.liveness.seen(event.hostId);
        else {
          live.add(event.hostId);
          deps.liveness.streamOpened(event.hostId, hostname);
        }
        if (assumed !== undefined && assumed.hostId !== event.hostId) {
          // The stream is another host's after all.
          live.delete(assumed.hostId);
          deps.liveness.streamClosed(assumed.hostId);
        }
        assumed = undefined;
      } else {
        deps.liveness.seen(event.hostId);
      }
      if (!deps.rateLimiter.take(event.hostId)) {
        reject(
          ev.alertId,
          "rate_limited",
          "rate limited: this host is sending faster than allowed; send it again later",
        );
        continue;
      }
      const sentId = ev.alertId;
      writer.enqueue(
        { ...event, hostname, receivedAtUs: nowMicros() },
        (error: WriteError | undefined, outcome: WriteOutcome | undefined) => {
          if (error !== undefined) {
            reject(sentId, writeRejectReasons[error.reason], error.message);
            return;
          }
          if (outcome?.status === "inserted") stats.accepted++;
          else stats.duplicates++;
          reply(ackCommand(sentId), readAtMs);
        },
      );
      if (!writer.hasRoom()) await writer.waitForRoom();
    }
  };

  const onAbort = (): void => {
    if (ctx.signal.aborted && watched.writeStartedAt !== 0) release();
    wakeReader?.();
    wakeWriter?.();
  };
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  shutdown.addEventListener("abort", onAbort, { once: true });
  stats.openStreams++;
  void read().then(
    () => {
      readerDone = true;
      wakeWriter?.();
    },
    (err: unknown) => {
      readerError = err;
      readerDone = true;
      wakeWriter?.();
    },
  );

  try {
    for (;;) {
      const cmd = replies.shift();
      if (cmd !== undefined) {
        const readAtMs = readAt.shift() as number;
        if (!Number.isNaN(readAtMs)) stats.observeAckLatency((performance.now() - readAtMs) / 1000);
        watched.writeStartedAt = Date.now();
        yield cmd;
        watched.writeStartedAt = 0;
        inFlight--;
        // After a release the stream's whole in-flight count was already taken off.
        if (!released) stats.inFlight--;
        const wake = wakeReader;
        wakeReader = undefined;
        wake?.();
        continue;
      }
      if (ctx.signal.aborted) return;
      if (readerDone && inFlight === 0 && !stoppedByShutdown) break;
      if (shutdown.aborted && inFlight === 0) {
        throw new ConnectError("server is shutting down; reconnect", Code.Unavailable);
      }
      if (readerDone && readerError !== undefined) break;
      await new Promise<void>((resolve) => {
        wakeWriter = resolve;
      });
    }
    if (readerError !== undefined) throw readerError;
  } finally {
    release();
  }
}
