/**
 * Scenario 7, storm: several agents send a trickle (a few alerts per second each); after
 * a normal period one more agent bursts `stormAlerts` alerts as fast as it can (its
 * in-flight bound and the server's per-host rate limit are all that hold it back). The
 * trickle's send→ACK p99 during the storm, against its own p99 before it.
 *
 * The storm agent runs in its own process (bench/lib/storm-process.ts), as it would on
 * its own machine: its tens of thousands of messages per second through connect-node
 * would otherwise delay this process's event loop, which reads and stamps the trickle's
 * ACKs, and the trickle's latency would include the load generator's own queueing. This
 * process runs only the trickle and the progress display. Each trickle ACK is stamped on
 * the clock both processes share, and counts as "during the storm" if it was read between
 * the storm's first send and the end of its stream.
 */
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { type AgentStats, startSimulatedAgent } from "../../src/cli/simulated-agent.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { createBenchDatabase, storedAlerts } from "../lib/database.js";
import {
  type Child,
  type ChildAlive,
  type CountStorm,
  epochMs,
  forkChild,
  type StartStorm,
  type StormProgress,
  type StormResult,
} from "../lib/ipc.js";
import { sleep } from "../lib/machine.js";
import { distribution, SampleBuffer } from "../lib/percentiles.js";
import { check, num, type Outcome, type RunContext, type Scenario } from "../lib/scenario.js";
import { startServerProcess } from "../lib/server-process.js";

type StormProcess = Child<StartStorm | CountStorm, ChildAlive | StormProgress | StormResult>;

/** `message` from the storm process; if it dies first, an error that says so. */
async function fromStorm<T>(message: Promise<T>): Promise<T> {
  try {
    return await message;
  } catch {
    throw new Error(
      "the storm process (bench/lib/storm-process.ts) exited before it reported; its error, if any, is on stderr",
    );
  }
}

/** Alerts per second of each trickle agent. */
const trickleRate = 20;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  ctx.onStatus("creating the database, starting the server");
  // The storm process loads (tsx) while the server starts, not during the measurement.
  const stormProcess: StormProcess = forkChild(
    join(s.repoRoot, "bench/lib/storm-process.ts"),
    s.repoRoot,
  );
  const stormAlive = stormProcess.next("alive");
  // Until awaited below; a child that dies meanwhile must not go unhandled.
  stormAlive.catch(() => {});
  const db = await createBenchDatabase(s.adminUrl).catch((err: unknown) => {
    stormProcess.kill();
    throw err;
  });
  const sessions: Http2SessionManager[] = [];
  const server = await startServerProcess({
    repoRoot: s.repoRoot,
    entry: s.entry,
    databaseUrl: db.url,
  }).catch(async (err: unknown) => {
    stormProcess.kill();
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
    await fromStorm(stormAlive);
    // Each trickle ACK: when it was read (epochMs()) and its send→ACK latency. Sorted into
    // "normal" and "during the storm" once the storm process says when it ran.
    const ackedAt = new SampleBuffer();
    const ackLatency = new SampleBuffer();
    let measuring = false;
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
          if (!measuring || reply.type !== "ACK") return;
          ackedAt.push(epochMs());
          ackLatency.push(reply.latencyMs);
        },
      }),
    );
    ctx.onStatus("trickle: warming up");
    await sleep(s.warmupMs);
    measuring = true;
    const normalFrom = epochMs();
    ctx.onStatus("trickle: measuring its normal latency");
    await sleep(s.durationMs);
    // The normal period ends here; ACKs read while the storm agent registers count in neither.
    const normalTo = epochMs();
    const stormResult = stormProcess.next("storm-result");
    stormProcess.send({
      type: "start-storm",
      baseUrl,
      hostname: "bench-storm",
      count: s.stormAlerts,
      maxInFlight: s.inFlight,
      drainTimeoutMs: 60_000,
    });
    const status = setInterval(() => {
      stormProcess.next("storm-progress").then(
        (p) => ctx.onStatus(`storm: ${num(p.acked + p.errors)} of ${num(s.stormAlerts)} answered`),
        // The storm process exited; awaiting its result reports why.
        () => {},
      );
      stormProcess.send({ type: "count-storm" });
    }, 1_000);
    const {
      stats: stormStats,
      startedAt,
      sendingAt,
      doneAt,
    } = await fromStorm(stormResult).finally(() => clearInterval(status));
    measuring = false;
    stopTrickle.abort();
    const trickleStats = await Promise.all(trickles.map((t) => t.done));
    // From the first alert sent (or, if none was, from the start) to the stream's end.
    const stormFrom = sendingAt ?? startedAt;
    const stormSeconds = (doneAt - stormFrom) / 1000;
    const normal = new SampleBuffer();
    const during = new SampleBuffer();
    const at = ackedAt.values();
    const latency = ackLatency.values();
    for (let i = 0; i < at.length; i++) {
      const t = at[i] as number;
      if (t >= normalFrom && t < normalTo) normal.push(latency[i] as number);
      else if (sendingAt !== undefined && t >= sendingAt && t <= doneAt)
        during.push(latency[i] as number);
    }
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
    stormProcess.kill();
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
