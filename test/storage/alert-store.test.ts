/**
 * The ingest queries of `createAlertStore`, on every database backend.
 */
import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import { formatMicros, type NewAlert } from "../../src/storage/alert-types.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";

/** 2026-02-25T19:25:01.123456Z */
const baseUs = 1_772_047_501_123_456n;

function newAlert(hostId: string, overrides: Partial<NewAlert> = {}): NewAlert {
  return {
    alertId: randomUUID(),
    hostId,
    hostname: "store-host",
    timestampUs: baseUs,
    tripwireType: "FILE",
    ruleName: "etc-passwd-write",
    severity: "CRITICAL",
    eventDetailJson: '{"path":"/etc/passwd"}',
    receivedAtUs: baseUs + 1_000n,
    ...overrides,
  };
}

describe.each(backends)("createAlertStore [%s]", (kind) => {
  let database: TestDatabase;
  let store: AlertStore;
  let hostId: string;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    store = createAlertStore(database);
    ({ hostId } = await store.upsertHost({
      hostname: "store-host",
      platform: "linux",
      agentVersion: "1.0.0",
    }));
  });
  afterAll(async () => {
    await database?.dispose();
  });

  async function countAlerts(ids: readonly string[]): Promise<number> {
    const rows = await database.rows<{ n: number }>(
      sql`select count(*)::int as n from alerts where alert_id = any(${sql.param(ids)}::uuid[])`,
    );
    return rows[0]?.n ?? -1;
  }

  describe("upsertHost", () => {
    it("returns the same host_id every time the same hostname registers, and updates platform and agent_version", async () => {
      const first = await store.upsertHost({
        hostname: "re-register",
        platform: "linux",
        agentVersion: "1.0.0",
      });
      const second = await store.upsertHost({
        hostname: "re-register",
        platform: "darwin",
        agentVersion: "2.1.0",
      });
      expect(second.hostId).toBe(first.hostId);
      const rows = await database.rows<{ n: number; platform: string; agent_version: string }>(
        sql`select count(*) over ()::int as n, platform, agent_version
            from hosts where hostname = 're-register'`,
      );
      expect(rows).toEqual([{ n: 1, platform: "darwin", agent_version: "2.1.0" }]);
    });

    it("gives different hostnames different host_ids, as lower-case UUIDs", async () => {
      const a = await store.upsertHost({ hostname: "host-a", platform: "", agentVersion: "" });
      const b = await store.upsertHost({ hostname: "host-b", platform: "", agentVersion: "" });
      expect(a.hostId).not.toBe(b.hostId);
      for (const id of [a.hostId, b.hostId]) {
        expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      }
    });

    it("treats hostnames as exact text: case and unicode matter, quotes are data", async () => {
      const names = ["Host-C", "host-c", 'host "c"; drop table hosts; --', "hôst-ç 🚨"];
      const ids = new Set<string>();
      for (const hostname of names) {
        const { hostId: id } = await store.upsertHost({ hostname, platform: "", agentVersion: "" });
        ids.add(id);
        expect(await store.findHostname(id)).toBe(hostname);
      }
      expect(ids.size).toBe(names.length);
    });
  });

  describe("findHostname", () => {
    it("returns the hostname registered under a host_id", async () => {
      expect(await store.findHostname(hostId)).toBe("store-host");
    });

    it("returns undefined for a host_id that was never registered", async () => {
      expect(await store.findHostname(randomUUID())).toBeUndefined();
    });
  });

  describe("insertAlerts", () => {
    it("returns an empty map for no alerts", async () => {
      expect(await store.insertAlerts([])).toEqual(new Map());
    });

    it("stores 10000 alerts in one call, with a statement whose parameters do not grow with the batch", async () => {
      // 10000 rows × 8 columns would be 80000 parameters as a VALUES list: over
      // PostgreSQL's limit of 65535, so this only passes with one parameter per column.
      const alerts = Array.from({ length: 10_000 }, (_, i) =>
        newAlert(hostId, { ruleName: `bulk-${i}`, timestampUs: baseUs + BigInt(i) }),
      );
      const seqs = await store.insertAlerts(alerts);
      expect(seqs.size).toBe(alerts.length);
      // Seqs follow the order of the batch.
      let previous = 0;
      for (const alert of alerts) {
        const seq = seqs.get(alert.alertId);
        expect(seq).toBeGreaterThan(previous);
        previous = seq ?? Number.POSITIVE_INFINITY;
      }
      expect(await countAlerts(alerts.map((a) => a.alertId))).toBe(alerts.length);
    });

    it("returns the seq of every inserted alert, as stored in the table", async () => {
      const alerts = [newAlert(hostId), newAlert(hostId), newAlert(hostId)];
      const seqs = await store.insertAlerts(alerts);
      const rows = await database.rows<{ alert_id: string; seq: string }>(
        sql`select alert_id::text as alert_id, seq::text as seq from alerts
            where alert_id = any(${sql.param(alerts.map((a) => a.alertId))}::uuid[])`,
      );
      expect(new Map(rows.map((r) => [r.alert_id, Number(r.seq)]))).toEqual(seqs);
      expect(seqs.size).toBe(3);
    });

    it("skips alert_ids already stored and leaves their rows unchanged", async () => {
      const a = newAlert(hostId, { ruleName: "first-a" });
      const b = newAlert(hostId, { ruleName: "first-b" });
      const first = await store.insertAlerts([a, b]);
      const c = newAlert(hostId, { ruleName: "first-c" });
      const replayB = { ...b, ruleName: "replayed-b", receivedAtUs: b.receivedAtUs + 5_000_000n };

      const second = await store.insertAlerts([replayB, c]);

      expect([...second.keys()]).toEqual([c.alertId]);
      expect(second.get(c.alertId)).toBeGreaterThan(first.get(b.alertId) ?? 0);
      const rows = await database.rows<{ rule_name: string; seq: string; received_at: string }>(
        sql`select rule_name, seq::text as seq,
                   to_char(received_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as received_at
            from alerts where alert_id = ${b.alertId}::uuid`,
      );
      expect(rows).toEqual([
        {
          rule_name: "first-b",
          seq: String(first.get(b.alertId)),
          received_at: formatMicros(b.receivedAtUs).slice(0, -1),
        },
      ]);
    });

    it("stores text fields and the detail JSON exactly", async () => {
      const alert = newAlert(hostId, {
        tripwireType: "NETWORK",
        severity: "WARN",
        ruleName: 'rule "quoted" \\ ünï 🚨',
        eventDetailJson: '{"port":443,"path":"/tmp/ünï","nested":{"a":[1,2.5,null,true]}}',
      });
      await store.insertAlerts([alert]);
      const rows = await database.rows<{
        host_id: string;
        tripwire_type: string;
        rule_name: string;
        severity: string;
        detail: string;
      }>(sql`select host_id::text as host_id, tripwire_type, rule_name, severity,
                    event_detail::text as detail
             from alerts where alert_id = ${alert.alertId}::uuid`);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({
        host_id: hostId,
        tripwire_type: "NETWORK",
        rule_name: alert.ruleName,
        severity: "WARN",
      });
      expect(JSON.parse(rows[0]?.detail ?? "null")).toEqual(JSON.parse(alert.eventDetailJson));
    });

    it.each([
      ["with microseconds", 1_772_047_501_123_456n],
      ["one microsecond past a second", 1_772_047_501_000_001n],
      ["the last microsecond of a second", 1_772_047_501_999_999n],
      ["on a whole second", 1_772_047_501_000_000n],
      ["before 1970", -1n],
      ["at the epoch", 0n],
      ["in a leap year's 29 February", 1_709_251_199_999_999n],
    ])("round-trips timestamp and received_at %s exactly", async (_what, us) => {
      const alert = newAlert(hostId, { timestampUs: us, receivedAtUs: us + 1n });
      await store.insertAlerts([alert]);
      const rows = await database.rows<{ ts: string; received: string }>(sql`
        select to_char(timestamp at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as ts,
               to_char(received_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as received
        from alerts where alert_id = ${alert.alertId}::uuid`);
      expect(rows).toEqual([
        { ts: formatMicros(us).slice(0, -1), received: formatMicros(us + 1n).slice(0, -1) },
      ]);
    });
  });
});
