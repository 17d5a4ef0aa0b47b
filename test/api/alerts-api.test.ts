/**
 * GET /api/alerts (README, "History API") against the real server with fetch: keyset
 * pages in both directions, filters, time ranges, limits, refusals and access, on every
 * database backend. What the API returns is compared with what the database holds.
 */
import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAlertStore } from "../../src/storage/alert-store.js";
import { formatMicros, type NewAlert } from "../../src/storage/alert-types.js";
import type { Database } from "../../src/storage/database.js";
import { createHistoryStore } from "../../src/storage/history-store.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { connectLive } from "../support/ws-client.js";

/** 2026-02-25T19:25:01.123456Z */
const baseUs = 1_772_047_501_123_456n;
const severities = ["INFO", "WARN", "CRITICAL"] as const;
const types = ["FILE", "NETWORK", "PROCESS"] as const;

interface ApiAlert {
  readonly seq: number;
  readonly alert_id: string;
  readonly host_id: string;
  readonly hostname: string;
  readonly timestamp: string;
  readonly tripwire_type: string;
  readonly rule_name: string;
  readonly severity: string;
  readonly event_detail: unknown;
  readonly received_at: string;
}

interface ApiPage {
  readonly alerts: ApiAlert[];
  readonly next_before?: number | null;
  readonly next_since?: number | null;
  readonly latest_seq: number;
}

/** A seeded alert as the test knows it. */
interface Seeded {
  readonly seq: number;
  readonly alert: NewAlert;
}

/**
 * Stores `count` alerts from three hosts in batches of seven, cycling severities and
 * types, one second (and one microsecond) apart, oldest first.
 */
async function seed(database: Database, count: number): Promise<Seeded[]> {
  const store = createAlertStore(database);
  const hosts = await Promise.all(
    ["web-01", "db-01", "bastion"].map(async (hostname) => ({
      hostname,
      hostId: (await store.upsertHost({ hostname, platform: "linux", agentVersion: "1" })).hostId,
    })),
  );
  const all: NewAlert[] = Array.from({ length: count }, (_, i) => {
    const host = hosts[i % 3] as { hostname: string; hostId: string };
    return {
      alertId: randomUUID(),
      hostId: host.hostId,
      hostname: host.hostname,
      timestampUs: baseUs + BigInt(i) * 1_000_001n,
      tripwireType: types[Math.floor(i / 3) % 3] as string,
      ruleName: `rule-${i}`,
      severity: severities[Math.floor(i / 9) % 3] as string,
      eventDetailJson: `{"i":${i},"note":"quote \\" and ünïcode"}`,
      receivedAtUs: baseUs + BigInt(i) * 1_000_001n + 500n,
    };
  });
  const seeded: Seeded[] = [];
  for (let i = 0; i < all.length; i += 7) {
    const batch = all.slice(i, i + 7);
    const seqs = await store.insertAlerts(batch);
    for (const alert of batch) seeded.push({ seq: seqs.get(alert.alertId) as number, alert });
  }
  return seeded;
}

async function get(
  server: RunningServer,
  query: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(`${server.baseUrl}/api/alerts${query}`, { headers });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

async function page(server: RunningServer, query: string): Promise<ApiPage> {
  const res = await get(server, query);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as ApiPage;
}

/** Follows next_before (or next_since) from the page of `query` to the end; returns every page. */
async function walk(server: RunningServer, query: string): Promise<ApiPage[]> {
  const params = new URLSearchParams(query);
  const pages = [await page(server, `?${params}`)];
  for (;;) {
    const last = pages[pages.length - 1] as ApiPage;
    const forward = "next_since" in last;
    const cursor = forward ? last.next_since : last.next_before;
    if (cursor === null || cursor === undefined) return pages;
    params.set(forward ? "since" : "before", String(cursor));
    pages.push(await page(server, `?${params}`));
    expect(pages.length).toBeLessThan(100);
  }
}

describe.each(backends)("GET /api/alerts [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;
  let seeded: Seeded[];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    seeded = await seed(database, 60);
    server = await startServer(database, { apiDefaultLimit: 25, apiMaxLimit: 40 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  const seqs = (alerts: readonly { seq: number }[]) => alerts.map((a) => a.seq);

  it("returns the newest alerts first, and following next_before walks every stored alert exactly once until it is null", async () => {
    const pages = await walk(server, "limit=16");
    expect(pages.map((p) => p.alerts.length)).toEqual([16, 16, 16, 12]);
    expect(pages.map((p) => p.next_before)).toEqual([
      seeded[44]?.seq,
      seeded[28]?.seq,
      seeded[12]?.seq,
      null,
    ]);
    const all = pages.flatMap((p) => p.alerts);
    expect(seqs(all)).toEqual(seqs(seeded).reverse());
    for (const p of pages) expect(p.latest_seq).toBe(seeded[59]?.seq);
  });

  it("pages forward from since, oldest first, with next_since until it is null", async () => {
    const from = seeded[9]?.seq as number;
    const pages = await walk(server, `since=${from}&limit=20`);
    expect(pages.map((p) => p.alerts.length)).toEqual([20, 20, 10]);
    expect(pages.map((p) => p.next_since)).toEqual([seeded[29]?.seq, seeded[49]?.seq, null]);
    expect(seqs(pages.flatMap((p) => p.alerts))).toEqual(seqs(seeded.slice(10)));
    // At the newest alert there is nothing more.
    expect(await page(server, `?since=${seeded[59]?.seq}`)).toEqual({
      alerts: [],
      next_since: null,
      latest_seq: seeded[59]?.seq,
    });
  });

  it("gives every alert exactly as the /ws feed does, every field included", async () => {
    const api = (await page(server, "?limit=40")).alerts;
    // connectLive returns once the replay is complete (`live`).
    const { client } = await connectLive(server.wsUrl, { query: { history: "40" } });
    try {
      expect(api).toEqual(client.alerts().reverse());
    } finally {
      client.terminate();
    }
    const newest = seeded[59] as Seeded;
    expect(api[0]).toEqual({
      seq: newest.seq,
      alert_id: newest.alert.alertId,
      host_id: newest.alert.hostId,
      hostname: newest.alert.hostname,
      timestamp: formatMicros(newest.alert.timestampUs),
      tripwire_type: newest.alert.tripwireType,
      rule_name: newest.alert.ruleName,
      severity: newest.alert.severity,
      event_detail: JSON.parse(newest.alert.eventDetailJson),
      received_at: formatMicros(newest.alert.receivedAtUs),
    });
  });

  it("filters by host_id (repeated or as a comma list), min_severity and tripwire_type, as /ws does", async () => {
    const [web, db] = [seeded[0]?.alert.hostId, seeded[1]?.alert.hostId] as [string, string];
    const wanted = seeded.filter(
      ({ alert: a }) =>
        (a.hostId === web || a.hostId === db) &&
        a.severity !== "INFO" &&
        (a.tripwireType === "FILE" || a.tripwireType === "PROCESS"),
    );
    expect(wanted.length).toBeGreaterThan(5);
    const filters = "&min_severity=WARN&tripwire_type=FILE,PROCESS";
    const repeated = await walk(server, `limit=3&host_id=${web}&host_id=${db}`);
    expect(seqs(repeated.flatMap((p) => p.alerts))).toEqual(
      seqs(seeded.filter((s) => s.alert.hostId !== seeded[2]?.alert.hostId)).reverse(),
    );
    const pages = await walk(server, `limit=3&host_id=${web},${db}${filters}`);
    expect(seqs(pages.flatMap((p) => p.alerts))).toEqual(seqs(wanted).reverse());
    const forward = await walk(server, `since=0&limit=4&host_id=${web},${db}${filters}`);
    expect(seqs(forward.flatMap((p) => p.alerts))).toEqual(seqs(wanted));
    // One host on its own (the single-host query).
    const one = await walk(server, `limit=7&host_id=${db.toUpperCase()}`);
    expect(seqs(one.flatMap((p) => p.alerts))).toEqual(
      seqs(seeded.filter((s) => s.alert.hostId === db)).reverse(),
    );
  });

  it("selects by the alert's timestamp with from (inclusive) and to (exclusive), in any offset and to the microsecond", async () => {
    const at = (i: number) => formatMicros((seeded[i] as Seeded).alert.timestampUs);
    const p = await page(server, `?from=${at(10)}&to=${at(20)}&limit=40`);
    expect(seqs(p.alerts)).toEqual(seqs(seeded.slice(10, 20)).reverse());
    // One microsecond later than alert 10 leaves it out.
    const later = formatMicros(((seeded[10] as Seeded).alert.timestampUs as bigint) + 1n);
    const p2 = await page(server, `?from=${later}&to=${at(20)}&limit=40`);
    expect(seqs(p2.alerts)).toEqual(seqs(seeded.slice(11, 20)).reverse());
    // The same instant written with a +02:00 offset (the + encoded as %2B).
    const ts = at(15);
    const shifted = `${ts.slice(0, 11)}${String(Number(ts.slice(11, 13)) + 2).padStart(2, "0")}${ts.slice(13, -1)}%2B02:00`;
    const p3 = await page(server, `?since=0&from=${shifted}`);
    expect(seqs(p3.alerts)).toEqual(seqs(seeded.slice(15, 40)));
    expect(p3.next_since).toBe(seeded[39]?.seq);
  });

  it("uses TRIPWIRE_API_DEFAULT_LIMIT without a limit and accepts up to TRIPWIRE_API_MAX_LIMIT", async () => {
    const p = await page(server, "");
    expect(p.alerts).toHaveLength(25);
    expect(p.next_before).toBe(seeded[35]?.seq);
    expect((await page(server, "?limit=40")).alerts).toHaveLength(40);
    const over = await get(server, "?limit=41");
    expect(over.status).toBe(400);
    expect(over.body).toEqual({
      error: "limit 41 is out of range: expected a whole number from 1 to 40",
    });
  });

  it.each([
    ["?since=abc", /since must be a whole number/],
    ["?before=-5", /before must be a whole number/],
    ["?since=1&before=9", /since and before cannot be combined/],
    ["?limit=0", /limit 0 is out of range: expected a whole number from 1 to 40/],
    ["?limit=ten", /limit must be a whole number/],
    ["?from=yesterday", /from "yesterday" is not valid: expected an RFC 3339 time/],
    ["?to=2026-02-25", /to "2026-02-25" is not valid: expected an RFC 3339 time/],
    ["?from=2026-02-25T19:25:01+02:00", /write the \+ of an offset as %2B/],
    ["?from=2026-02-30T00:00:00Z", /from "2026-02-30T00:00:00Z" is not a real date and time/],
    ["?from=2026-02-25T19:25:01.1234567Z", /from .* is not valid/],
    ["?from=2026-02-25T10:00:00Z&to=2026-02-25T09:00:00Z", /from must be earlier than to/],
    ["?min_severity=HIGH", /min_severity must be one of INFO, WARN, CRITICAL/],
    ["?host_id=web-01", /host_id "web-01" is not a UUID/],
    ["?tripwire_type=DISK", /tripwire_type "DISK" is not one of FILE, NETWORK, PROCESS/],
    ["?hostid=x", /unknown parameter "hostid": expected since, before, from, to, host_id/],
  ])(
    "refuses %s with 400 and a message saying what was wrong and what is expected",
    async (query, message) => {
      const res = await get(server, query);
      expect(res.status).toBe(400);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect((res.body as { error: string }).error).toMatch(message);
    },
  );

  it("answers with no-store JSON and a latest_seq that a live feed can resume from", async () => {
    const res = await get(
      server,
      `?limit=1&min_severity=CRITICAL&host_id=${seeded[0]?.alert.hostId}`,
    );
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = res.body as ApiPage;
    // The page's newest match may be older than the feed; latest_seq is the feed's newest.
    expect(body.latest_seq).toBe(seeded[59]?.seq);
    expect(body.alerts[0]?.seq).toBeLessThan(body.latest_seq);
  });

  it("leaves out alerts the live feed has not delivered yet, so a feed resumed from latest_seq follows the page without a gap", async () => {
    const own = await createTestDatabase(kind);
    // No polling: this server's feed learns only of alerts it commits itself.
    const quiet = await startServer(own, { feedPollMs: 0 });
    try {
      const before = (await (await fetch(`${quiet.baseUrl}/api/alerts`)).json()) as ApiPage;
      expect(before).toEqual({ alerts: [], next_before: null, latest_seq: 0 });
      // Committed behind the feed's back (as by an instance whose message is late).
      const behind = await seed(own, 3);
      const after = (await (await fetch(`${quiet.baseUrl}/api/alerts?since=0`)).json()) as ApiPage;
      expect(after).toEqual({ alerts: [], next_since: null, latest_seq: 0 });
      expect(behind).toHaveLength(3);
    } finally {
      await quiet.close();
      await own.dispose();
    }
  });

  it("reads a plain page through the seq index and a one-host page through alerts_host_seq_idx", async () => {
    const bulk = await createTestDatabase(kind);
    try {
      // Enough rows that a sequential scan and sort would cost more than an index, and a
      // host with one alert in a hundred (the other nineteen share the rest).
      await bulk.rows(
        sql`insert into hosts (hostname) select 'h' || lpad(i::text, 2, '0') from generate_series(1, 20) i`,
      );
      await bulk.rows(sql`
        insert into alerts (alert_id, seq, host_id, timestamp, tripwire_type, rule_name, severity, event_detail)
        select gen_random_uuid(), i,
          (array(select host_id from hosts order by hostname))[case when i % 100 = 0 then 1 else 2 + i % 19 end],
          now() - (50000 - i) * interval '1 second', 'FILE', 'r', 'INFO', '{}'
        from generate_series(1, 50000) i`);
      await bulk.rows(sql`update alert_seq set last = 50000 where id = 1`);
      await bulk.rows(sql`analyze`);
      const [host] = await bulk.rows<{ host_id: string }>(
        sql`select host_id::text as host_id from hosts where hostname = 'h01'`,
      );
      const recorded = recording(bulk);
      const store = createHistoryStore(recorded.database);
      const plans: string[] = [];
      for (const query of [
        { uptoSeq: 50_000, filter: {}, limit: 100 },
        { uptoSeq: 50_000, before: 30_000, filter: {}, limit: 100 },
        { uptoSeq: 50_000, filter: { hostIds: new Set([host?.host_id as string]) }, limit: 100 },
        {
          uptoSeq: 50_000,
          before: 30_000,
          filter: { hostIds: new Set([host?.host_id as string]) },
          limit: 100,
        },
      ]) {
        expect((await store.page(query)).alerts).toHaveLength(100);
        const plan = await bulk.rows<{ "QUERY PLAN": string }>(
          sql`explain ${recorded.last() as SQL}`,
        );
        plans.push(plan.map((r) => r["QUERY PLAN"]).join("\n"));
      }
      expect(plans[0]).toMatch(/Index Scan Backward using alerts_seq_unique on alerts/);
      expect(plans[1]).toMatch(/Index Scan Backward using alerts_seq_unique on alerts/);
      expect(plans[2]).toMatch(/Index Scan Backward using alerts_host_seq_idx on alerts/);
      expect(plans[3]).toMatch(/Index Scan Backward using alerts_host_seq_idx on alerts/);
      for (const plan of plans) expect(plan).not.toMatch(/Seq Scan on alerts|Sort/);
    } finally {
      await bulk.dispose();
    }
  });
});

/** A Database that remembers the last page query it ran. */
function recording(database: Database): { database: Database; last(): SQL | undefined } {
  const dialect = new PgDialect();
  let last: SQL | undefined;
  return {
    database: {
      ...database,
      rows<T>(query: SQL): Promise<T[]> {
        if (/from alerts a/.test(dialect.sqlToQuery(query).sql)) last = query;
        return database.rows<T>(query);
      },
    },
    last: () => last,
  };
}

describe("GET /api/alerts when the database fails", () => {
  it("answers 503 with an error that leaks no SQL, and logs the cause", async () => {
    const database = await createTestDatabase("pglite");
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString().split("\n").filter(Boolean));
        done();
      },
    });
    const dialect = new PgDialect();
    const failing: Database = {
      ...database,
      rows<T>(query: SQL): Promise<T[]> {
        if (/from alerts a join hosts/.test(dialect.sqlToQuery(query).sql)) {
          return Promise.reject(new Error("connection terminated unexpectedly"));
        }
        return database.rows<T>(query);
      },
    };
    const server = await startServer(failing, {}, { logger: { level: "error", stream } });
    try {
      const res = await get(server, "?limit=5");
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ error: "the alert history cannot be read now; try again" });
      const logged = lines.map((l) => JSON.parse(l) as { msg: string; err?: { message: string } });
      expect(logged).toContainEqual(
        expect.objectContaining({
          msg: "reading alert history failed",
          err: expect.objectContaining({ message: "connection terminated unexpectedly" }),
        }),
      );
    } finally {
      await server.close();
      await database.dispose();
    }
  });
});

describe("GET /api/alerts access", () => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    await seed(database, 3);
    server = await startServer(database, {
      wsTokens: ["s3cret", "other"],
      wsAllowedOrigins: ["https://soc.example.com"],
    });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("refuses a request without a token, or with a wrong one, with 401 as /ws does", async () => {
    for (const [query, headers, error] of [
      ["", {}, "a token is required"],
      ["?token=nope", {}, "the token is not valid"],
      ["", { authorization: "Bearer nope" }, "the token is not valid"],
    ] as const) {
      const res = await get(server, query, headers);
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ error });
    }
  });

  it("admits a token given as ?token= or as a Bearer header", async () => {
    expect((await get(server, "?token=s3cret")).status).toBe(200);
    const res = await get(server, "?limit=2", { authorization: "Bearer other" });
    expect(res.status).toBe(200);
    expect((res.body as ApiPage).alerts).toHaveLength(2);
  });

  it("refuses a browser request from an origin that is not allowed with 403", async () => {
    const refused = await get(server, "?token=s3cret", { origin: "https://evil.example" });
    expect(refused.status).toBe(403);
    expect(refused.body).toEqual({ error: "origin https://evil.example is not allowed" });
    const allowed = await get(server, "?token=s3cret", { origin: "https://soc.example.com" });
    expect(allowed.status).toBe(200);
  });
});
