/**
 * One agent's StreamAlerts stream, apart from the protocol that carries it: events go
 * in one at a time as they are read, replies come out in batches as their alerts
 * commit. The Connect handler (alert-service.ts) and the gRPC fast path
 * (stream-alerts-grpc.ts) both drive it.
 */
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { AgentEvent } from "../gen/alert/alert_pb.js";
import type { HostActivity } from "../hosts/host-liveness.js";
import { nowMicros } from "../storage/alert-types.js";
import type { BatchWriter, WriteError, WriteOutcome } from "../storage/batch-writer.js";
import { agentConnection, type ConnectionHost, type ConnectionHosts } from "./agent-connection.js";
import { authenticateAgent, type ClientAuthMode } from "./agent-identity.js";
import type { HostDirectory } from "./host-directory.js";
import type { IngestStats, RejectReason } from "./ingest-stats.js";
import type { HostRateLimiter } from "./rate-limiter.js";
import { cancelTransport, type ReplyStallWatch, type WatchedStream } from "./reply-stall-watch.js";
import { type ValidationLimits, type ValidEvent, validateEvent } from "./validation.js";

/** What every stream of one server shares. */
export interface AlertStreamDeps {
  readonly writer: BatchWriter;
  readonly hosts: HostDirectory;
  readonly limits: ValidationLimits & {
    readonly maxInFlightPerStream: number;
    readonly quietStreamRate: number;
  };
  /** Aborted when the server begins to shut down. */
  readonly shutdown: AbortSignal;
  readonly clientAuth: ClientAuthMode;
  readonly rateLimiter: HostRateLimiter;
  /** Open streams per host_id they have sent for, across the server. */
  readonly hostStreams: Map<string, number>;
  /** Most concurrent streams sending for one host (0: no limit). */
  readonly maxStreamsPerHost: number;
  /** Cancels streams whose replies stall (the agent stopped reading them). */
  readonly stallWatch: ReplyStallWatch;
  /** Where events are counted (for /metrics). */
  readonly stats: IngestStats;
  /** Told of streams and events, for host liveness. */
  readonly liveness: HostActivity;
  /** The host registered on each agent connection, for streams that have sent nothing yet. */
  readonly connectionHosts: ConnectionHosts;
}

/** The reject reason of each way a write can fail. */
const writeRejectReasons: Record<WriteError["reason"], RejectReason> = {
  database: "database_unavailable",
  rejected: "database_rejected",
  closed: "shutting_down",
};

/**
 * Replies ready to send, in the order they became ready: `errors[i]` is undefined for
 * an ACK of `alertIds[i]` (as the agent sent it), else the ERROR's reason.
 */
export interface Replies {
  readonly alertIds: string[];
  readonly errors: (string | undefined)[];
}

/**
 * The state of one stream. The reader calls `accept` for each event it reads; the
 * writer loops on `take` and reports with `written` what reached the transport, which
 * frees in-flight slots. Call `close` once the stream is over.
 *
 * Per event this does no I/O and allocates little: `accept` returns `true` synchronously
 * unless the stream must wait (in-flight bound, a host lookup, a full writer), so a
 * reader that decoded many events from one chunk loops without a promise per event.
 */
export class AlertStream {
  readonly #deps: AlertStreamDeps;
  readonly #signal: AbortSignal;
  /** The CN of a verified client certificate: the only host this stream may send for. */
  readonly #agentHostname: string | undefined;
  #replies: Replies = { alertIds: [], errors: [] };
  #inFlight = 0;
  /** Events admitted in the current one-second window, from when, and in the one before. */
  #rateWindowStart = Number.NEGATIVE_INFINITY;
  #rateCount = 0;
  #ratePrevious = 0;
  #readerDone = false;
  #readerError: unknown;
  #stoppedByShutdown = false;
  /** The hosts this stream counts against in hostStreams, released by close(). */
  readonly #claimed = new Set<string>();
  /**
   * The hosts this stream keeps ONLINE (HostActivity), told when it closes. Until its
   * first event names the host, it is taken to be the host registered on the connection.
   */
  readonly #live = new Set<string>();
  #assumed: ConnectionHost | undefined;
  #closed = false;
  readonly #watched: WatchedStream;
  readonly #unwatch: () => void;
  #wakeWriter: (() => void) | undefined;
  #wakeReader: (() => void) | undefined;
  readonly #onAbort = (): void => {
    // A stream aborted while a reply write is stuck is never resumed: close it now.
    if (this.#signal.aborted && this.#watched.writeStartedAt !== 0) this.close();
    this.#wakeReader?.();
    this.#wakeWriter?.();
  };

  /**
   * Throws Unauthenticated when the caller lacks a certificate it needs. `signal` ends
   * the stream (client gone, deadline, server's RPC deadline).
   */
  constructor(deps: AlertStreamDeps, values: ContextValues, signal: AbortSignal) {
    this.#deps = deps;
    this.#signal = signal;
    this.#agentHostname = authenticateAgent(values, deps.clientAuth);
    signal.addEventListener("abort", this.#onAbort, { once: true });
    deps.shutdown.addEventListener("abort", this.#onAbort, { once: true });
    deps.stats.openStreams++;
    this.#assumed = deps.connectionHosts.hostOf(values.get(agentConnection));
    if (this.#assumed !== undefined) {
      this.#live.add(this.#assumed.hostId);
      deps.liveness.streamOpened(this.#assumed.hostId, this.#assumed.hostname);
    }
    // A stalled write neither completes nor fails, so the stream is closed here, not by
    // whoever is stuck writing it.
    const cancel = values.get(cancelTransport);
    this.#watched = {
      writeStartedAt: 0,
      cancel: () => {
        this.close();
        cancel();
      },
    };
    this.#unwatch = deps.stallWatch.watch(this.#watched);
  }

  /**
   * Takes one event just read. Returns true to read on, false to stop reading (the
   * server is shutting down or the stream ended), or a promise of either when the
   * stream must wait first. Throws ResourceExhausted when the host has too many streams.
   */
  accept(ev: AgentEvent): boolean | Promise<boolean> {
    const { hosts, limits, shutdown } = this.#deps;
    // Closed (a stalled stream cancelled): events still buffered are not taken, or they
    // would count as in flight after the stream's count was taken off.
    if (this.#closed) return false;
    // An event read after shutdown began is left unanswered: the agent sends it again.
    if (shutdown.aborted) {
      this.#stoppedByShutdown = true;
      return false;
    }
    const stats = this.#deps.stats;
    this.#inFlight++;
    stats.inFlight++;
    stats.received++;
    const now = nowMicros();
    const verdict = validateEvent(ev, now, limits);
    if (!verdict.ok) {
      this.#reject(ev.alertId, verdict.kind, verdict.error);
      return this.#afterEvent();
    }
    const event = verdict.event;
    const hostname = hosts.cached(event.hostId);
    if (hostname === undefined) {
      return hosts.lookup(event.hostId).then((found) => {
        if (found === undefined) {
          this.#reject(
            ev.alertId,
            "unknown_host",
            "host_id is not a registered host; call RegisterAgent first",
          );
          return this.#afterEvent();
        }
        return this.#admit(ev.alertId, event, found, now);
      });
    }
    return this.#admit(ev.alertId, event, hostname, now);
  }

  #admit(
    sentId: string,
    event: ValidEvent,
    hostname: string,
    now: bigint,
  ): boolean | Promise<boolean> {
    const deps = this.#deps;
    // Hostnames are unique and a host_id never changes hostname, so this is the check
    // "host_id is the one registered under the certificate's CN", at no extra lookup.
    if (this.#agentHostname !== undefined && hostname !== this.#agentHostname) {
      this.#reject(sentId, "host_mismatch", "host_id does not belong to this agent");
      return this.#afterEvent();
    }
    // Closed (cancelled) while a host lookup was pending: claim nothing more.
    if (this.#closed) return false;
    if (!this.#claimed.has(event.hostId)) {
      const open = deps.hostStreams.get(event.hostId) ?? 0;
      if (deps.maxStreamsPerHost > 0 && open >= deps.maxStreamsPerHost) {
        // Not answered: the stream ends, and the agent sends the event again elsewhere.
        deps.stats.rejected.too_many_streams++;
        throw new ConnectError(
          `too many concurrent streams for this host (at most ${deps.maxStreamsPerHost}); use one stream per agent`,
          Code.ResourceExhausted,
        );
      }
      deps.hostStreams.set(event.hostId, open + 1);
      this.#claimed.add(event.hostId);
      this.#hostStreaming(event.hostId, hostname);
    } else {
      deps.liveness.seen(event.hostId);
    }
    if (!deps.rateLimiter.take(event.hostId)) {
      this.#reject(
        sentId,
        "rate_limited",
        "rate limited: this host is sending faster than allowed; send it again later",
      );
      return this.#afterEvent();
    }
    const readAtMs = performance.now();
    deps.writer.enqueue(
      {
        alertId: event.alertId,
        hostId: event.hostId,
        hostname,
        timestampUs: event.timestampUs,
        tripwireType: event.tripwireType,
        ruleName: event.ruleName,
        severity: event.severity,
        eventDetailJson: event.eventDetailJson,
        // Validation's "now": the same instant, without a second clock read.
        receivedAtUs: now,
      },
      (error: WriteError | undefined, outcome: WriteOutcome | undefined) => {
        const stats = deps.stats;
        if (error !== undefined) {
          this.#reject(sentId, writeRejectReasons[error.reason], error.message);
          return;
        }
        if (outcome?.status === "inserted") stats.accepted++;
        else stats.duplicates++;
        stats.observeAckLatency((performance.now() - readAtMs) / 1000);
        this.#reply(sentId, undefined);
      },
      this.#quiet(readAtMs),
    );
    if (!deps.writer.hasRoom()) return deps.writer.waitForRoom().then(() => this.#afterEvent());
    return this.#afterEvent();
  }

  /**
   * Counts one more event in this second's window and says whether the stream is quiet:
   * at most `quietStreamRate` events in this window and in the one before.
   */
  #quiet(nowMs: number): boolean {
    const limit = this.#deps.limits.quietStreamRate;
    if (nowMs - this.#rateWindowStart >= 1000) {
      // The window before counts only if it is the one just ended.
      this.#ratePrevious = nowMs - this.#rateWindowStart < 2000 ? this.#rateCount : 0;
      this.#rateWindowStart = nowMs;
      this.#rateCount = 0;
    }
    this.#rateCount++;
    return this.#rateCount <= limit && this.#ratePrevious <= limit;
  }

  /** Whether to read on; waits while the stream has its most events unanswered. */
  #afterEvent(): boolean | Promise<boolean> {
    if (this.#inFlight < this.#deps.limits.maxInFlightPerStream) return true;
    return new Promise<void>((resolve) => {
      this.#wakeReader = resolve;
    }).then(() => {
      if (this.#signal.aborted) return false;
      if (this.#deps.shutdown.aborted) {
        this.#stoppedByShutdown = true;
        return false;
      }
      // Woken with room, or by an abort that is already over: read on either way.
      return this.#afterEvent();
    });
  }

  /** The first event of `hostId` on this stream: the stream keeps that host ONLINE. */
  #hostStreaming(hostId: string, hostname: string): void {
    const { liveness } = this.#deps;
    if (this.#live.has(hostId)) liveness.seen(hostId);
    else {
      this.#live.add(hostId);
      liveness.streamOpened(hostId, hostname);
    }
    const assumed = this.#assumed;
    if (assumed !== undefined && assumed.hostId !== hostId) {
      // The stream is another host's after all.
      this.#live.delete(assumed.hostId);
      liveness.streamClosed(assumed.hostId);
    }
    this.#assumed = undefined;
  }

  #reject(alertId: string, reason: RejectReason, error: string): void {
    this.#deps.stats.rejected[reason]++;
    this.#reply(alertId, error);
  }

  #reply(alertId: string, error: string | undefined): void {
    this.#replies.alertIds.push(alertId);
    this.#replies.errors.push(error);
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
  }

  /** Records how the reader ended: the source is exhausted, or it failed with `error`. */
  readerEnded(error?: unknown): void {
    if (error !== undefined) this.#readerError = error;
    this.#readerDone = true;
    this.#wakeWriter?.();
  }

  /**
   * Waits for replies and takes every one ready, or resolves undefined when the stream
   * is over. Throws the reader's error, or Unavailable once a shutdown has answered
   * everything this stream read.
   */
  async take(): Promise<Replies | undefined> {
    for (;;) {
      const ready = this.#replies;
      if (ready.alertIds.length > 0) {
        this.#replies = { alertIds: [], errors: [] };
        return ready;
      }
      if (this.#signal.aborted) return undefined;
      if (this.#readerDone && this.#inFlight === 0 && !this.#stoppedByShutdown) break;
      if (this.#deps.shutdown.aborted && this.#inFlight === 0) {
        throw new ConnectError("server is shutting down; reconnect", Code.Unavailable);
      }
      if (this.#readerDone && this.#readerError !== undefined) break;
      await new Promise<void>((resolve) => {
        this.#wakeWriter = resolve;
      });
    }
    if (this.#readerError !== undefined) throw this.#readerError;
    return undefined;
  }

  /** A write of replies to the transport starts; `written` says when it completed. */
  writing(): void {
    this.#watched.writeStartedAt = Date.now();
  }

  /** `count` replies reached the transport: their events no longer count as in flight. */
  written(count: number): void {
    this.#watched.writeStartedAt = 0;
    this.#inFlight -= count;
    // Once closed, the stream's whole in-flight count has already been taken off.
    if (!this.#closed) this.#deps.stats.inFlight -= count;
    const wake = this.#wakeReader;
    this.#wakeReader = undefined;
    wake?.();
  }

  /**
   * Reads `events` into the stream until they end, the stream says stop, or reading
   * fails, and records how it ended. Never rejects. The iterator is not returned on
   * stop: on HTTP/2 that would tear down the stream that the replies still go out on.
   */
  async readFrom(events: AsyncIterable<AgentEvent>): Promise<void> {
    try {
      const it = events[Symbol.asyncIterator]();
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        const go = this.accept(next.value);
        if (go !== true && !(await go)) break;
      }
      this.readerEnded();
    } catch (err) {
      this.readerEnded(err);
    }
  }

  /** Releases the stream's claims on its hosts, its counts and its listeners. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    const { stats, liveness } = this.#deps;
    stats.openStreams--;
    // Events this stream read and will never answer (the agent went away, or shutdown).
    stats.inFlight -= this.#inFlight;
    for (const hostId of this.#live) liveness.streamClosed(hostId);
    for (const hostId of this.#claimed) {
      const left = (this.#deps.hostStreams.get(hostId) ?? 1) - 1;
      if (left <= 0) this.#deps.hostStreams.delete(hostId);
      else this.#deps.hostStreams.set(hostId, left);
    }
    this.#claimed.clear();
    this.#signal.removeEventListener("abort", this.#onAbort);
    this.#deps.shutdown.removeEventListener("abort", this.#onAbort);
  }
}
