/**
 * The benchmark suite (`npm run bench`): the seven scenarios of issue 5, measured side
 * by side with the limits of the same machine, on real servers, real PostgreSQL and
 * real clients. Writes a Markdown table and a JSON file to bench/results/ and exits
 * non-zero if any run lost or invented work (rows stored ≠ ACKs, unanswered events,
 * failed streams) or crashed.
 *
 * Usage: npm run bench -- [--quick] [--runs N] [--scenarios LIST] …  (--help for all)
 */
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config.js";
import { stopping, undoAll, undoOnSignals } from "./lib/cleanup.js";
import { codeVersion, describeMachine, waitForQuiet } from "./lib/machine.js";
import { median } from "./lib/percentiles.js";
import { Progress } from "./lib/progress.js";
import type { BenchSettings, Metrics, Outcome, Scenario, TableRow } from "./lib/scenario.js";
import { buildServer, type ServerEntry } from "./lib/server-process.js";
import { ackLatency } from "./scenarios/ack-latency.js";
import { dbCeiling } from "./scenarios/db-ceiling.js";
import { fanout } from "./scenarios/fanout.js";
import { ingest } from "./scenarios/ingest.js";
import { rpcHeadroom } from "./scenarios/rpc-headroom.js";
import { slowSubscribers } from "./scenarios/slow-subscribers.js";
import { storm } from "./scenarios/storm.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const scenarios: readonly Scenario[] = [
  dbCeiling,
  ingest,
  ackLatency,
  fanout,
  slowSubscribers,
  rpcHeadroom,
  storm,
];
/** Below this many busy cores the machine counts as quiet enough to start a scenario. */
const quietCores = 0.3;

const usage = `Usage: npm run bench -- [options]

  --quick               smoke run of about a minute: 1 s warm-up, 3 s windows, 5 s stall,
                        10 000-alert storm, server through tsx, no waiting for a quiet machine
  --runs N              run every scenario N times; the table shows medians (default 1)
  --scenarios LIST      numbers or names, comma-separated (default all):
${scenarios.map((s) => `                          ${s.number} ${s.id}${s.needs.length > 0 ? ` (runs ${s.needs.join(", ")} too)` : ""}`).join("\n")}
  --agents N            simulated agents, one HTTP/2 connection each (default 8)
  --in-flight N         events in flight per agent (default 1000)
  --warmup S            seconds before each measured window (default 3)
  --duration S          seconds measured per load window (default 20)
  --stall S             seconds the stalled subscribers stop reading (default 60)
  --storm N             alerts the storm agent bursts (default 50000)
  --server dist|tsx     built JavaScript (default) or src/main.ts through tsx
  --subscriber-version 0|1
                        feed protocol of the subscribers (default 1)
  --timed N             subscribers that time the probe's alerts (default 20)
  --probe-rate N        alerts per second of the probe agent (default 50)
  --quiet-wait S        before each scenario, wait up to S seconds for the machine to be
                        idle (< ${quietCores} cores busy) (default 120; 0 with --quick)
  --profile             run the servers with --cpu-prof (bench/results/profiles/<stamp>/)
  --database-url URL    PostgreSQL admin URL (default $BENCH_DATABASE_URL, $TEST_DATABASE_URL
                        or postgres://postgres@127.0.0.1:5432/postgres); it must be allowed
                        to create databases
  --no-write            print the table only; write nothing under bench/results
`;

/** The command line, parsed. */
interface Options {
  readonly quick: boolean;
  readonly runs: number;
  readonly selected: readonly Scenario[];
  readonly agents: number;
  readonly inFlight: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly stallMs: number;
  readonly stormAlerts: number;
  readonly server: "dist" | "tsx";
  readonly subscriberVersion: 0 | 1;
  readonly timed: number;
  readonly probeRate: number;
  readonly quietWaitMs: number;
  readonly profile: boolean;
  readonly databaseUrl: string;
  readonly write: boolean;
}

class UsageError extends Error {}

/** The scenarios named in `list`, plus what they need, in the issue's order. */
function selectScenarios(list: string): Scenario[] {
  const wanted = new Set<Scenario>();
  const add = (s: Scenario): void => {
    if (wanted.has(s)) return;
    wanted.add(s);
    for (const need of s.needs) add(scenarios.find((n) => n.id === need) as Scenario);
  };
  for (const name of list.split(",").map((n) => n.trim())) {
    if (name === "") continue;
    const s = scenarios.find((c) => c.id === name || String(c.number) === name);
    if (s === undefined) {
      throw new UsageError(
        `unknown scenario ${JSON.stringify(name)}: expected 1–7 or one of ${scenarios.map((c) => c.id).join(", ")}`,
      );
    }
    add(s);
  }
  if (wanted.size === 0) throw new UsageError("--scenarios needs at least one scenario");
  return scenarios.filter((s) => wanted.has(s));
}

function parseOptions(argv: readonly string[]): Options | undefined {
  const quick = argv.includes("--quick");
  const o = {
    quick,
    runs: 1,
    selected: scenarios,
    agents: 8,
    inFlight: 1000,
    warmupMs: quick ? 1_000 : 3_000,
    durationMs: quick ? 3_000 : 20_000,
    stallMs: quick ? 5_000 : 60_000,
    stormAlerts: quick ? 10_000 : 50_000,
    server: (quick ? "tsx" : "dist") as "dist" | "tsx",
    subscriberVersion: 1 as 0 | 1,
    timed: 20,
    probeRate: 50,
    quietWaitMs: quick ? 0 : 120_000,
    profile: false,
    databaseUrl:
      process.env.BENCH_DATABASE_URL ??
      process.env.TEST_DATABASE_URL ??
      "postgres://postgres@127.0.0.1:5432/postgres",
    write: true,
  };
  const positive = (name: string, raw: string | undefined): number => {
    const n = Number(raw);
    if (raw === undefined || !Number.isFinite(n) || n <= 0)
      throw new UsageError(`${name} needs a positive number, got ${JSON.stringify(raw ?? "")}`);
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
        o.runs = Math.floor(positive(arg, value()));
        break;
      case "--scenarios":
        o.selected = selectScenarios(value() ?? "");
        break;
      case "--agents":
        o.agents = Math.floor(positive(arg, value()));
        break;
      case "--in-flight":
        o.inFlight = Math.floor(positive(arg, value()));
        break;
      case "--warmup":
        o.warmupMs = positive(arg, value()) * 1000;
        break;
      case "--duration":
        o.durationMs = positive(arg, value()) * 1000;
        break;
      case "--stall":
        o.stallMs = positive(arg, value()) * 1000;
        break;
      case "--storm":
        o.stormAlerts = Math.floor(positive(arg, value()));
        break;
      case "--server": {
        const v = value();
        if (v !== "dist" && v !== "tsx")
          throw new UsageError(`--server takes dist or tsx, got ${JSON.stringify(v ?? "")}`);
        o.server = v;
        break;
      }
      case "--subscriber-version": {
        const v = value();
        if (v !== "0" && v !== "1")
          throw new UsageError(`--subscriber-version takes 0 or 1, got ${JSON.stringify(v ?? "")}`);
        o.subscriberVersion = v === "0" ? 0 : 1;
        break;
      }
      case "--timed":
        o.timed = Math.floor(positive(arg, value()));
        break;
      case "--probe-rate":
        o.probeRate = positive(arg, value());
        break;
      case "--quiet-wait": {
        const raw = value();
        o.quietWaitMs = Number(raw) * 1000;
        if (raw === undefined || !Number.isFinite(o.quietWaitMs) || o.quietWaitMs < 0)
          throw new UsageError(
            `--quiet-wait needs a number of seconds ≥ 0, got ${JSON.stringify(raw ?? "")}`,
          );
        break;
      }
      case "--profile":
        o.profile = true;
        break;
      case "--database-url":
        o.databaseUrl = value() ?? "";
        break;
      case "--no-write":
        o.write = false;
        break;
      default:
        throw new UsageError(`unknown option ${JSON.stringify(arg)}`);
    }
  }
  return o;
}

/** One run of one scenario, as the JSON file keeps it. */
interface RunRecord {
  readonly scenario: string;
  readonly run: number;
  readonly seconds: number;
  readonly busyCoresBefore: number | undefined;
  readonly loadAverageBefore: number;
  readonly outcome: Outcome | undefined;
  readonly error: string | undefined;
}

function medians(records: readonly RunRecord[]): Map<string, Metrics> {
  const out = new Map<string, Metrics>();
  const ids = [...new Set(records.map((r) => r.scenario))];
  for (const id of ids) {
    const runs = records.filter((r) => r.scenario === id && r.outcome !== undefined);
    const keys = new Set(runs.flatMap((r) => Object.keys(r.outcome?.metrics ?? {})));
    const m: Record<string, number | undefined> = {};
    for (const key of keys) m[key] = median(runs.map((r) => r.outcome?.metrics[key]));
    out.set(id, m);
  }
  return out;
}

const metText = (met: boolean | undefined, goal: string): string =>
  goal.startsWith("–") ? "" : met === undefined ? "?" : met ? "yes" : "**no**";

function markdown(
  o: Options,
  settings: BenchSettings,
  head: {
    startedAt: Date;
    code: ReturnType<typeof codeVersion>;
    machine: Awaited<ReturnType<typeof describeMachine>>;
  },
  rows: readonly TableRow[],
  records: readonly RunRecord[],
): string {
  const { startedAt, code, machine } = head;
  const lines: string[] = [];
  const when = startedAt.toISOString().slice(0, 16).replace("T", " ");
  lines.push(`## TripWire benchmark, ${when} UTC${o.quick ? " (quick run)" : ""}`);
  lines.push("");
  lines.push(
    `Machine: ${machine.cores} × ${machine.cpuModel}, ${machine.memoryGiB} GiB RAM; Node ${machine.node}; PostgreSQL ${machine.postgres}; server, PostgreSQL and load generators all on this machine.  `,
  );
  lines.push(
    `Code: ${code.commit} (${code.subject})${code.uncommitted.length > 0 ? ` plus uncommitted changes to ${code.uncommitted.length} file(s)` : ""}; server ${o.server === "dist" ? "node dist/main.js" : "src/main.ts through tsx"}, default settings (flush ${settings.flushIntervalMs} ms).  `,
  );
  lines.push(
    `Load: ${o.agents} gRPC agents, ${o.inFlight} in flight each; ${o.warmupMs / 1000} s warm-up + ${o.durationMs / 1000} s measured per window; ${o.runs} run${o.runs === 1 ? "" : "s"}${o.runs > 1 ? " (medians)" : ""}.${o.quick ? " **Quick smoke run: short windows, figures are rough.**" : ""}`,
  );
  lines.push("");
  lines.push("| Scenario | Measure | Result | Goal | Met |");
  lines.push("|---|---|--:|---|:-:|");
  for (const r of rows) {
    lines.push(
      `| ${r.scenario} | ${r.measure} | ${r.result} | ${r.goal} | ${metText(r.met, r.goal)} |`,
    );
  }
  lines.push("");
  const failed = records.filter((r) => r.error !== undefined);
  for (const r of failed) lines.push(`- **${r.scenario}, run ${r.run} failed:** ${r.error}`);
  const inconsistent = records.filter((r) => r.outcome !== undefined && !r.outcome.consistent);
  lines.push(
    inconsistent.length === 0 && failed.length === 0
      ? "- Every run: rows stored = ACKs, every event answered, no stream failed."
      : `- **Inconsistent runs:** ${inconsistent.map((r) => `${r.scenario} (run ${r.run})`).join(", ") || "none"}; see the notes and the JSON.`,
  );
  for (const r of records) {
    for (const note of r.outcome?.notes ?? []) lines.push(`- Run ${r.run}, ${note}`);
  }
  const busy = records.map((r) =>
    r.busyCoresBefore === undefined ? "–" : r.busyCoresBefore.toFixed(2),
  );
  lines.push(
    `- Machine before each scenario: busy cores ${busy.join(", ")}; load average ${records.map((r) => r.loadAverageBefore.toFixed(1)).join(", ")}.`,
  );
  return `${lines.join("\n")}\n`;
}

async function main(argv: readonly string[]): Promise<number> {
  let o: Options | undefined;
  try {
    o = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n\n${usage}`);
    return 2;
  }
  if (o === undefined) return 0;
  undoOnSignals();
  const progress = new Progress();
  const startedAt = new Date();
  const stamp = startedAt.toISOString().slice(0, 19).replace(/:/g, "-");
  const resultsDir = join(repoRoot, "bench/results");
  const machine = await describeMachine(o.databaseUrl);
  // Read right before the build: what the numbers are about.
  const code = codeVersion(repoRoot);
  progress.note(
    o.server === "dist" ? "building the server (tsc)…" : "server: src/main.ts through tsx",
  );
  const entry: ServerEntry = o.server === "dist" ? await buildServer(repoRoot) : { kind: "tsx" };
  const settings: BenchSettings = {
    repoRoot,
    quick: o.quick,
    adminUrl: o.databaseUrl,
    entry,
    agents: o.agents,
    inFlight: o.inFlight,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    stallMs: o.stallMs,
    stormAlerts: o.stormAlerts,
    subscriberVersion: o.subscriberVersion,
    timedSubscribers: o.timed,
    probeRate: o.probeRate,
    finishTimeoutMs: o.quick ? 10_000 : 30_000,
    profileDir: o.profile ? join(resultsDir, "profiles", stamp) : undefined,
    flushIntervalMs: loadConfig({}).flushIntervalMs,
  };
  const records: RunRecord[] = [];
  const total = o.selected.length * o.runs;
  try {
    for (let run = 1; run <= o.runs; run++) {
      const earlier = new Map<string, Metrics>();
      for (const scenario of o.selected) {
        if (stopping()) break;
        progress.begin(
          `${records.length + 1}/${total} ${scenario.number}. ${scenario.id}${o.runs > 1 ? ` run ${run}` : ""}`,
        );
        const busyCoresBefore = await waitForQuiet(o.quietWaitMs, quietCores, (busy, waited) =>
          progress.status(
            `machine busy (${busy.toFixed(2)} cores), waiting ${(waited / 1000).toFixed(0)} s`,
          ),
        );
        const loadAverageBefore = loadavg()[0] ?? 0;
        const began = performance.now();
        let outcome: Outcome | undefined;
        let error: string | undefined;
        try {
          outcome = await scenario.run({ settings, earlier, onStatus: (t) => progress.status(t) });
          earlier.set(scenario.id, outcome.metrics);
        } catch (err) {
          error = err instanceof Error ? (err.stack ?? err.message) : String(err);
        }
        const seconds = (performance.now() - began) / 1000;
        records.push({
          scenario: scenario.id,
          run,
          seconds,
          busyCoresBefore,
          loadAverageBefore,
          outcome,
          error,
        });
        progress.end(
          error !== undefined
            ? `FAILED: ${error.split("\n")[0]}`
            : `done in ${seconds.toFixed(0)} s${outcome?.consistent === false ? " — INCONSISTENT" : ""}`,
        );
      }
    }
  } finally {
    if (entry.kind === "dist") await entry.cleanup();
  }

  // Interrupted: the scenarios failed as their processes died; nothing to report.
  if (stopping()) return 130;
  const byScenario = medians(records);
  const ran = o.selected.filter((s) => byScenario.has(s.id));
  const rows = ran.flatMap((s) => s.rows(byScenario, settings));
  const md = markdown(o, settings, { startedAt, code, machine }, rows, records);
  process.stdout.write(`\n${md}`);
  if (o.write) {
    await mkdir(resultsDir, { recursive: true });
    const base = join(resultsDir, `bench-${stamp}${o.quick ? "-quick" : ""}`);
    const { entry: _entry, ...plainSettings } = settings;
    // The results may be shared: keep a password in the URL out of them.
    const adminUrl = new URL(settings.adminUrl);
    if (adminUrl.password !== "") adminUrl.password = "***";
    plainSettings.adminUrl = adminUrl.toString();
    await writeFile(`${base}.md`, md);
    await writeFile(
      `${base}.json`,
      `${JSON.stringify(
        {
          startedAt,
          quick: o.quick,
          code,
          machine,
          settings: plainSettings,
          table: rows,
          medians: Object.fromEntries(byScenario),
          runs: records,
        },
        null,
        2,
      )}\n`,
    );
    progress.note(`wrote ${base}.md and .json`);
  }
  const ok = records.every((r) => r.error === undefined && r.outcome?.consistent === true);
  return ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    await undoAll();
    process.exitCode = 1;
  },
);
