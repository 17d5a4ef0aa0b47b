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
} from "../gen/alert/alert_pb.js";
import type { HostActivity } from "../hosts/host-liveness.js";
import type { Logger } from "../logger.js";
import type { AlertStore } from "../storage/alert-store.js";
import { nowMicros } from "../storage/alert-types.js";
import type { BatchWriter } from "../storage/batch-writer.js";
import { agentConnection, ConnectionHosts } from "./agent-connection.js";
import { ackCommand, errorCommand } from "./agent-event-codec.js";
import { authenticateAgent, type ClientAuthMode } from "./agent-identity.js";
import { AlertStream, type AlertStreamDeps } from "./alert-stream.js";
import type { HostDirectory } from "./host-directory.js";
import { createIngestStats, type IngestStats } from "./ingest-stats.js";
import { HostRateLimiter } from "./rate-limiter.js";
import { ReplyStallWatch } from "./reply-stall-watch.js";
import type { ValidationLimits } from "./validation.js";

// Defined with the codec and with the rest of the caller's identity; re-exported for
// existing importers.
export { ackCommand, errorCommand } from "./agent-event-codec.js";
export { verifiedClientCn } from "./agent-identity.js";

/** Dependencies and settings of the AlertService. */
export interface AlertServiceDeps {
  readonly store: AlertStore;
  readonly writer: BatchWriter;
  readonly hosts: HostDirectory;
  readonly log: Logger;
  readonly limits: ValidationLimits & {
    readonly maxInFlightPerStream: number;
    readonly quietStreamRate: number;
  };
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

const noActivity: HostActivity = {
  registered() {},
  streamOpened() {},
  seen() {},
  streamClosed() {},
};

const maxHostFieldLength = 253;
const maxMetaFieldLength = 256;

/** The state every stream of one AlertService shares, whichever path serves it. */
export function alertStreamDeps(deps: AlertServiceDeps): AlertStreamDeps {
  return {
    writer: deps.writer,
    hosts: deps.hosts,
    limits: deps.limits,
    shutdown: deps.shutdown,
    clientAuth: deps.clientAuth ?? "off",
    rateLimiter: deps.rateLimiter ?? new HostRateLimiter({ ratePerSecond: 0, burst: 0 }),
    // Open streams per host_id they have sent for.
    hostStreams: new Map<string, number>(),
    maxStreamsPerHost: deps.maxStreamsPerHost ?? 0,
    stallWatch: new ReplyStallWatch(deps.replyStallTimeoutMs ?? 60_000, () =>
      deps.log.warn({}, "cancelled an agent stream that stopped reading its replies"),
    ),
    stats: deps.stats ?? createIngestStats(),
    liveness: deps.liveness ?? noActivity,
    connectionHosts: new ConnectionHosts(),
  };
}

/**
 * Implements the AlertService over the shared batch writer. Pass `streams` to share the
 * streams' state (per-host stream counts) with the gRPC fast path.
 */
export function createAlertService(
  deps: AlertServiceDeps,
  streams: AlertStreamDeps = alertStreamDeps(deps),
): ServiceImpl<typeof AlertService> {
  const { store, hosts, log } = deps;
  const clientAuth = streams.clientAuth;

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
      streams.liveness.registered(hostId, hostname);
      streams.connectionHosts.registered(ctx.values.get(agentConnection), { hostId, hostname });
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
      return streamReplies(requests, ctx, streams);
    },
  };
}

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
 * One agent stream over Connect (any of its protocols). A reader task pulls events
 * continuously (agents pipeline) into the AlertStream; replies are yielded as their
 * batches commit, in whatever order that happens. The reader stops pulling while the
 * stream has `maxInFlightPerStream` events without a reply written, so HTTP/2 flow
 * control slows the agent instead of memory growing.
 */
async function* streamReplies(
  requests: AsyncIterable<AgentEvent>,
  ctx: HandlerContext,
  deps: AlertStreamDeps,
): AsyncGenerator<ServerCommand> {
  // Before anything is read: an unauthenticated stream ends with Unauthenticated.
  const stream = new AlertStream(deps, ctx.values, ctx.signal);
  try {
    void stream.readFrom(requests);
    for (;;) {
      const replies = await stream.take();
      if (replies === undefined) return;
      const { alertIds, errors } = replies;
      for (let i = 0; i < alertIds.length; i++) {
        const error = errors[i];
        const alertId = alertIds[i] as string;
        // Suspended at `yield` until connect-es has written it: the stall watch's window.
        stream.writing();
        yield error === undefined ? ackCommand(alertId) : errorCommand(alertId, error);
        stream.written(1);
      }
    }
  } finally {
    stream.close();
  }
}
