/**
 * The query of GET /ws (docs/websocket.md): protocol version, resume cursor, history and
 * filters. Bad values are refused before the upgrade with a message naming them.
 */
import { isUuid, severities, tripwireTypes } from "../ingest/validation.js";
import type { FeedFilter } from "./feed-filter.js";

/** The subprotocol that selects version 1. */
export const subprotocolV1 = "tripwire.v1";

/** What a client asked for when it connected. */
export interface FeedParams {
  readonly version: 0 | 1;
  readonly since: number | undefined;
  readonly history: number;
  readonly filter: FeedFilter;
}

/** A parsed query string: repeated parameters come as arrays. */
export type Query = Record<string, string | string[] | undefined>;

/** Every value of a repeatable parameter, commas splitting too; undefined when absent. */
export function values(query: Query, name: string): string[] | undefined {
  const raw = query[name];
  if (raw === undefined) return undefined;
  const list = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => v.split(","));
  return list.map((v) => v.trim()).filter((v) => v !== "");
}

/** The value of a parameter given once (the last, when repeated). */
export function single(query: Query, name: string): string | undefined {
  const raw = query[name];
  if (Array.isArray(raw)) return raw[raw.length - 1];
  return raw;
}

/** A whole number from 0 to `max`, or undefined when absent. Throws FeedParamError. */
export function wholeNumber(
  name: string,
  raw: string | undefined,
  max: number,
): number | undefined {
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n > max) {
    throw new FeedParamError(`${name} must be a whole number from 0 to ${max}`);
  }
  return n;
}

/** A query parameter that is not acceptable; the message names it. */
export class FeedParamError extends Error {
  override readonly name = "FeedParamError";
}

/** Reads a filter from its three parts, as given in the query or in `set_filters`. */
export function parseFilter(
  minSeverity: string | null | undefined,
  hostIds: readonly string[] | null | undefined,
  types: readonly string[] | null | undefined,
): FeedFilter {
  if (minSeverity !== undefined && minSeverity !== null && !severities.has(minSeverity)) {
    throw new FeedParamError(`min_severity must be one of INFO, WARN, CRITICAL`);
  }
  for (const id of hostIds ?? []) {
    if (typeof id !== "string" || !isUuid(id))
      throw new FeedParamError(`host_id ${JSON.stringify(id)} is not a UUID`);
  }
  for (const t of types ?? []) {
    if (typeof t !== "string" || !tripwireTypes.has(t)) {
      throw new FeedParamError(
        `tripwire_type ${JSON.stringify(t)} is not one of FILE, NETWORK, PROCESS`,
      );
    }
  }
  return {
    minSeverity: minSeverity ?? undefined,
    hostIds:
      hostIds === null || hostIds === undefined
        ? undefined
        : new Set(hostIds.map((h) => h.toLowerCase())),
    tripwireTypes: types === null || types === undefined ? undefined : new Set(types),
  };
}

/** Parses the query and offered subprotocols of a /ws request. Throws FeedParamError. */
export function parseFeedParams(
  query: Query,
  offeredProtocols: readonly string[],
  replayLimit: number,
): FeedParams {
  const v = single(query, "v");
  if (v !== undefined && v !== "0" && v !== "1") throw new FeedParamError("v must be 0 or 1");
  const version = v === "1" || offeredProtocols.includes(subprotocolV1) ? 1 : 0;
  const since = wholeNumber("since", single(query, "since"), Number.MAX_SAFE_INTEGER);
  const history = wholeNumber("history", single(query, "history"), replayLimit) ?? 0;
  const filter = parseFilter(
    single(query, "min_severity"),
    values(query, "host_id"),
    values(query, "tripwire_type"),
  );
  return { version, since, history, filter };
}
