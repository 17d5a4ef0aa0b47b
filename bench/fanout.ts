/**
 * Fan-out benchmark: ingest throughput with 0, 100 and 1000 WebSocket subscribers
 * connected, and how long a committed alert takes to reach a subscriber's socket.
 *
 * Four kinds of process share the machine, as they would share a small host:
 * - the server (`node dist/main.js`, built into a temporary directory; or tsx) on a
 *   fresh PostgreSQL database, with its default settings (flush 100 ms, batch 1000);
 * - the subscribers (bench/lib/subscriber-process.ts), version-1 `/ws` clients by default;
 * - this process, the load generator: simulated agents over gRPC (HTTP/2), each
 *   pipelining up to `--in-flight` events, as fast as the server ACKs them;
 * - a probe agent (bench/lib/probe-process.ts) that sends a few alerts per second from
 *   an otherwise idle process and stamps their commit (LISTEN/NOTIFY from a trigger the
 *   benchmark adds to its own database) and their ACK.
 *
 * Ingest is load-agent ACKs per second during the measured window (after a warm-up);
 * afterwards the stored row count must equal the ACKs. Latency: send→ACK at the load
 * agents; for the probe's alerts, commit→ACK, commit→WebSocket and ACK→WebSocket, where
 * "WebSocket" is when a timed subscriber's frame carrying the alert arrived. Every
 * process stamps with the same clock (performance.timeOrigin + performance.now()).
 *
 * Usage: npm run bench:fanout -- [--quick] [--runs N] [--scenarios 0,100,1000,100v0] …
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pg from "pg";
import { startSimulatedAgent } from "../src/cli/simulated-agent.js";
import { AlertService } from "../src/gen/alert/alert_pb.js";
import {
  type Child,
  commitTriggerSql,
  type FinishSubscribers,
  forkChild,
  type ProbeReady,
  type ProbeResult,
  type StartProbe,
  type StartSubscribers,
  type StopProbe,
  type SubscribersReady,
  type SubscribersResult,
} from "./lib/ipc.js";
import { type Distribution, distribution, median, SampleBuffer } from "./lib/percentiles.js";
import { CpuMeter, machineCpu } from "./lib/proc-stats.js";
import {
  buildServer,
  type ServerEntry,
  type ServerProcess,
  startServerProcess,
} from "./lib/server-process.js";

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

/** CPU use during the measured window, in cores (CPU seconds per second). */
interface CpuCores {
  readonly server: number;
  readonly subscribers: number;
  readonly loadGenerator: number;
  /** The PostgreSQL backends of the benchmark's database. */
  readonly postgres: number;
  /** All cores, every process. */
  readonly machineBusy: number;
  /** Interrupts and softirqs (loopback TCP is mostly here), charged to no process. */
  readonly irq: number;
  /** CPU the hypervisor gave to other guests while this one wanted it. */
  readonly steal: number;
  /** machineBusy minus all the above: PostgreSQL's background processes, anything else running. */
  readonly other: number;
}

/** What one scenario measured in one run. */
interface ScenarioResult {
  readonly label: string;
  readonly subscribers: number;
  readonly version: 0 | 1;
  readonly run: number;
  readonly windowSeconds: number;
  /** ACKs per second in the window. */
  readonly ingestPerSecond: number;
  readonly sent: number;
  readonly acked: number;
  readonly errors: number;
  /** Events that never got a reply. */
  readonly unanswered: number;
  readonly agentFailures: readonly string[];
  /** Rows in the alerts table afterwards; must equal `acked`. */
  readonly rowsStored: number;
  /** send→ACK at the load agents (pipelined, thousands in flight), ms. */
  readonly sendToAckMs: Distribution;
  /** send→ACK at the probe agent (a few alerts per second, idle process), ms. */
  readonly probeSendToAckMs: Distribution;
  /** Commit (NOTIFY from the benchmark's trigger) → probe ACK read, ms. */
  readonly commitToAckMs: Distribution;
  /** Commit → frame at a timed subscriber, ms, over (probe alert, timed subscriber). */
  readonly commitToWsMs: Distribution;
  /** The same, for the subscriber that subscribed last (written to last). */
  readonly commitToWsLastSubscriberMs: Distribution;
  /** Probe ACK read → frame at a timed subscriber, ms, over (probe alert, timed subscriber). */
  readonly ackToWsMs: Distribution;
  /** Probe send → frame at a timed subscriber: agent to browser, end to end, ms. */
  readonly sendToWsMs: Distribution;
  /** Probe alerts × timed subscribers that never arrived. */
  readonly timedMissing: number;
  /** Probe alerts in the window whose commit notification never came. */
  readonly commitsMissed: number;
  readonly subscribersInfo:
    | (Omit<SubscribersReady, "type"> &
        Omit<SubscribersResult, "type" | "timed"> & {
          /** Every subscriber should have received every stored alert. */
          readonly expectedAlerts: number;
        })
    | undefined;
  readonly cpu: CpuCores;
  /** Busy cores just before the scenario started (undefined: not checked). */
  readonly busyBefore: number | undefined;
  readonly loadAverageBefore: number;
  readonly serverWarnings: Readonly<Record<string, number>>;
  readonly profileDir: string | undefined;
}

async function withClient<T>(url: string, use: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

function databaseUrlFor(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

type SubscriberProcess = Child<
  StartSubscribers | FinishSubscribers,
  SubscribersReady | SubscribersResult
>;
type ProbeProcess = Child<StartProbe | StopProbe, ProbeReady | ProbeResult>;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits (at most `maxWaitMs`) until the machine is nearly idle, so a scenario does not
 * start while something else (a test run, a compiler) holds the cores. Returns how busy
 * it was at the last look, in cores.
 */
async function waitForQuiet(maxWaitMs: number): Promise<number | undefined> {
  if (maxWaitMs <= 0) return undefined;
  const began = performance.now();
  let told = false;
  for (;;) {
    const a = machineCpu();
    await sleep(2_000);
    const b = machineCpu();
    const busy = (b.busy - a.busy) / 2;
    const waited = performance.now() - began;
    if (busy < quietCores || waited >= maxWaitMs) {
      if (told) process.stderr.write(`(waited ${(waited / 1000).toFixed(0)} s) `);
      return busy;
    }
    if (!told) process.stderr.write(`(machine busy: ${busy.toFixed(2)} cores; waiting) `);
    told = true;
  }
}

async function runScenario(
  o: Options,
  entry: ServerEntry,
  scenario: Scenario,
  run: number,
  profileRoot: string,
): Promise<ScenarioResult> {
  const busyBefore = await waitForQuiet(o.quietWaitMs);
  const loadAverageBefore = loadavg()[0] ?? 0;
  const dbName = `tw_bench_${randomBytes(5).toString("hex")}`;
  const dbUrl = databaseUrlFor(o.databaseUrl, dbName);
  await withClient(o.databaseUrl, (c) => c.query(`create database ${dbName}`));
  const profileDir = o.profile
    ? join(profileRoot, `${scenario.label.replace(/\W+/g, "") || "0"}-run${run}`)
    : undefined;
  if (profileDir !== undefined) await mkdir(profileDir, { recursive: true });

  let server: ServerProcess | undefined;
  let subs: SubscriberProcess | undefined;
  let probe: ProbeProcess | undefined;
  const sessions: Http2SessionManager[] = [];
  try {
    server = await startServerProcess({
      repoRoot,
      entry,
      databaseUrl: dbUrl,
      nodeArgs: profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`],
    });
    const serverPid = server.pid;
    const baseUrl = `http://127.0.0.1:${server.port}`;
    await withClient(dbUrl, (c) => c.query(commitTriggerSql));

    let ready: SubscribersReady | undefined;
    if (scenario.subscribers > 0) {
      subs = forkChild(join(repoRoot, "bench/lib/subscriber-process.ts"), repoRoot);
      const readyMessage = subs.next("ready");
      subs.send({
        type: "start",
        url: `ws://127.0.0.1:${server.port}/ws`,
        count: scenario.subscribers,
        version: scenario.version,
        timedSubscribers: o.timed,
        connectConcurrency: 20,
      });
      ready = await readyMessage;
      if (ready.failed > 0) {
        throw new Error(`${ready.failed} subscribers failed to connect: ${ready.firstError}`);
      }
    }
    probe = forkChild(join(repoRoot, "bench/lib/probe-process.ts"), repoRoot);
    const probeReady = probe.next("ready");
    probe.send({ type: "start", baseUrl, databaseUrl: dbUrl, rate: o.probeRate });
    await probeReady;
    const subsPid = subs?.pid;
    const probePid = probe.pid;

    // The load: agents in this process, each on its own HTTP/2 connection.
    const sendToAck = new SampleBuffer();
    let windowAcks = 0;
    let inWindow = false;
    const t0 = performance.now();
    const windowStart = t0 + o.warmupMs;
    const windowEnd = windowStart + o.durationMs;
    const agents = Array.from({ length: o.agents }, (_, i) => {
      const sessionManager = new Http2SessionManager(baseUrl);
      sessions.push(sessionManager);
      const transport = createGrpcTransport({ baseUrl, sessionManager });
      return startSimulatedAgent({
        client: createClient(AlertService, transport),
        hostname: `bench-agent-${i + 1}`,
        rate: 0,
        durationMs: o.warmupMs + o.durationMs,
        maxInFlight: o.inFlight,
        drainTimeoutMs: 30_000,
        onReply(reply) {
          if (!inWindow || reply.type !== "ACK") return;
          windowAcks++;
          sendToAck.push(reply.latencyMs);
        },
      });
    });

    // CPU of each party over the window.
    const meters = {
      server: new CpuMeter(),
      subscribers: new CpuMeter(),
      loadGenerator: new CpuMeter(),
      postgres: new CpuMeter(),
    };
    const backendPids = (): Promise<number[]> =>
      withClient(o.databaseUrl, async (c) => {
        const r = await c.query<{ pid: number }>(
          "select pid from pg_stat_activity where datname = $1",
          [dbName],
        );
        return r.rows.map((row) => row.pid);
      });
    let machineStart = machineCpu();
    let machineEnd = machineStart;
    let measuredStart = 0;
    let measuredEnd = 0;
    const windowDone = (async () => {
      await sleep(windowStart - performance.now());
      inWindow = true;
      measuredStart = performance.now();
      machineStart = machineCpu();
      meters.server.add([serverPid]);
      if (subsPid !== undefined) meters.subscribers.add([subsPid]);
      // The probe is part of the load; it is nearly idle.
      meters.loadGenerator.add([process.pid, probePid]);
      // Read after the window opened (a query takes a few ms); the pool is warm by now.
      meters.postgres.add(await backendPids());
      await sleep(windowEnd - performance.now());
      inWindow = false;
      measuredEnd = performance.now();
      machineEnd = machineCpu();
      for (const m of Object.values(meters)) m.sample();
    })();

    const finals = await Promise.all(agents.map((a) => a.done));
    await windowDone;
    for (const s of sessions) s.abort();
    const probeResultMessage = probe.next("result");
    probe.send({ type: "stop", timeoutMs: 30_000 });
    const probeResult = await probeResultMessage;

    const { rowsStored, maxSeq } = await withClient(dbUrl, async (c) => {
      const r = await c.query<{ n: string; max: string | null }>(
        "select count(*)::text as n, max(seq)::text as max from alerts",
      );
      return { rowsStored: Number(r.rows[0]?.n ?? 0), maxSeq: Number(r.rows[0]?.max ?? 0) };
    });

    let result: SubscribersResult | undefined;
    if (subs !== undefined) {
      const resultMessage = subs.next("result");
      subs.send({ type: "finish", seq: maxSeq, timeoutMs: 30_000 });
      result = await resultMessage;
    }

    // Probe alerts sent during the window, and their delivery to each timed subscriber.
    const windowFrom = performance.timeOrigin + measuredStart;
    const windowTo = performance.timeOrigin + measuredEnd;
    const probes = new Map<string, { sentAt: number; committedAt: number; ackedAt: number }>();
    const probeSendToAck = new SampleBuffer();
    const commitToAck = new SampleBuffer();
    for (const [alertId, sentAt, committedAt, ackedAt] of probeResult.samples) {
      if (sentAt < windowFrom || sentAt >= windowTo) continue;
      probes.set(alertId, { sentAt, committedAt, ackedAt });
      probeSendToAck.push(ackedAt - sentAt);
      if (!Number.isNaN(committedAt)) commitToAck.push(ackedAt - committedAt);
    }
    const ackToWs = new SampleBuffer();
    const commitToWs = new SampleBuffer();
    const sendToWs = new SampleBuffer();
    const commitToWsLast = new SampleBuffer();
    let matched = 0;
    const lastIndex = Math.max(-1, ...(result?.timed.map((t) => t.index) ?? []));
    for (const t of result?.timed ?? []) {
      for (const [alertId, at] of t.deliveries) {
        const p = probes.get(alertId);
        if (p === undefined) continue;
        matched++;
        ackToWs.push(at - p.ackedAt);
        sendToWs.push(at - p.sentAt);
        if (!Number.isNaN(p.committedAt)) {
          commitToWs.push(at - p.committedAt);
          if (t.index === lastIndex) commitToWsLast.push(at - p.committedAt);
        }
      }
    }
    const timedCount = result?.timed.length ?? 0;

    const windowSeconds = (measuredEnd - measuredStart) / 1000;
    const cores = (s: number): number => s / windowSeconds;
    const cpu = {
      server: cores(meters.server.seconds),
      subscribers: cores(meters.subscribers.seconds),
      loadGenerator: cores(meters.loadGenerator.seconds),
      postgres: cores(meters.postgres.seconds),
      machineBusy: cores(machineEnd.busy - machineStart.busy),
      irq: cores(machineEnd.irq - machineStart.irq),
      steal: cores(machineEnd.steal - machineStart.steal),
      other: 0,
    };
    cpu.other = Math.max(
      0,
      cpu.machineBusy -
        cpu.server -
        cpu.subscribers -
        cpu.loadGenerator -
        cpu.postgres -
        cpu.irq -
        cpu.steal,
    );

    const sum = (f: (s: (typeof finals)[number]) => number): number =>
      finals.reduce((n, s) => n + f(s), 0);
    const acked = sum((s) => s.acked);
    let subscribersInfo: ScenarioResult["subscribersInfo"];
    if (ready !== undefined && result !== undefined) {
      const { type: _r, ...readyInfo } = ready;
      const { type: _t, timed: _timed, ...resultInfo } = result;
      subscribersInfo = {
        ...readyInfo,
        ...resultInfo,
        expectedAlerts: rowsStored * result.subscribers,
      };
    }
    const failures = finals.flatMap((s) => (s.failure === undefined ? [] : [s.failure]));
    if (probeResult.failure !== undefined) failures.push(`probe: ${probeResult.failure}`);
    return {
      label: scenario.label,
      subscribers: scenario.subscribers,
      version: scenario.version,
      run,
      windowSeconds,
      ingestPerSecond: windowAcks / windowSeconds,
      sent: sum((s) => s.sent) + probeResult.sent,
      acked: acked + probeResult.samples.length,
      errors: sum((s) => s.errors) + probeResult.errors,
      unanswered: sum((s) => s.inFlight),
      agentFailures: failures,
      rowsStored,
      sendToAckMs: distribution(sendToAck.values()),
      probeSendToAckMs: distribution(probeSendToAck.values()),
      commitToAckMs: distribution(commitToAck.values()),
      commitToWsMs: distribution(commitToWs.values()),
      commitToWsLastSubscriberMs: distribution(commitToWsLast.values()),
      ackToWsMs: distribution(ackToWs.values()),
      sendToWsMs: distribution(sendToWs.values()),
      commitsMissed: probes.size - commitToAck.length,
      timedMissing: probes.size * timedCount - matched,
      subscribersInfo,
      cpu,
      busyBefore,
      loadAverageBefore,
      serverWarnings: Object.fromEntries(server.warnings),
      profileDir,
    };
  } finally {
    for (const s of sessions) s.abort();
    subs?.kill();
    probe?.kill();
    await server?.stop(30_000);
    await withClient(o.databaseUrl, (c) =>
      c.query(`drop database if exists ${dbName} with (force)`),
    ).catch((err: unknown) => process.stderr.write(`could not drop ${dbName}: ${String(err)}\n`));
  }
}

/** The code under test: the commit, and whether the server's sources differ from it. */
interface CodeVersion {
  readonly commit: string;
  /** Files under src/, proto/ or drizzle/ changed since the commit (git status). */
  readonly uncommitted: readonly string[];
}

function codeVersion(): CodeVersion {
  const git = (...args: string[]): string =>
    execFileSync("git", args, { cwd: repoRoot, encoding: "utf8" }).trim();
  try {
    const uncommitted = git("status", "--porcelain", "--", "src", "proto", "drizzle")
      .split("\n")
      .filter((line) => line !== "");
    return { commit: git("log", "-1", "--format=%h %s"), uncommitted };
  } catch {
    return { commit: "unknown (not a git checkout)", uncommitted: [] };
  }
}

/** The machine the numbers come from. */
interface Machine {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly postgres: string;
}

async function describeMachine(adminUrl: string): Promise<Machine> {
  let cpuModel = cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1] !== undefined) cpuModel = m[1].trim();
  } catch {
    // not Linux: keep os.cpus()
  }
  const postgres = await withClient(adminUrl, async (c) => {
    const r = await c.query<{ server_version: string }>("show server_version");
    return r.rows[0]?.server_version ?? "unknown";
  });
  return {
    cores: cpus().length,
    cpuModel,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    postgres,
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
    `Server: ${o.server === "dist" ? "node dist/main.js" : "node --import tsx src/main.ts"} (child process), default settings (flush 100 ms, batch 1000, 2 concurrent flushes); code ${code.commit}${code.uncommitted.length > 0 ? ` plus uncommitted changes (${code.uncommitted.join(", ")})` : ""}.  `,
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
  const machine = await describeMachine(o.databaseUrl);
  // Read right before the build: what the numbers are about.
  const code = codeVersion();

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
