/**
 * The queries of host liveness: `hosts.last_seen` written in batches, read back for the
 * silence check and the host list.
 */
import { sql } from "drizzle-orm";
import type { Database } from "../storage/database.js";

/** One host as stored, timestamps in Unix epoch microseconds. */
export interface HostRow {
  readonly hostId: string;
  readonly hostname: string;
  readonly platform: string;
  readonly agentVersion: string;
  readonly registeredAtUs: bigint;
  readonly lastSeenUs: bigint;
}

/** A host seen recently: what an instance loads at start. */
export interface SeenHost {
  readonly hostId: string;
  readonly hostname: string;
  readonly lastSeenMs: number;
}

/** Storage used by host liveness and GET /api/hosts. */
export interface HostStore {
  /**
   * Moves `last_seen` of each host forward to the matching time (never back), in one
   * statement whatever the number of hosts.
   */
  writeLastSeen(hostIds: readonly string[], seenMs: readonly number[]): Promise<void>;
  /** The stored `last_seen` (epoch ms) of each of `hostIds` that exists. */
  lastSeen(hostIds: readonly string[]): Promise<Map<string, number>>;
  /** Hosts whose `last_seen` is after `sinceMs`. */
  seenSince(sinceMs: number): Promise<SeenHost[]>;
  /** Every host, by hostname. */
  listHosts(): Promise<HostRow[]>;
}

const micros = (column: string) =>
  sql.raw(`(extract(epoch from ${column}) * 1000000)::bigint::text`);

/** The HostStore over a migrated Database (PostgreSQL or PGlite). */
export function createHostStore(database: Database): HostStore {
  return {
    async writeLastSeen(hostIds, seenMs) {
      if (hostIds.length === 0) return;
      const times = seenMs.map((ms) => new Date(ms).toISOString());
      // One array per column: the same statement and two parameters for any number of hosts.
      await database.rows(sql`
        update hosts as h set last_seen = greatest(h.last_seen, v.seen)
        from unnest(${sql.param(hostIds)}::uuid[], ${sql.param(times)}::timestamptz[])
          as v(host_id, seen)
        where h.host_id = v.host_id`);
    },

    async lastSeen(hostIds) {
      const seen = new Map<string, number>();
      if (hostIds.length === 0) return seen;
      const rows = await database.rows<{ host_id: string; last_seen_us: string }>(sql`
        select host_id::text as host_id, ${micros("last_seen")} as last_seen_us
        from hosts where host_id = any(${sql.param(hostIds)}::uuid[])`);
      for (const row of rows) seen.set(row.host_id, Number(BigInt(row.last_seen_us) / 1000n));
      return seen;
    },

    async seenSince(sinceMs) {
      const rows = await database.rows<{
        host_id: string;
        hostname: string;
        last_seen_us: string;
      }>(sql`
        select host_id::text as host_id, hostname, ${micros("last_seen")} as last_seen_us
        from hosts where last_seen > ${new Date(sinceMs).toISOString()}::timestamptz`);
      return rows.map((r) => ({
        hostId: r.host_id,
        hostname: r.hostname,
        lastSeenMs: Number(BigInt(r.last_seen_us) / 1000n),
      }));
    },

    async listHosts() {
      const rows = await database.rows<{
        host_id: string;
        hostname: string;
        platform: string;
        agent_version: string;
        registered_us: string;
        last_seen_us: string;
      }>(sql`
        select host_id::text as host_id, hostname, platform, agent_version,
          ${micros("registered_at")} as registered_us, ${micros("last_seen")} as last_seen_us
        from hosts order by hostname`);
      return rows.map((r) => ({
        hostId: r.host_id,
        hostname: r.hostname,
        platform: r.platform,
        agentVersion: r.agent_version,
        registeredAtUs: BigInt(r.registered_us),
        lastSeenUs: BigInt(r.last_seen_us),
      }));
    },
  };
}
