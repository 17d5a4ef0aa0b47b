/**
 * What the AlertService counts per event, as plain numbers: the hot path only increments
 * fields (no allocation, no label lookup) and /metrics reads them when it is scraped.
 */
import type { RefusalKind } from "./validation.js";

/**
 * Why an event was answered with ERROR (or, for `too_many_streams`, ended its stream):
 * a fixed set, so a metrics label never carries free text.
 */
export type RejectReason =
  | RefusalKind
  | "unknown_host"
  | "host_mismatch"
  | "rate_limited"
  | "too_many_streams"
  | "database_unavailable"
  | "database_rejected"
  | "shutting_down";

/** Every RejectReason, in the order metrics list them. */
export const rejectReasons: readonly RejectReason[] = [
  "invalid",
  "too_large",
  "too_old",
  "too_new",
  "unknown_host",
  "host_mismatch",
  "rate_limited",
  "too_many_streams",
  "database_unavailable",
  "database_rejected",
  "shutting_down",
];

/**
 * Counters and gauges of the AlertService. Every event taken from a stream counts in
 * `received` and, once answered, in exactly one of `accepted`, `duplicates` or `rejected`.
 */
export interface IngestStats {
  /** Events read from agent streams (not those read after shutdown began: never answered). */
  received: number;
  /** Events stored for the first time and ACKed. */
  accepted: number;
  /** Events ACKed whose alert_id was already stored (agent replays). */
  duplicates: number;
  /** Events refused, by reason. */
  readonly rejected: Record<RejectReason, number>;
  /** Events read and not yet answered, over every stream. */
  inFlight: number;
  /** StreamAlerts streams open now. */
  openStreams: number;
  /** Records the time from reading an event to yielding its ACK. Called once per ACK. */
  observeAckLatency(seconds: number): void;
}

/** Fresh counters; `observeAckLatency` defaults to discarding. */
export function createIngestStats(
  observeAckLatency: (seconds: number) => void = () => {},
): IngestStats {
  const rejected = {} as Record<RejectReason, number>;
  for (const reason of rejectReasons) rejected[reason] = 0;
  return {
    received: 0,
    accepted: 0,
    duplicates: 0,
    rejected,
    inFlight: 0,
    openStreams: 0,
    observeAckLatency,
  };
}
