/**
 * Scenario 1, the database ceiling: the physical limit for persisting alerts on this
 * machine. The same rows the agents' events become are written with COPY FROM STDIN in
 * 1000-row batches (one transaction each, like the server's flushes), on one
 * connection, into a copy of the server's own migrated table
 * (`CREATE TABLE … (LIKE alerts INCLUDING ALL)`: same columns, keys and indexes).
 * Every ingest figure of the suite is a ratio to this.
 */
import { randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { makeRealisticEvent } from "../../src/cli/simulated-agent.js";
import { createBenchDatabase, withClient } from "../lib/database.js";
import { CpuMeter } from "../lib/proc-stats.js";
import { num, type Outcome, type RunContext, type Scenario } from "../lib/scenario.js";
import { startServerProcess } from "../lib/server-process.js";

const batchRows = 1000;
const columns =
  "alert_id, seq, host_id, timestamp, tripwire_type, rule_name, severity, event_detail, received_at";

/** A value in COPY's text format: backslash, tab and line breaks escaped. */
function copyText(value: string): string {
  return value.replace(/[\\\t\n\r]/g, (c) =>
    c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r",
  );
}

const decoder = new TextDecoder();

/** 1000 rows as the server stores them, from realistic events of `hostIds`, numbered from `seq`. */
function batchText(hostIds: readonly string[], seq: number): string {
  let out = "";
  const receivedAt = new Date().toISOString();
  for (let i = 0; i < batchRows; i++) {
    const e = makeRealisticEvent(hostIds[i % hostIds.length] as string);
    const ts = new Date(Number(e.timestampUs / 1000n)).toISOString();
    out += `${e.alertId}\t${seq + i}\t${e.hostId}\t${ts}\t${copyText(e.tripwireType)}\t${copyText(e.ruleName)}\t${copyText(e.severity)}\t${copyText(decoder.decode(e.eventDetailJson))}\t${receivedAt}\n`;
  }
  return out;
}

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  ctx.onStatus("creating and migrating the database");
  const db = await createBenchDatabase(s.adminUrl);
  try {
    // The server migrates its database at start; it is stopped before measuring.
    const server = await startServerProcess({
      repoRoot: s.repoRoot,
      entry: s.entry,
      databaseUrl: db.url,
    });
    await server.stop(30_000);
    await withClient(db.url, (c) => c.query("create table bench_copy (like alerts including all)"));
    const hostIds = Array.from({ length: s.agents }, () => randomUUID());
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const backend = new CpuMeter();
    let copied = 0;
    let measured = 0;
    let measuredStart = 0;
    let measuredEnd = 0;
    try {
      const began = performance.now();
      const windowStart = began + s.warmupMs;
      const windowEnd = windowStart + s.durationMs;
      let next = batchText(hostIds, 1);
      let lastStatus = 0;
      for (;;) {
        const now = performance.now();
        if (now >= windowEnd) break;
        if (measuredStart === 0 && now >= windowStart) {
          measuredStart = now;
          backend.add([(client as unknown as { processID: number }).processID]);
        }
        const text = next;
        const copy = pipeline(
          Readable.from([text]),
          client.query(copyFrom(`copy bench_copy (${columns}) from stdin`)),
        );
        // The next batch is built while PostgreSQL takes this one.
        next = batchText(hostIds, copied + batchRows + 1);
        await copy;
        copied += batchRows;
        if (measuredStart !== 0) measured += batchRows;
        if (now - lastStatus >= 1_000) {
          lastStatus = now;
          const rate = measuredStart === 0 ? 0 : measured / ((now - measuredStart) / 1000);
          ctx.onStatus(measuredStart === 0 ? "warming up" : `measuring: ${num(rate)} rows/s`);
        }
      }
      measuredEnd = performance.now();
      backend.sample();
    } finally {
      await client.end();
    }
    const stored = await withClient(db.url, async (c) => {
      const r = await c.query<{ n: string }>("select count(*)::text as n from bench_copy");
      return Number(r.rows[0]?.n ?? 0);
    });
    const seconds = (measuredEnd - measuredStart) / 1000;
    const rowsPerSecond = measured / seconds;
    const metrics = {
      rowsPerSecond,
      backendCpuUsPerRow: (backend.seconds * 1e6) / measured,
    };
    return {
      metrics,
      raw: { ...metrics, rowsCopied: copied, rowsStored: stored, windowSeconds: seconds },
      consistent: stored === copied,
      notes: stored === copied ? [] : [`COPY: ${copied} rows sent, ${stored} stored`],
    };
  } finally {
    await db.drop();
  }
}

export const dbCeiling: Scenario = {
  number: 1,
  id: "db-ceiling",
  title: "Database ceiling",
  needs: [],
  run,
  rows(medians) {
    const m = medians.get("db-ceiling");
    return [
      {
        scenario: "1. Database ceiling",
        measure:
          "COPY FROM STDIN, 1000-row batches, 1 connection, into `LIKE alerts INCLUDING ALL`",
        result: `${num(m?.rowsPerSecond)} rows/s (PostgreSQL backend ${num(m?.backendCpuUsPerRow, 1)} µs CPU/row)`,
        goal: "– (the reference for ingest)",
        met: undefined,
      },
    ];
  },
};
