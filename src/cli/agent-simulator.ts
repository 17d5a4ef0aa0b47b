/**
 * `npm run agent -- [options]`: simulated TripWire agents against a running server.
 *
 * Registers N agents, streams realistic (and optionally deliberately invalid) events from
 * each on one pipelined StreamAlerts stream, prints progress every second, and a summary
 * at the end. Exit code 0 when every sent event got a reply, 1 when the server was
 * unreachable or replies were missing, 2 for bad flags.
 */
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { AlertService } from "../gen/alert/alert_pb.js";
import { type AgentStats, type SimulatedAgent, startSimulatedAgent } from "./simulated-agent.js";

const protocols = ["grpc", "connect", "grpc-web"] as const;
type Protocol = (typeof protocols)[number];

/** How long, after sending stops, agents wait for outstanding replies. */
const drainTimeoutMs = 5_000;

const usage = `Usage: npm run agent -- [options]

Simulates TripWire agents: each registers, then streams realistic FILE, NETWORK and
PROCESS events on one pipelined StreamAlerts stream (sending without waiting for each
reply). Addresses in the events are loopback or documentation ranges; nothing is contacted
but the server.

Options:
  --url URL               server base URL (default http://127.0.0.1:8080)
  --protocol P            grpc | connect | grpc-web, all over HTTP/2 (default grpc)
  --agents N              number of agents, each with its own connection (default 1)
  --rate R                events per second per agent; 0 = as fast as --max-in-flight
                          allows (default 10)
  --duration S            seconds to send; 0 = until Ctrl-C (default 10, or no limit
                          when --count is given)
  --count N               events per agent; stops when reached
  --error-mix F           fraction 0..1 of events made invalid on purpose (bad
                          tripwire_type, stale timestamp, bad JSON, missing rule_name,
                          in turn) (default 0)
  --max-in-flight N       most un-answered events per agent (default 256)
  --hostname-prefix P     hostnames P-1, P-2, ... (stable across runs); default
                          sim-<n>-<random>
  --quiet                 no progress lines
  --json                  print the summary as one JSON object
  --help                  show this help

Ctrl-C stops sending and waits up to ${drainTimeoutMs / 1000} s for outstanding replies; press it again to quit at once.
Exit code: 0 every event got a reply; 1 server unreachable or replies missing; 2 bad flags.
`;

/** A flag with a value that is not acceptable; the message names the flag. */
class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The validated command line. */
interface Options {
  readonly url: string;
  readonly protocol: Protocol;
  readonly agents: number;
  readonly rate: number;
  readonly durationMs: number;
  readonly count: number | undefined;
  readonly errorMix: number;
  readonly maxInFlight: number;
  readonly hostnamePrefix: string | undefined;
  readonly quiet: boolean;
  readonly json: boolean;
  readonly help: boolean;
}

function parseNumber(flag: string, raw: string, min: number, max: number, what: string): number {
  const s = raw.trim();
  const n = Number(s);
  if (s === "" || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`--${flag} ${JSON.stringify(raw)} is not valid: expected ${what}`);
  }
  return n;
}

function parseInteger(flag: string, raw: string, min: number, max: number): number {
  const n = parseNumber(flag, raw, min, max, `a whole number from ${min} to ${max}`);
  if (!Number.isInteger(n)) {
    throw new UsageError(
      `--${flag} ${JSON.stringify(raw)} is not valid: expected a whole number from ${min} to ${max}`,
    );
  }
  return n;
}

/** Parses and validates `argv` (without node and the script); throws UsageError. */
function parseOptions(argv: readonly string[]): Options {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (err) {
    // parseArgs names the flag: "Unknown option '--x'", "Option '--rate <value>' argument missing".
    throw new UsageError((err as Error).message);
  }
  const url = values.url ?? "http://127.0.0.1:8080";
  let parsedUrl: URL;
  try {
    parsedUrl = new URL(url);
  } catch {
    throw new UsageError(`--url ${JSON.stringify(url)} is not a URL: expected http://host:port`);
  }
  if (parsedUrl.protocol !== "http:" && parsedUrl.protocol !== "https:") {
    throw new UsageError(`--url ${JSON.stringify(url)} is not valid: expected http:// or https://`);
  }
  const protocol = values.protocol ?? "grpc";
  if (!(protocols as readonly string[]).includes(protocol)) {
    throw new UsageError(
      `--protocol ${JSON.stringify(protocol)} is not valid: expected one of ${protocols.join(", ")}`,
    );
  }
  const count =
    values.count === undefined ? undefined : parseInteger("count", values.count, 1, 1e12);
  const durationSeconds =
    values.duration === undefined
      ? count === undefined
        ? 10
        : 0
      : parseNumber("duration", values.duration, 0, 31_536_000, "seconds, 0 or more");
  const prefix = values["hostname-prefix"];
  if (prefix !== undefined && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,200}$/.test(prefix)) {
    throw new UsageError(
      `--hostname-prefix ${JSON.stringify(prefix)} is not valid: expected letters, digits, dots and dashes`,
    );
  }
  return {
    url,
    protocol: protocol as Protocol,
    agents: parseInteger("agents", values.agents ?? "1", 1, 10_000),
    rate: parseNumber("rate", values.rate ?? "10", 0, 1e9, "events per second, 0 or more"),
    durationMs: Math.round(durationSeconds * 1000),
    count,
    errorMix: parseNumber("error-mix", values["error-mix"] ?? "0", 0, 1, "a fraction from 0 to 1"),
    maxInFlight: parseInteger("max-in-flight", values["max-in-flight"] ?? "256", 1, 1_000_000),
    hostnamePrefix: prefix,
    quiet: values.quiet ?? false,
    json: values.json ?? false,
    help: values.help ?? false,
  };
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      url: { type: "string" },
      protocol: { type: "string" },
      agents: { type: "string" },
      rate: { type: "string" },
      duration: { type: "string" },
      count: { type: "string" },
      "error-mix": { type: "string" },
      "max-in-flight": { type: "string" },
      "hostname-prefix": { type: "string" },
      quiet: { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

/** One agent's transport over its own HTTP/2 connection, closed by `close()`. */
function connect(options: Options): { transport: Transport; close(): void } {
  // Client-streaming and bidi need HTTP/2 in every protocol; each agent gets its own
  // connection, as deployed agents have.
  const sessionManager = new Http2SessionManager(options.url);
  const common = { baseUrl: options.url, httpVersion: "2", sessionManager } as const;
  const transport =
    options.protocol === "grpc"
      ? createGrpcTransport(common)
      : options.protocol === "connect"
        ? createConnectTransport(common)
        : createGrpcWebTransport(common);
  return { transport, close: () => sessionManager.abort() };
}

/** Totals over all agents, as printed and as `--json` emits them. */
interface Summary {
  readonly ok: boolean;
  readonly url: string;
  readonly protocol: Protocol;
  readonly elapsedMs: number;
  readonly sent: number;
  readonly invalidSent: number;
  readonly acked: number;
  readonly errors: number;
  readonly missing: number;
  readonly errorsByReason: Record<string, number>;
  readonly validRefused: number;
  readonly invalidAccepted: number;
  readonly unmatched: number;
  readonly meanLatencyMs: number;
  readonly maxLatencyMs: number;
  readonly failures: string[];
  readonly agents: ReadonlyArray<{
    readonly hostname: string;
    readonly hostId: string | undefined;
    readonly sent: number;
    readonly acked: number;
    readonly errors: number;
    readonly missing: number;
    readonly failure: string | undefined;
  }>;
}

function summarize(options: Options, results: readonly AgentStats[], elapsedMs: number): Summary {
  const sum = (f: (s: AgentStats) => number): number => results.reduce((n, s) => n + f(s), 0);
  const errorsByReason: Record<string, number> = {};
  for (const s of results) {
    for (const [reason, n] of Object.entries(s.errorsByReason)) {
      errorsByReason[reason] = (errorsByReason[reason] ?? 0) + n;
    }
  }
  const replies = sum((s) => s.acked + s.errors);
  const failures = results.flatMap((s) =>
    s.failure === undefined ? [] : [`${s.hostname}: ${s.failure}`],
  );
  const missing = sum((s) => s.inFlight);
  return {
    ok: failures.length === 0 && missing === 0,
    url: options.url,
    protocol: options.protocol,
    elapsedMs: Math.round(elapsedMs),
    sent: sum((s) => s.sent),
    invalidSent: sum((s) => s.invalidSent),
    acked: sum((s) => s.acked),
    errors: sum((s) => s.errors),
    missing,
    errorsByReason,
    validRefused: sum((s) => s.validRefused),
    invalidAccepted: sum((s) => s.invalidAccepted),
    unmatched: sum((s) => s.unmatched),
    meanLatencyMs: replies === 0 ? 0 : round(sum((s) => s.latencySumMs) / replies),
    maxLatencyMs: round(Math.max(0, ...results.map((s) => s.latencyMaxMs))),
    failures,
    agents: results.map((s) => ({
      hostname: s.hostname,
      hostId: s.hostId,
      sent: s.sent,
      acked: s.acked,
      errors: s.errors,
      missing: s.inFlight,
      failure: s.failure,
    })),
  };
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function formatSummary(s: Summary): string {
  const seconds = s.elapsedMs / 1000;
  const lines = [
    `${s.agents.length} agent(s), ${s.protocol} → ${s.url}, ${seconds.toFixed(1)} s`,
    `sent     ${s.sent} (${(seconds > 0 ? s.sent / seconds : 0).toFixed(1)}/s; ${s.invalidSent} invalid on purpose)`,
    `ACK      ${s.acked}`,
    `ERROR    ${s.errors}`,
  ];
  for (const [reason, n] of Object.entries(s.errorsByReason).sort((a, b) => b[1] - a[1])) {
    lines.push(`  ${String(n).padStart(6)}  ${reason}`);
  }
  lines.push(`missing  ${s.missing}`);
  lines.push(`latency  mean ${s.meanLatencyMs} ms, max ${s.maxLatencyMs} ms (send → reply)`);
  if (s.validRefused > 0) lines.push(`valid events refused: ${s.validRefused}`);
  if (s.invalidAccepted > 0) lines.push(`invalid events accepted: ${s.invalidAccepted}`);
  if (s.unmatched > 0) lines.push(`replies matching no event: ${s.unmatched}`);
  if (s.agents.length > 1) {
    for (const a of s.agents.slice(0, 50)) {
      lines.push(
        `  ${a.hostname}: sent ${a.sent}, ACK ${a.acked}, ERROR ${a.errors}, missing ${a.missing}`,
      );
    }
    if (s.agents.length > 50) lines.push(`  … and ${s.agents.length - 50} more`);
  }
  for (const [failure, n] of groupFailures(s)) {
    lines.push(`failed (${n} agent${n === 1 ? "" : "s"}): ${failure}`);
  }
  lines.push(s.ok ? "OK: every sent event got a reply" : "FAILED: see above");
  return `${lines.join("\n")}\n`;
}

/** Identical failures of many agents (an unreachable server) are reported once. */
function groupFailures(s: Summary): Map<string, number> {
  const groups = new Map<string, number>();
  for (const a of s.agents) {
    if (a.failure !== undefined) groups.set(a.failure, (groups.get(a.failure) ?? 0) + 1);
  }
  return groups;
}

function hostnameFor(options: Options, n: number): string {
  return options.hostnamePrefix !== undefined
    ? `${options.hostnamePrefix}-${n}`
    : `sim-${n}-${randomBytes(3).toString("hex")}`;
}

async function main(argv: readonly string[]): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`agent-simulator: ${err.message}\nRun with --help for the options.\n`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(usage);
    return 0;
  }

  const stop = new AbortController();
  const onSigint = (): void => {
    if (stop.signal.aborted) {
      process.stderr.write("agent-simulator: interrupted again, quitting\n");
      process.exit(130);
    }
    process.stderr.write(
      `agent-simulator: stopping; waiting up to ${drainTimeoutMs / 1000} s for replies (Ctrl-C again to quit)\n`,
    );
    stop.abort();
  };
  process.on("SIGINT", onSigint);

  const started = performance.now();
  const connections: Array<{ close(): void }> = [];
  const agents: SimulatedAgent[] = [];
  for (let n = 1; n <= options.agents; n++) {
    const connection = connect(options);
    connections.push(connection);
    agents.push(
      startSimulatedAgent({
        client: createClient(AlertService, connection.transport),
        hostname: hostnameFor(options, n),
        rate: options.rate,
        durationMs: options.durationMs,
        count: options.count,
        errorMix: options.errorMix,
        maxInFlight: options.maxInFlight,
        signal: stop.signal,
        drainTimeoutMs,
      }),
    );
  }

  let lastSent = 0;
  let lastAt = started;
  const progress = options.quiet
    ? undefined
    : setInterval(() => {
        const now = performance.now();
        const stats = agents.map((a) => a.stats());
        const sum = (f: (s: AgentStats) => number): number => stats.reduce((n, s) => n + f(s), 0);
        const sent = sum((s) => s.sent);
        const rate = ((sent - lastSent) * 1000) / (now - lastAt);
        lastSent = sent;
        lastAt = now;
        process.stderr.write(
          `[${((now - started) / 1000).toFixed(0).padStart(4)} s] sent ${sent}  ACK ${sum((s) => s.acked)}` +
            `  ERROR ${sum((s) => s.errors)}  in flight ${sum((s) => s.inFlight)}  ${rate.toFixed(0)}/s\n`,
        );
      }, 1_000);

  const results = await Promise.all(agents.map((a) => a.done));
  clearInterval(progress);
  process.off("SIGINT", onSigint);
  for (const c of connections) c.close();

  const summary = summarize(options, results, performance.now() - started);
  process.stdout.write(options.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
  if (options.json) {
    for (const [failure, n] of groupFailures(summary)) {
      process.stderr.write(`agent-simulator: ${n} agent(s) failed: ${failure}\n`);
    }
  }
  return summary.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`agent-simulator failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
