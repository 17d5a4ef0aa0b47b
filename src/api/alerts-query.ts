/**
 * The query of GET /api/alerts (README, "History API"). Filters are read by the same
 * code as /ws, so both accept the same values; bad values throw FeedParamError naming
 * the parameter and what it accepts.
 */
import {
  FeedParamError,
  parseFilter,
  type Query,
  single,
  values,
  wholeNumber,
} from "../live/feed-params.js";
import type { HistoryQuery } from "../storage/history-store.js";

/** The page sizes the API allows. */
export interface PageLimits {
  /** The page size when the request gives no `limit`. */
  readonly defaultLimit: number;
  /** The largest `limit` accepted; more is refused, not clamped. */
  readonly maxLimit: number;
}

const known = new Set([
  "since",
  "before",
  "from",
  "to",
  "host_id",
  "min_severity",
  "tripwire_type",
  "limit",
  "token",
]);

/** Parses the query of GET /api/alerts. Throws FeedParamError. */
export function parseAlertsQuery(query: Query, limits: PageLimits): Omit<HistoryQuery, "uptoSeq"> {
  for (const name of Object.keys(query)) {
    // A misspelt filter would otherwise widen the answer without a word.
    if (!known.has(name)) {
      throw new FeedParamError(
        `unknown parameter ${JSON.stringify(name)}: expected ${[...known].join(", ")}`,
      );
    }
  }
  const since = wholeNumber("since", single(query, "since"), Number.MAX_SAFE_INTEGER);
  const before = wholeNumber("before", single(query, "before"), Number.MAX_SAFE_INTEGER);
  if (since !== undefined && before !== undefined) {
    throw new FeedParamError(
      "since and before cannot be combined: since pages forward (oldest first), before pages back (newest first)",
    );
  }
  const rawLimit = single(query, "limit");
  const limit = wholeNumber("limit", rawLimit, Number.MAX_SAFE_INTEGER);
  if (limit !== undefined && (limit < 1 || limit > limits.maxLimit)) {
    throw new FeedParamError(
      `limit ${rawLimit} is out of range: expected a whole number from 1 to ${limits.maxLimit}`,
    );
  }
  const fromUs = rfc3339Micros("from", single(query, "from"));
  const toUs = rfc3339Micros("to", single(query, "to"));
  if (fromUs !== undefined && toUs !== undefined && fromUs >= toUs) {
    throw new FeedParamError("from must be earlier than to");
  }
  const filter = parseFilter(
    single(query, "min_severity"),
    values(query, "host_id"),
    values(query, "tripwire_type"),
  );
  return { since, before, fromUs, toUs, filter, limit: limit ?? limits.defaultLimit };
}

const rfc3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?([Zz]|[+-]\d{2}:\d{2})$/;

/** An RFC 3339 time as Unix epoch microseconds, or undefined when absent. */
function rfc3339Micros(name: string, raw: string | undefined): bigint | undefined {
  if (raw === undefined || raw === "") return undefined;
  const m = rfc3339.exec(raw);
  const expected = `expected an RFC 3339 time such as 2026-02-25T19:25:01Z or 2026-02-25T21:25:01.123456+02:00`;
  if (m === null) {
    // `+` in a query string reads as a space.
    const hint = / \d{2}:\d{2}$/.test(raw) ? " (write the + of an offset as %2B)" : "";
    throw new FeedParamError(`${name} ${JSON.stringify(raw)} is not valid: ${expected}${hint}`);
  }
  const [, y, mo, d, h, mi, s, fraction, offset] = m as unknown as string[];
  const day = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (
    Number(mo) < 1 ||
    Number(mo) > 12 ||
    day.getUTCDate() !== Number(d) ||
    Number(h) > 23 ||
    Number(mi) > 59 ||
    Number(s) > 59
  ) {
    throw new FeedParamError(`${name} ${JSON.stringify(raw)} is not a real date and time`);
  }
  const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}${(offset as string).toUpperCase()}`);
  return BigInt(ms) * 1000n + BigInt((fraction ?? "").padEnd(6, "0"));
}
