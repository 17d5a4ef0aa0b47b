/**
 * Scenario 7, storm: several agents send a trickle (a few alerts per second each); after
 * a normal period one more agent bursts `stormAlerts` alerts as fast as it can (its
 * in-flight bound and the server's per-host rate limit are all that hold it back). The
 * trickle's send→ACK p99 during the storm, against its own p99 before it.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { type AgentStats, startSimulatedAgent } from "../../src/cli/simulated-agent.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { createBenchDatabase, storedAlerts } from "../lib/database.js";
import { sleep } from "../lib/machine.js";
import { distribution, SampleBuffer } from "../lib/percentiles.js";
import { check, num, type Outcome, type RunContext, type Scenario } from "../lib/scenario.js";
import { startServerProcess } from "../lib/server-process.js";

/** Alerts per second of each trickle agent. */
const trickleRate = 20;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  ctx.onStatus("creating the database, starting the server");
  const db = await createBenchDatabase(s.adminUrl);
  const sessions: Http2SessionManager[] = [];
  const server = await startServerProcess({
    repoRoot: s.repoRoot,
    entry: s.entry,
    databaseUrl: db.url,
  }).catch(async (err: unknown) => {
    await db.drop();
    throw err;
  });
  try {
    const baseUrl = `http://127.0.0.1:${server.port}`;
    const client = () => {
      const sessionManager = new Http2SessionManager(baseUrl);
      sessions.push(sessionManager);
      return createClient(AlertService, createGrpcTransport({ baseUrl, sessionManager }));
    };
    let phase: "warmup" | "normal" | "storm" | "after" = "warmup";
    const normal = new SampleBuffer();
    const during = new SampleBuffer();
    const stopTrickle = new AbortController();
    const trickles = Array.from({ length: Math.max(1, s.agents - 1) }, (_, i) =>
      startSimulatedAgent({
        client: client(),
        hostname: `bench-trickle-${i + 1}`,
        rate: trickleRate,
        durationMs: 0,
        signal: stopTrickle.signal,
        maxInFlight: s.inFlight,
        drainTimeoutMs: 30_000,
        onReply(reply) {
          if (reply.type !== "ACK") return;
          if (phase === "normal") normal.push(reply.latencyMs);
          else if (phase === "storm") during.push(reply.latencyMs);
        },
      }),
    );
    ctx.onStatus("trickle: warming up");
    await sleep(s.warmupMs);
    phase = "normal";
    ctx.onStatus("trickle: measuring its normal latency");
    await sleep(s.durationMs);
    phase = "storm";
    const stormStart = performance.now();
    const storm = startSimulatedAgent({
      client: client(),
      hostname: "bench-storm",
      rate: 0,
      durationMs: 0,
      count: s.stormAlerts,
      maxInFlight: s.inFlight,
      drainTimeoutMs: 60_000,
    });
    const status = setInterval(() => {
      const st = storm.stats();
      ctx.onStatus(`storm: ${num(st.acked + st.errors)} of ${num(s.stormAlerts)} answered`);
    }, 1_000);
    const stormStats = await storm.done;
    clearInterval(status);
    const stormSeconds = (performance.now() - stormStart) / 1000;
    phase = "after";
    stopTrickle.abort();
    const trickleStats = await Promise.all(trickles.map((t) => t.done));
    const all: AgentStats[] = [...trickleStats, stormStats];
    const acked = all.reduce((n, a) => n + a.acked, 0);
    const unanswered = all.reduce((n, a) => n + a.inFlight, 0);
    const failures = all.flatMap((a) =>
      a.failure === undefined ? [] : [`${a.hostname}: ${a.failure}`],
    );
    const trickleErrors = trickleStats.reduce((n, a) => n + a.errors, 0);
    const { rows } = await storedAlerts(db.url);
    const normalMs = distribution(normal.values());
    const stormMs = distribution(during.values());
    const notes: string[] = [];
    if (stormStats.errors > 0) {
      const reasons = Object.entries(stormStats.errorsByReason)
        .map(([reason, n]) => `${n} × "${reason}"`)
        .join(", ");
      notes.push(
        `Storm: ${stormStats.acked} of ${s.stormAlerts} ACKed; ERROR replies: ${reasons}.`,
      );
    }
    if (rows !== acked) notes.push(`Storm: ${rows} rows stored for ${acked} ACKs.`);
    if (unanswered > 0) notes.push(`Storm: ${unanswered} events never answered.`);
    if (trickleErrors > 0) notes.push(`Storm: the trickle got ${trickleErrors} ERROR replies.`);
    notes.push(...failures.map((f) => `Storm: ${f}.`));
    return {
      metrics: {
        normalP50: normalMs.p50,
        normalP99: normalMs.p99,
        stormP50: stormMs.p50,
        stormP99: stormMs.p99,
        stormSeconds,
        stormAckedPerSecond: stormStats.acked / stormSeconds,
        stormErrors: stormStats.errors,
      },
      raw: { normalMs, stormMs, stormSeconds, trickleStats, stormStats, rowsStored: rows, acked },
      consistent:
        rows === acked && unanswered === 0 && failures.length === 0 && trickleErrors === 0,
      notes,
    };
  } finally {
    for (const session of sessions) session.abort();
    await server.stop(30_000);
    await db.drop();
  }
}

export const storm: Scenario = {
  number: 7,
  id: "storm",
  title: "Storm",
  needs: [],
  run,
  rows(medians, s) {
    const m = medians.get("storm");
    return [
      {
        scenario: "7. Storm",
        measure: `${s.agents - 1} agents at ${trickleRate}/s while 1 bursts ${num(s.stormAlerts)}: trickle send→ACK p99 during the storm (before it)`,
        result: `${num(m?.stormP99)} ms (${num(m?.normalP99)} ms); storm ${num(m?.stormAckedPerSecond)} ACKs/s over ${num(m?.stormSeconds, 1)} s`,
        goal: "≤ the trickle's normal p99",
        met:
          m?.normalP99 === undefined
            ? undefined
            : check(m.stormP99, (v) => v <= (m.normalP99 as number)),
      },
    ];
  },
};
