/**
 * Fan-out benchmark: ingest throughput with 0, 100 and 1000 WebSocket subscribers
 * connected (or other counts, or version-0 clients), and how long a committed alert takes
 * to reach a subscriber's socket, with every latency of the probe's alerts in the table.
 * Each scenario is one `runLoad` (bench/lib/load-run.ts, which says how it measures), as
 * in scenarios 2 and 4 of the suite (`npm run bench`); this script is for digging into
 * fan-out alone: subscriber counts, protocol versions, profiles.
 *
 * Usage: npm run bench:fanout -- [--quick] [--runs N] [--scenarios 0,100,1000,100v0] …
 */
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { undoOnSignals } from "./lib/cleanup.js";
import { type CpuCores, type LoadResult, runLoad } from "./lib/load-run.js";
import {
  type CodeVersion,
  codeVersion,
  describeMachine,
  type Machine,
  waitForQuiet,
} from "./lib/machine.js";
import { median } from "./lib/percentiles.js";
import { buildServer, type ServerEntry } from "./lib/server-process.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const goalRatio = 0.7;
/** Below this many busy cores the machine counts as quiet enough to start a scenario. */
const quietCores = 0.3;

const usage = `Usage: npm run bench:fanout -- [options]

  --quick               ~30 s smoke run: 1 s warm-up, 4 s measured, tsx server, no files
  --runs N              repeat every scenario N times and report medians (default 1)
  --scenarios LIST      subscriber counts, e.g. 0,100,1000; a "v0" suffix (100v0) uses
                        version-0 clients (default 0,100,1000; 0 must be included)
  --agents N            simulated agents, one HTTP/2 connection each (default 8)
  --in-flight N         events in flight per agent (default 1000)
  --warmup S            seconds before measuring (default 3)
  --duration S          seconds measured (default 20)
  --server dist|tsx     built JavaScript (default) or src/main.ts through tsx
  --timed N             subscribers that time the probe's alerts (default 20)
  --probe-rate N        alerts per second of the probe agent (default 50)
  --quiet-wait S        before each scenario, wait up to S seconds for the machine to be
                        idle (< ${quietCores} cores busy) (default 120; 0 with --quick)
  --profile             run the server with --cpu-prof (profiles in bench/results/profiles/)
  --database-url URL    PostgreSQL admin URL (default $BENCH_DATABASE_URL, $TEST_DATABASE_URL
                        or postgres://postgres@127.0.0.1:5432/postgres)
  --no-write            print the table only; write nothing under bench/results
  --write               write the results of a --quick run too (not written by default)
`;

/** One subscriber configuration. */
interface Scenario {
  readonly label: string;
  readonly subscribers: number;
  readonly version: 0 | 1;
}

interface Options {
  readonly quick: boolean;
  readonly runs: number;
  readonly scenarios: readonly Scenario[];
  readonly agents: number;
  readonly inFlight: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly server: "dist" | "tsx";
  readonly timed: number;
  readonly probeRate: number;
  readonly quietWaitMs: number;
  readonly profile: boolean;
  readonly databaseUrl: string;
  readonly write: boolean;
}

class UsageError extends Error {}

function parseScenario(text: string): Scenario {
  const m = /^(\d+)(v[01])?$/.exec(text.trim());
  if (m === null)
    throw new UsageError(`bad scenario ${JSON.stringify(text)}: expected e.g. 100 or 100v0`);
  const subscribers = Number(m[1]);
  const version = m[2] === "v0" ? 0 : 1;
  const label = subscribers === 0 ? "0" : `${subscribers} × v${version}`;
  return { label, subscribers, version };
}

function parseOptions(argv: readonly string[]): Options | undefined {
  const quick = argv.includes("--quick");
  const opts = {
    quick,
    runs: 1,
    scenarios: ["0", "100", "1000"].map(parseScenario),
    agents: 8,
    inFlight: 1000,
    warmupMs: quick ? 1_000 : 3_000,
    durationMs: quick ? 4_000 : 20_000,
    server: (quick ? "tsx" : "dist") as "dist" | "tsx",
    timed: 20,
    probeRate: 50,
    quietWaitMs: quick ? 0 : 120_000,
    profile: false,
    databaseUrl:
      process.env.BENCH_DATABASE_URL ??
      process.env.TEST_DATABASE_URL ??
      "postgres://postgres@127.0.0.1:5432/postgres",
    write: !quick,
  };
  const positive = (name: string, raw: string | undefined): number => {
    const n = Number(raw);
    if (raw === undefined || !Number.isFinite(n) || n <= 0)
      throw new UsageError(`${name} needs a positive number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const value = (): string | undefined => argv[++i];
    switch (arg) {
      case "--help":
      case "-h":
        process.stdout.write(usage);
        return undefined;
      case "--quick":
        break;
      case "--runs":
        opts.runs = Math.floor(positive(arg, value()));
        break;
      case "--scenarios":
        opts.scenarios = (value() ?? "").split(",").map(parseScenario);
        break;
      case "--agents":
        opts.agents = Math.floor(positive(arg, value()));
        break;
      case "--in-flight":
        opts.inFlight = Math.floor(positive(arg, value()));
        break;
      case "--warmup":
        opts.warmupMs = positive(arg, value()) * 1000;
        break;
      case "--duration":
        opts.durationMs = positive(arg, value()) * 1000;
        break;
      case "--server": {
        const v = value();
        if (v !== "dist" && v !== "tsx") throw new UsageError("--server takes dist or tsx");
        opts.server = v;
        break;
      }
      case "--timed":
        opts.timed = Math.floor(positive(arg, value()));
        break;
      case "--probe-rate":
        opts.probeRate = positive(arg, value());
        break;
      case "--quiet-wait":
        opts.quietWaitMs = Number(value()) * 1000;
        if (!Number.isFinite(opts.quietWaitMs) || opts.quietWaitMs < 0)
          throw new UsageError("--quiet-wait needs a number of seconds");
        break;
      case "--profile":
        opts.profile = true;
        break;
      case "--database-url":
        opts.databaseUrl = value() ?? "";
        break;
      case "--no-write":
        opts.write = false;
        break;
      case "--write":
        opts.write = true;
        break;
      default:
        throw new UsageError(`unknown option ${arg}`);
    }
  }
  if (!opts.scenarios.some((s) => s.subscribers === 0)) {
    throw new UsageError("--scenarios must include 0 (the baseline)");
  }
  return opts;
}

/** What one scenario measured in one run. */
type ScenarioResult = LoadResult & {
  readonly label: string;
  readonly subscribers: number;
  readonly version: 0 | 1;
  readonly run: number;
  /** Busy cores just before the scenario started (undefined: not checked). */
  readonly busyBefore: number | undefined;
  readonly loadAverageBefore: number;
  readonly profileDir: string | undefined;
};

async function runScenario(
  o: Options,
  entry: ServerEntry,
  scenario: Scenario,
  run: number,
  profileRoot: string,
): Promise<ScenarioResult> {
  const busyBefore = await waitForQuiet(o.quietWaitMs, quietCores, (busy) =>
    process.stderr.write(`(machine busy: ${busy.toFixed(2)} cores; waiting) `),
  );
  const loadAverageBefore = loadavg()[0] ?? 0;
  const profileDir = o.profile
    ? join(profileRoot, `${scenario.label.replace(/\W+/g, "") || "0"}-run${run}`)
    : undefined;
  const r = await runLoad({
    repoRoot,
    entry,
    adminUrl: o.databaseUrl,
    agents: o.agents,
    inFlight: o.inFlight,
    ratePerAgent: 0,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    subscribers:
      scenario.subscribers > 0
        ? { count: scenario.subscribers, version: scenario.version, timed: o.timed, stall: false }
        : undefined,
    probeRate: o.probeRate,
    finishTimeoutMs: 30_000,
    profileDir,
    onStatus: () => {},
  });
  return {
    ...r,
    label: scenario.label,
    subscribers: scenario.subscribers,
    version: scenario.version,
    run,
    busyBefore,
    loadAverageBefore,
    profileDir,
  };
}

const fixed = (n: number | undefined, digits = 0): string =>
  n === undefined ? "–" : n.toFixed(digits);
const pair = (d: { p50: number | undefined; p99: number | undefined }, digits = 1): string =>
  `${fixed(d.p50, digits)} / ${fixed(d.p99, digits)}`;

/** p50 and p99 (medians over runs). */
interface Percentiles {
  readonly p50: number | undefined;
  readonly p99: number | undefined;
}

/** The medians of every run of one scenario, as a table row's numbers. */
interface SummaryRow {
  readonly label: string;
  readonly runs: number;
  readonly ingestPerSecond: number | undefined;
  readonly ratioToBaseline: number | undefined;
  readonly sendToAckMs: Percentiles;
  readonly probeSendToAckMs: Percentiles;
  readonly commitToAckMs: Percentiles;
  readonly commitToWsMs: Percentiles;
  readonly commitToWsLastSubscriberMs: Percentiles;
  readonly ackToWsMs: Percentiles;
  readonly sendToWsMs: Percentiles;
  /** Server CPU per ingested alert, µs. */
  readonly serverCpuUsPerAlert: number | undefined;
  /** Fraction of (stored alert × subscriber) deliveries that arrived. */
  readonly delivered: number | undefined;
  readonly cpu: { readonly [K in keyof CpuCores]: number | undefined };
  /** Every run stored exactly the ACKed alerts and answered every event. */
  readonly consistent: boolean;
}

type DistributionKey =
  | "sendToAckMs"
  | "probeSendToAckMs"
  | "commitToAckMs"
  | "commitToWsMs"
  | "commitToWsLastSubscriberMs"
  | "ackToWsMs"
  | "sendToWsMs";

function summarize(
  scenarios: readonly Scenario[],
  results: readonly ScenarioResult[],
): SummaryRow[] {
  const baseline = median(results.filter((r) => r.subscribers === 0).map((r) => r.ingestPerSecond));
  return scenarios.map((s) => {
    const rs = results.filter((r) => r.label === s.label);
    const m = (f: (r: ScenarioResult) => number | undefined): number | undefined =>
      median(rs.map(f));
    const percentiles = (k: DistributionKey): Percentiles => ({
      p50: m((r) => r[k].p50),
      p99: m((r) => r[k].p99),
    });
    const ingest = m((r) => r.ingestPerSecond);
    const cpuKeys = [
      "server",
      "subscribers",
      "loadGenerator",
      "postgres",
      "machineBusy",
      "irq",
      "steal",
      "other",
    ] as const;
    const cpu = Object.fromEntries(
      cpuKeys.map((k) => [k, m((r) => r.cpu[k])]),
    ) as SummaryRow["cpu"];
    return {
      label: s.label,
      runs: rs.length,
      ingestPerSecond: ingest,
      ratioToBaseline: ingest !== undefined && baseline ? ingest / baseline : undefined,
      sendToAckMs: percentiles("sendToAckMs"),
      probeSendToAckMs: percentiles("probeSendToAckMs"),
      commitToAckMs: percentiles("commitToAckMs"),
      commitToWsMs: percentiles("commitToWsMs"),
      commitToWsLastSubscriberMs: percentiles("commitToWsLastSubscriberMs"),
      ackToWsMs: percentiles("ackToWsMs"),
      sendToWsMs: percentiles("sendToWsMs"),
      serverCpuUsPerAlert: m((r) => (r.cpu.server * 1e6) / r.ingestPerSecond),
      delivered:
        s.subscribers === 0
          ? undefined
          : m((r) =>
              r.subscribersInfo && r.subscribersInfo.expectedAlerts > 0
                ? r.subscribersInfo.alertsReceived / r.subscribersInfo.expectedAlerts
                : undefined,
            ),
      cpu,
      consistent: rs.every(
        (r) =>
          r.rowsStored === r.acked &&
          r.unanswered === 0 &&
          r.errors === 0 &&
          r.agentFailures.length === 0,
      ),
    };
  });
}

function markdown(
  o: Options,
  code: CodeVersion,
  machine: Machine,
  startedAt: Date,
  rows: readonly SummaryRow[],
  results: readonly ScenarioResult[],
): string {
  const lines: string[] = [];
  const runs = `${o.runs} run${o.runs === 1 ? "" : "s"}${o.runs > 1 ? " (medians)" : ""}`;
  lines.push(`## Fan-out benchmark, ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC`);
  lines.push("");
  lines.push(
    `Machine: ${machine.cores} × ${machine.cpuModel}, ${machine.memoryGiB} GiB RAM; Node ${machine.node}; PostgreSQL ${machine.postgres}; server, subscribers, agents and PostgreSQL all on this machine.  `,
  );
  lines.push(
    `Server: ${o.server === "dist" ? "node dist/main.js" : "node --import tsx src/main.ts"} (child process), default settings (flush 100 ms, batch 1000, 2 concurrent flushes); code ${code.commit} ${code.subject}${code.uncommitted.length > 0 ? ` plus uncommitted changes (${code.uncommitted.join(", ")})` : ""}.  `,
  );
  lines.push(
    `Load: ${o.agents} agents over gRPC (HTTP/2), ${o.inFlight} events in flight each, plus a probe agent at ${o.probeRate} alerts/s; ${o.warmupMs / 1000} s warm-up + ${o.durationMs / 1000} s measured; ${runs}${o.quick ? "; QUICK smoke run" : ""}.`,
  );
  lines.push("");
  lines.push(
    "| Subscribers | Ingest (alerts/s) | vs 0 | send→ACK p50 / p99 (ms) | commit→ACK p50 / p99 | commit→WS p50 / p99 | ACK→WS p50 / p99 | Delivered | Server CPU µs/alert | CPU server / subs / agents / PG / irq (cores) | Machine busy (other) |",
  );
  lines.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
  for (const r of rows) {
    const ratio =
      r.ratioToBaseline === undefined ? "–" : `${(r.ratioToBaseline * 100).toFixed(0)}%`;
    const delivered = r.delivered === undefined ? "–" : `${(r.delivered * 100).toFixed(1)}%`;
    const c = r.cpu;
    lines.push(
      `| ${r.label} | ${fixed(r.ingestPerSecond)} | ${ratio} | ${pair(r.sendToAckMs)} | ${pair(r.commitToAckMs)} | ${pair(r.commitToWsMs)} | ${pair(r.ackToWsMs)} | ${delivered} | ${fixed(r.serverCpuUsPerAlert)} | ${fixed(c.server, 2)} / ${fixed(c.subscribers, 2)} / ${fixed(c.loadGenerator, 2)} / ${fixed(c.postgres, 2)} / ${fixed(c.irq, 2)} | ${fixed(c.machineBusy, 2)} (${fixed(c.other, 2)}) |`,
    );
  }
  lines.push("");
  for (const r of rows) {
    if (r.ratioToBaseline === undefined || r.label === "0") continue;
    lines.push(
      `- ${r.label}: ingest at ${(r.ratioToBaseline * 100).toFixed(0)}% of the 0-subscriber rate — goal ≥ ${goalRatio * 100}%: **${r.ratioToBaseline >= goalRatio ? "met" : "not met"}**.`,
    );
  }
  const bad = rows.filter((r) => !r.consistent).map((r) => r.label);
  lines.push(
    bad.length === 0
      ? "- Every run: rows stored = ACKs, every event answered, no ERROR replies."
      : `- **Inconsistent** (rows ≠ ACKs, unanswered events, ERRORs or agent failures) in: ${bad.join(", ")}; see the JSON.`,
  );
  const failures = [...new Set(results.flatMap((r) => r.agentFailures))];
  if (failures.length > 0) lines.push(`- Agent failures: ${failures.join("; ")}`);
  for (const r of results) {
    const info = r.subscribersInfo;
    if (info === undefined) continue;
    // 1006: no close frame, i.e. the server terminated the connection (missed ping).
    const closes = Object.entries(info.closedByServer).map(
      ([code, n]) => `${n} × ${code}${code === "1006" ? " (terminated)" : ""}`,
    );
    const problems = [
      closes.length > 0 ? `closed by the server: ${closes.join(", ")}` : "",
      info.droppedReported > 0 ? `${info.droppedReported} deliveries reported dropped` : "",
      info.gaps > 0 ? `${info.gaps} deliveries missing unreported` : "",
      info.caughtUp < info.subscribers
        ? `${info.subscribers - info.caughtUp} subscribers never caught up`
        : "",
      r.timedMissing > 0 ? `${r.timedMissing} probe deliveries missing` : "",
      r.commitsMissed > 0 ? `${r.commitsMissed} probe commits not announced` : "",
    ].filter((p) => p !== "");
    if (problems.length > 0) lines.push(`- ${r.label}, run ${r.run}: ${problems.join("; ")}.`);
  }
  lines.push(
    `- send→ACK: at the load agents (pipelined, up to ${o.inFlight} in flight each, so it includes their own queueing). ` +
      `Commit and delivery times come from a probe agent that sends ${o.probeRate} alerts/s from an otherwise idle process: ` +
      "a trigger the benchmark adds to its own database NOTIFYs each probe alert's id, which PostgreSQL delivers when the batch commits; the probe stamps that and the ACK; " +
      `${o.timed} timed subscribers (spread over the connection order, the last one included) stamp the frame that carries it. ` +
      "commit→WS = frame arrival − commit notification; ACK→WS = frame arrival − ACK read (negative when the frame arrives before the ACK); one clock for all processes.",
  );
  const busy = results.map((r) => fixed(r.busyBefore, 2)).join(", ");
  lines.push(
    `- Machine before each scenario: busy cores ${busy}; load average ${results.map((r) => r.loadAverageBefore.toFixed(1)).join(", ")}. "irq" is interrupt and softirq time (loopback TCP), charged to no process; "other" is the rest outside the measured parties (PostgreSQL's background processes, hypervisor steal excluded, anything else running).`,
  );
  return `${lines.join("\n")}\n`;
}

async function main(argv: readonly string[]): Promise<number> {
  let o: Options | undefined;
  try {
    o = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench:fanout: ${err.message}\n\n${usage}`);
    return 2;
  }
  if (o === undefined) return 0;
  const startedAt = new Date();
  const stamp = startedAt.toISOString().slice(0, 19).replace(/:/g, "-");
  const resultsDir = join(repoRoot, "bench/results");
  undoOnSignals();
  const machine = await describeMachine(o.databaseUrl);
  // Read right before the build: what the numbers are about.
  const code = codeVersion(repoRoot);

  process.stderr.write(
    o.server === "dist" ? "building the server (tsc)…\n" : "server: src/main.ts through tsx\n",
  );
  const entry: ServerEntry = o.server === "dist" ? await buildServer(repoRoot) : { kind: "tsx" };
  const results: ScenarioResult[] = [];
  try {
    for (let run = 1; run <= o.runs; run++) {
      for (const scenario of o.scenarios) {
        process.stderr.write(`run ${run}/${o.runs}: ${scenario.label} subscribers… `);
        const r = await runScenario(o, entry, scenario, run, join(resultsDir, "profiles", stamp));
        results.push(r);
        process.stderr.write(
          `${r.ingestPerSecond.toFixed(0)} alerts/s; send→ACK ${pair(r.sendToAckMs)} ms; commit→ACK ${pair(r.commitToAckMs)}; commit→WS ${pair(r.commitToWsMs)} (last subscriber ${pair(r.commitToWsLastSubscriberMs)}); ACK→WS ${pair(r.ackToWsMs)} ms; CPU server ${r.cpu.server.toFixed(2)} subs ${r.cpu.subscribers.toFixed(2)} agents ${r.cpu.loadGenerator.toFixed(2)} pg ${r.cpu.postgres.toFixed(2)} irq ${r.cpu.irq.toFixed(2)} steal ${r.cpu.steal.toFixed(2)} other ${r.cpu.other.toFixed(2)}\n`,
        );
      }
    }
  } finally {
    if (entry.kind === "dist") await entry.cleanup();
  }

  const rows = summarize(o.scenarios, results);
  const md = markdown(o, code, machine, startedAt, rows, results);
  process.stdout.write(`\n${md}`);
  if (o.write) {
    await mkdir(resultsDir, { recursive: true });
    const base = join(resultsDir, `fanout-${stamp}${o.quick ? "-quick" : ""}`);
    await writeFile(`${base}.md`, md);
    await writeFile(
      `${base}.json`,
      `${JSON.stringify({ startedAt, code, machine, options: o, summary: rows, results }, null, 2)}\n`,
    );
    process.stderr.write(`wrote ${base}.md and .json\n`);
  }
  return rows.every((r) => r.consistent) ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `bench:fanout failed: ${err instanceof Error ? err.stack : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
