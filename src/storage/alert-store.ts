/**
 * The queries of the ingest path: hosts by hostname, and alerts in batches.
 */
import { sql } from "drizzle-orm";
import type { NewAlert } from "./alert-types.js";
import type { Database } from "./database.js";
import { quoteArrayElement } from "./pg-array.js";

/** What a host registers with. */
export interface HostRegistration {
  readonly hostname: string;
  readonly platform: string;
  readonly agentVersion: string;
}

/** Storage used by the ingest path. */
export interface AlertStore {
  /** Inserts or updates the host by hostname; the same hostname always gets the same id. */
  upsertHost(host: HostRegistration): Promise<{ hostId: string }>;
  /** The hostname registered under `hostId`, or undefined. */
  findHostname(hostId: string): Promise<string | undefined>;
  /**
   * Inserts the alerts in one statement, skipping alert_ids already stored.
   * Resolves, once committed, with the seq of each alert that was newly inserted.
   */
  insertAlerts(alerts: readonly NewAlert[]): Promise<Map<string, number>>;
}

/** The AlertStore over a migrated Database (PostgreSQL or PGlite). */
export function createAlertStore(database: Database): AlertStore {
  return {
    async upsertHost(host) {
      const rows = await database.rows<{ host_id: string }>(sql`
        insert into hosts (hostname, platform, agent_version, last_seen)
        values (${host.hostname}, ${host.platform}, ${host.agentVersion}, now())
        on conflict (hostname) do update
          set platform = excluded.platform,
              agent_version = excluded.agent_version,
              last_seen = excluded.last_seen
        returning host_id::text as host_id`);
      const row = rows[0];
      if (row === undefined) throw new Error("host upsert returned no row");
      return { hostId: row.host_id };
    },

    async findHostname(hostId) {
      const rows = await database.rows<{ hostname: string }>(
        sql`select hostname from hosts where host_id = ${hostId}::uuid`,
      );
      return rows[0]?.hostname;
    },

    async insertAlerts(alerts) {
      if (alerts.length === 0) return new Map();
      // One array per column, as array literals built here in one pass: the statement
      // and its 8 parameters are the same for any batch size, and node-postgres has no
      // per-element work left to do (src/storage/pg-array.ts).
      let alertIds = "";
      let hostIds = "";
      let timestamps = "";
      let types = "";
      let rules = "";
      let severities = "";
      let details = "";
      let receivedAts = "";
      for (let i = 0; i < alerts.length; i++) {
        const a = alerts[i] as NewAlert;
        const sep = i === 0 ? "" : ",";
        alertIds += sep + quoteArrayElement(a.alertId);
        hostIds += sep + quoteArrayElement(a.hostId);
        timestamps += sep + a.timestampUs.toString();
        types += sep + quoteArrayElement(a.tripwireType);
        rules += sep + quoteArrayElement(a.ruleName);
        severities += sep + quoteArrayElement(a.severity);
        details += sep + quoteArrayElement(a.eventDetailJson);
        receivedAts += sep + a.receivedAtUs.toString();
      }
      // insert_alert_batch (drizzle/0001) numbers the new rows in commit order.
      const rows = await database.rows<{ alert_id: string; seq: string }>(sql`
        select alert_id::text as alert_id, seq::text as seq from insert_alert_batch(
          ${`{${alertIds}}`}::uuid[], ${`{${hostIds}}`}::uuid[],
          ${`{${timestamps}}`}::int8[], ${`{${types}}`}::text[],
          ${`{${rules}}`}::text[], ${`{${severities}}`}::text[],
          ${`{${details}}`}::jsonb[], ${`{${receivedAts}}`}::int8[])`);
      const inserted = new Map<string, number>();
      for (const row of rows) inserted.set(row.alert_id, Number(row.seq));
      return inserted;
    },
  };
}
