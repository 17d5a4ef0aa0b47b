/**
 * Reads of the alert feed by seq: what a resuming subscriber missed, the latest history,
 * and what the live sequencer must read back.
 */
import { type SQL, sql } from "drizzle-orm";
import type { LiveAlert } from "../broadcast/live-batch.js";
import { allowedSeverities, type FeedFilter } from "../live/feed-filter.js";
import { StoredAlert } from "./alert-types.js";
import type { Database } from "./database.js";

/** An alert row as `alertColumns` selects it (bigints as text). */
export interface AlertRow {
  seq: string;
  alert_id: string;
  host_id: string;
  hostname: string;
  ts_us: string;
  tripwire_type: string;
  rule_name: string;
  severity: string;
  event_detail: string | null;
  received_us: string;
}

/** Reads of committed alerts in seq order. */
export interface FeedStore {
  /** The newest committed seq (0 when there is none). */
  latestSeq(): Promise<number>;
  /** Alerts with afterSeq < seq ≤ uptoSeq matching `filter`, in seq order, at most `limit`. */
  alertsBetween(
    afterSeq: number,
    uptoSeq: number,
    limit: number,
    filter?: FeedFilter,
  ): Promise<LiveAlert[]>;
  /** The newest `limit` alerts with seq ≤ uptoSeq matching `filter`, in seq order. */
  latestAlerts(uptoSeq: number, limit: number, filter?: FeedFilter): Promise<LiveAlert[]>;
}

/** The columns of an AlertRow, from `alerts a join hosts h`. */
export const alertColumns = sql`
  a.seq::text as seq, a.alert_id::text as alert_id, a.host_id::text as host_id, h.hostname,
  (extract(epoch from a.timestamp) * 1000000)::bigint::text as ts_us,
  a.tripwire_type, a.rule_name, a.severity, a.event_detail::text as event_detail,
  (extract(epoch from a.received_at) * 1000000)::bigint::text as received_us`;

function where(filter: FeedFilter | undefined): SQL {
  const parts: SQL[] = [];
  const severities = filter === undefined ? undefined : allowedSeverities(filter);
  if (severities !== undefined)
    parts.push(sql`and a.severity = any(${sql.param(severities)}::text[])`);
  if (filter?.hostIds !== undefined) {
    parts.push(sql`and a.host_id = any(${sql.param([...filter.hostIds])}::uuid[])`);
  }
  if (filter?.tripwireTypes !== undefined) {
    parts.push(sql`and a.tripwire_type = any(${sql.param([...filter.tripwireTypes])}::text[])`);
  }
  return sql.join(parts, sql` `);
}

/** The alert of a row, with its JSON built as the live feed builds it. */
export function toAlert(row: AlertRow): LiveAlert {
  return new StoredAlert(
    {
      alertId: row.alert_id,
      hostId: row.host_id,
      hostname: row.hostname,
      timestampUs: BigInt(row.ts_us),
      tripwireType: row.tripwire_type,
      ruleName: row.rule_name,
      severity: row.severity,
      eventDetailJson: row.event_detail ?? "{}",
      receivedAtUs: BigInt(row.received_us),
    },
    Number(row.seq),
  );
}

/** The FeedStore over a migrated Database. */
export function createFeedStore(database: Database): FeedStore {
  return {
    async latestSeq() {
      const rows = await database.rows<{ last: string }>(
        sql`select last::text as last from alert_seq where id = 1`,
      );
      return Number(rows[0]?.last ?? 0);
    },

    async alertsBetween(afterSeq, uptoSeq, limit, filter) {
      const rows = await database.rows<AlertRow>(sql`
        select ${alertColumns} from alerts a join hosts h on h.host_id = a.host_id
        where a.seq > ${afterSeq} and a.seq <= ${uptoSeq} ${where(filter)}
        order by a.seq limit ${limit}`);
      return rows.map(toAlert);
    },

    async latestAlerts(uptoSeq, limit, filter) {
      const rows = await database.rows<AlertRow>(sql`
        select ${alertColumns} from alerts a join hosts h on h.host_id = a.host_id
        where a.seq <= ${uptoSeq} ${where(filter)}
        order by a.seq desc limit ${limit}`);
      return rows.reverse().map(toAlert);
    },
  };
}
