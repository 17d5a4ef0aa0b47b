/**
 * What a feed subscriber asked to see. Applied on the server, to replayed and live
 * alerts alike.
 */
import type { LiveAlert } from "../broadcast/live-batch.js";

/** Severities from least to most severe. */
export const severityOrder = ["INFO", "WARN", "CRITICAL"] as const;

/** A subscriber's filter; an undefined field means "any". */
export interface FeedFilter {
  readonly minSeverity?: string | undefined;
  readonly hostIds?: ReadonlySet<string> | undefined;
  readonly tripwireTypes?: ReadonlySet<string> | undefined;
}

/** Whether the filter lets everything through (so shared batch frames can be reused). */
export function isOpen(filter: FeedFilter): boolean {
  return (
    (filter.minSeverity === undefined || filter.minSeverity === "INFO") &&
    filter.hostIds === undefined &&
    filter.tripwireTypes === undefined
  );
}

/** The severities at or above the filter's minimum, or undefined for all. */
export function allowedSeverities(filter: FeedFilter): string[] | undefined {
  if (filter.minSeverity === undefined) return undefined;
  const from = severityOrder.indexOf(filter.minSeverity as (typeof severityOrder)[number]);
  return from <= 0 ? undefined : severityOrder.slice(from);
}

/** Whether one alert passes. */
export function matches(filter: FeedFilter, alert: LiveAlert): boolean {
  if (filter.minSeverity !== undefined) {
    const min = severityOrder.indexOf(filter.minSeverity as (typeof severityOrder)[number]);
    if (severityOrder.indexOf(alert.severity as (typeof severityOrder)[number]) < min) return false;
  }
  if (filter.hostIds !== undefined && !filter.hostIds.has(alert.hostId)) return false;
  if (filter.tripwireTypes !== undefined && !filter.tripwireTypes.has(alert.tripwireType))
    return false;
  return true;
}

/** The filter as sent to clients in `hello` and `filters` messages. */
export function describeFilter(filter: FeedFilter): object {
  return {
    min_severity: filter.minSeverity ?? null,
    host_ids: filter.hostIds === undefined ? null : [...filter.hostIds],
    tripwire_types: filter.tripwireTypes === undefined ? null : [...filter.tripwireTypes],
  };
}
