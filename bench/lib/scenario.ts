/**
 * What every scenario of the suite (bench/scenarios/) has in common: the settings it
 * runs with, what one run of it yields, and how it turns the medians into table rows.
 */
import type { ServerEntry } from "./server-process.js";

/** The suite's settings, from the command line (bench/run.ts). */
export interface BenchSettings {
  readonly repoRoot: string;
  readonly quick: boolean;
  readonly adminUrl: string;
  readonly entry: ServerEntry;
  /** Simulated agents of the load (scenarios 2–5). */
  readonly agents: number;
  /** Events in flight per agent. */
  readonly inFlight: number;
  readonly warmupMs: number;
  /** Measured window of the load scenarios. */
  readonly durationMs: number;
  /** How long the stall group of scenario 5 stops reading (its measured window). */
  readonly stallMs: number;
  /** Alerts the storm agent of scenario 7 bursts. */
  readonly stormAlerts: number;
  /** Feed protocol version of the subscribers. */
  readonly subscriberVersion: 0 | 1;
  /** Subscribers that time the probe's alerts. */
  readonly timedSubscribers: number;
  readonly probeRate: number;
  /** How long subscribers may take to catch up after a load run. */
  readonly finishTimeoutMs: number;
  /** Where server CPU profiles go (--profile); undefined: no profiling. */
  readonly profileDir: string | undefined;
  /** The server's batch flush interval (its default), for the ACK-latency goal. */
  readonly flushIntervalMs: number;
}

/** Numbers one run of a scenario measured, by name; undefined when not measurable. */
export type Metrics = Readonly<Record<string, number | undefined>>;

/** One run of a scenario. */
export interface Outcome {
  readonly metrics: Metrics;
  /** Everything measured, for the JSON file. */
  readonly raw: unknown;
  /**
   * False when the server lost or invented work: stored rows ≠ ACKs, events never
   * answered, an agent's stream failed. The suite exits non-zero on it.
   */
  readonly consistent: boolean;
  /** Short facts worth reading under the table (drops, closes, rate-limited events). */
  readonly notes: readonly string[];
}

/** What a run of one scenario can see of the scenarios before it in the same run. */
export interface RunContext {
  readonly settings: BenchSettings;
  /** Metrics of the scenarios already run in this round. */
  readonly earlier: ReadonlyMap<string, Metrics>;
  /** A short status for the progress display. */
  readonly onStatus: (status: string) => void;
}

/** One row of the results table. */
export interface TableRow {
  readonly scenario: string;
  readonly measure: string;
  readonly result: string;
  /** The goal from the issue, or "–" for a reference figure. */
  readonly goal: string;
  /** undefined: no goal, or not measurable. */
  readonly met: boolean | undefined;
}

/** A scenario of the suite. */
export interface Scenario {
  /** Its number in the issue (1–7). */
  readonly number: number;
  /** Its name on the command line (`--scenarios ingest,storm`). */
  readonly id: string;
  readonly title: string;
  /** Scenarios that must run before it in each round (their metrics feed this one). */
  readonly needs: readonly string[];
  run(ctx: RunContext): Promise<Outcome>;
  /** Table rows from the medians over runs of every scenario that ran (by id). */
  rows(medians: ReadonlyMap<string, Metrics>, settings: BenchSettings): TableRow[];
}

/** Formats a number with thin grouping (12 560) and `digits` decimals; "–" when undefined. */
export function num(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return "–";
  const [whole, frac] = n.toFixed(digits).split(".");
  const grouped = (whole ?? "").replace(/\B(?=(\d{3})+(?!\d))/g, " ");
  return frac === undefined ? grouped : `${grouped}.${frac}`;
}

/** `part / whole` as a percentage ("62%"); "–" when either is missing. */
export function pct(part: number | undefined, whole: number | undefined): string {
  const r = ratio(part, whole);
  return r === undefined ? "–" : `${(r * 100).toFixed(0)}%`;
}

/** `part / whole`, undefined when either is missing or whole is 0. */
export function ratio(part: number | undefined, whole: number | undefined): number | undefined {
  if (part === undefined || whole === undefined || !Number.isFinite(part) || !whole)
    return undefined;
  return part / whole;
}

/** Whether `value` meets `test`; undefined when it could not be measured. */
export function check(
  value: number | undefined,
  test: (v: number) => boolean,
): boolean | undefined {
  return value === undefined || !Number.isFinite(value) ? undefined : test(value);
}
