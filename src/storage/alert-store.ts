/**
 * The queries of the ingest path: hosts by hostname, and alerts in batches.
 */
import { sql } from "drizzle-orm";
import type { NewAlert } from "./alert-types.js";
import type { Database } from "./database.js";

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
      const n = alerts.length;
      if (n === 0) return new Map();
      // One array per column: the statement and its 8 parameters are the same for any
      // batch size, unlike a VALUES list with 8 parameters per row.
      const alertIds = new Array<string>(n);
      const hostIds = new Array<string>(n);
      const timestamps = new Array<string>(n);
      const types = new Array<string>(n);
      const rules = new Array<string>(n);
      const severities = new Array<string>(n);
      const details = new Array<string>(n);
      const receivedAts = new Array<string>(n);
      for (let i = 0; i < n; i++) {
        const a = alerts[i] as NewAlert;
        alertIds[i] = a.alertId;
        hostIds[i] = a.hostId;
        timestamps[i] = a.timestampUs.toString();
        types[i] = a.tripwireType;
        rules[i] = a.ruleName;
        severities[i] = a.severity;
        details[i] = a.eventDetailJson;
        receivedAts[i] = a.receivedAtUs.toString();
      }
      // insert_alert_batch (drizzle/0001) numbers the new rows in commit order.
      const rows = await database.rows<{ alert_id: string; seq: string }>(sql`
        select alert_id::text as alert_id, seq::text as seq from insert_alert_batch(
          ${sql.param(alertIds)}::uuid[], ${sql.param(hostIds)}::uuid[],
          ${sql.param(timestamps)}::int8[], ${sql.param(types)}::text[],
          ${sql.param(rules)}::text[], ${sql.param(severities)}::text[],
          ${sql.param(details)}::jsonb[], ${sql.param(receivedAts)}::int8[])`);
      const inserted = new Map<string, number>();
      for (const row of rows) inserted.set(row.alert_id, Number(row.seq));
      return inserted;
    },
  };
}
