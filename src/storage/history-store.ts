/**
 * Pages of stored alerts for GET /api/alerts: keyset pagination by seq (never OFFSET),
 * with the feed's filters and a time range on the alert's timestamp.
 */
import { type SQL, sql } from "drizzle-orm";
import type { LiveAlert } from "../broadcast/live-batch.js";
import { allowedSeverities, type FeedFilter } from "../live/feed-filter.js";
import type { Database } from "./database.js";
import { type AlertRow, alertColumns, toAlert } from "./feed-store.js";

/** Which alerts one page holds. `since` and `before` exclude each other. */
export interface HistoryQuery {
  /** Only alerts with seq up to this: the live feed's watermark, where a feed may resume. */
  readonly uptoSeq: number;
  /** Alerts with seq above this, oldest first. */
  readonly since?: number | undefined;
  /** Alerts with seq below this, newest first. Without `since` or `before`: the newest. */
  readonly before?: number | undefined;
  /** Alerts whose timestamp is at or after this (Unix epoch microseconds). */
  readonly fromUs?: bigint | undefined;
  /** Alerts whose timestamp is before this (Unix epoch microseconds). */
  readonly toUs?: bigint | undefined;
  readonly filter: FeedFilter;
  /** At most this many alerts. */
  readonly limit: number;
}

/** One page of alerts. */
export interface HistoryPage {
  /** In the page's order: seq ascending with `since`, descending otherwise. */
  readonly alerts: readonly LiveAlert[];
  /** Whether more alerts match beyond the last one of the page. */
  readonly more: boolean;
  /** The query's `uptoSeq`: a live feed resumed from it misses nothing the page left out. */
  readonly latestSeq: number;
}

/** Reads pages of stored alerts. */
export interface HistoryStore {
  page(query: HistoryQuery): Promise<HistoryPage>;
}

/** The HistoryStore over a migrated Database. */
export function createHistoryStore(database: Database): HistoryStore {
  return {
    async page(query) {
      const ascending = query.since !== undefined;
      // One row more than asked tells whether there is a next page.
      const rows = await database.rows<AlertRow>(sql`
        select ${alertColumns} from alerts a join hosts h on h.host_id = a.host_id
        where a.seq <= ${query.uptoSeq} ${conditions(query)}
        order by a.seq ${ascending ? sql`asc` : sql`desc`} limit ${query.limit + 1}`);
      const more = rows.length > query.limit;
      if (more) rows.pop();
      return { alerts: rows.map(toAlert), more, latestSeq: query.uptoSeq };
    },
  };
}

function conditions(q: HistoryQuery): SQL {
  const parts: SQL[] = [];
  if (q.since !== undefined) parts.push(sql`and a.seq > ${q.since}`);
  if (q.before !== undefined) parts.push(sql`and a.seq < ${q.before}`);
  if (q.fromUs !== undefined) parts.push(sql`and a.timestamp >= ${micros(q.fromUs)}`);
  if (q.toUs !== undefined) parts.push(sql`and a.timestamp < ${micros(q.toUs)}`);
  const hosts = q.filter.hostIds === undefined ? undefined : [...q.filter.hostIds];
  if (hosts?.length === 1) {
    // A plain equality lets the planner walk alerts_host_seq_idx in seq order; `= any`
    // of a one-element array does not (PostgreSQL 15).
    parts.push(sql`and a.host_id = ${hosts[0]}::uuid`);
  } else if (hosts !== undefined) {
    parts.push(sql`and a.host_id = any(${sql.param(hosts)}::uuid[])`);
  }
  const severities = allowedSeverities(q.filter);
  if (severities !== undefined) {
    parts.push(sql`and a.severity = any(${sql.param(severities)}::text[])`);
  }
  if (q.filter.tripwireTypes !== undefined) {
    parts.push(sql`and a.tripwire_type = any(${sql.param([...q.filter.tripwireTypes])}::text[])`);
  }
  return sql.join(parts, sql` `);
}

/** A timestamptz from epoch microseconds, computed as insert_alert_batch stores them. */
function micros(us: bigint): SQL {
  return sql`(timestamptz 'epoch' + ${us.toString()}::int8 * interval '1 microsecond')`;
}
