/**
 * Scenario 4, fan-out: the ingest load with 100 and then 1000 WebSocket subscribers
 * connected (from their own process). Ingest as a ratio to scenario 2, and how long a
 * committed alert takes to reach a subscriber: a probe agent's alerts, stamped at
 * commit (NOTIFY) and on arrival at timed subscribers spread over the connection order.
 *
 * Two more measurements put the 1000-subscriber figures in context:
 * - The same 1000 subscribers with the agents held to half the rate they reached with
 *   them (as scenario 3 does for ACKs): delivery latency when the machine is not
 *   saturated, where at full rate it is mostly the queue of a machine out of cores.
 * - The socket floor (bench/lib/socket-floor.ts): the machine's CPU per byte moved over
 *   loopback TCP to 1000 sockets of another process, with frames as large as the feed's.
 *   With the bytes per alert each subscriber received and scenario 2's machine CPU per
 *   alert, it bounds what any server could ingest on these cores while delivering every
 *   alert to every subscriber:
 *     bound(N) = cores / (machine CPU per alert without subscribers
 *                         + N × bytes per alert per subscriber × floor CPU per byte)
 */
import { cpus } from "node:os";
import { loadNotes, loadOptions, runLoad } from "../lib/load-run.js";
import {
  check,
  type Metrics,
  num,
  type Outcome,
  pct,
  type RunContext,
  ratio,
  type Scenario,
} from "../lib/scenario.js";
import { measureSocketFloor } from "../lib/socket-floor.js";

const counts = [100, 1000] as const;
/** The issue's goals with 1000 subscribers. */
const goalRatio = 0.7;
const goalP99Ms = 250;
/** The paced run's share of the 1000-subscriber maximum. */
const pacedShare = 0.5;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  const metrics: Record<string, number | undefined> = {};
  const raw: Record<string, unknown> = {};
  const notes: string[] = [];
  let consistent = true;
  const subscribers = (count: number) => ({
    count,
    version: s.subscriberVersion,
    timed: s.timedSubscribers,
    stall: false,
  });
  for (const count of counts) {
    const r = await runLoad(
      loadOptions(ctx, `fanout-${count}`, {
        subscribers: subscribers(count),
        onStatus: (status) => ctx.onStatus(`${count} subscribers: ${status}`),
      }),
    );
    const k = `s${count}`;
    const info = r.subscribersInfo;
    metrics[`${k}Ingest`] = r.ingestPerSecond;
    metrics[`${k}CommitToWsP50`] = r.commitToWsMs.p50;
    metrics[`${k}CommitToWsP99`] = r.commitToWsMs.p99;
    metrics[`${k}Delivered`] =
      info && info.expectedAlerts > 0 ? info.alertsReceived / info.expectedAlerts : undefined;
    metrics[`${k}OthersPerSecond`] = r.delivery?.othersPerSecond;
    metrics[`${k}ServerCpuUsPerAck`] = r.serverCpuUsPerAck;
    metrics[`${k}ServerRssPeak`] = r.serverRss.peak;
    metrics[`${k}MachineBusy`] = r.cpu.machineBusy;
    metrics[`${k}SubscriberCores`] = r.cpu.subscribers;
    if (info && info.alertsReceived > 0 && info.frames > 0) {
      metrics[`${k}WireBytesPerAlert`] = info.bytes / info.alertsReceived;
      metrics[`${k}FrameBytes`] = info.bytes / info.frames;
    }
    raw[k] = r;
    notes.push(...loadNotes(`${count} subscribers`, r));
    consistent &&= r.consistent && r.errors === 0;
  }

  const max = metrics.s1000Ingest;
  if (max !== undefined && max > 0) {
    const rate = pacedShare * max;
    const r = await runLoad(
      loadOptions(ctx, "fanout-1000-paced", {
        subscribers: subscribers(1000),
        ratePerAgent: rate / s.agents,
        onStatus: (status) => ctx.onStatus(`1000 subscribers at ${num(rate)}/s: ${status}`),
      }),
    );
    const info = r.subscribersInfo;
    metrics.pacedRate = r.ingestPerSecond;
    metrics.pacedCommitToWsP50 = r.commitToWsMs.p50;
    metrics.pacedCommitToWsP99 = r.commitToWsMs.p99;
    metrics.pacedDelivered =
      info && info.expectedAlerts > 0 ? info.alertsReceived / info.expectedAlerts : undefined;
    raw.paced = r;
    notes.push(...loadNotes("1000 subscribers, paced", r));
    consistent &&= r.consistent && r.errors === 0;
  }

  const frameBytes = metrics.s1000FrameBytes;
  if (frameBytes !== undefined) {
    ctx.onStatus("socket floor: 1000 loopback sockets");
    const floor = await measureSocketFloor({
      sockets: 1000,
      frameBytes: Math.round(frameBytes),
      warmupMs: s.quick ? 500 : 1_000,
      durationMs: s.quick ? 2_000 : 5_000,
      cwd: s.repoRoot,
    });
    metrics.floorCoreSecondsPerGB = floor.coreSecondsPerGB;
    metrics.floorBytesPerSecond = floor.bytesPerSecond;
    raw.socketFloor = floor;
  }
  metrics.cores = cpus().length;
  return { metrics, raw, consistent, notes };
}

/**
 * The most alerts per second these cores could take while delivering each to `count`
 * subscribers, from the socket floor (see the file's comment); undefined if not measured.
 */
export function socketFloorBound(
  fanout: Metrics | undefined,
  ingest: Metrics | undefined,
  count: number,
): number | undefined {
  const cores = fanout?.cores;
  const perGB = fanout?.floorCoreSecondsPerGB;
  const bytes = fanout?.[`s${count}WireBytesPerAlert`];
  const busy = ingest?.machineBusy;
  const rate = ingest?.ingestPerSecond;
  if ([cores, perGB, bytes, busy, rate].some((v) => v === undefined || !Number.isFinite(v)))
    return undefined;
  const perAlert = (busy as number) / (rate as number);
  const fanoutPerAlert = (count * (bytes as number) * (perGB as number)) / 1e9;
  return (cores as number) / (perAlert + fanoutPerAlert);
}

export const fanout: Scenario = {
  number: 4,
  id: "fanout",
  title: "Fan-out",
  needs: ["ingest"],
  run,
  rows(medians) {
    const m = medians.get("fanout");
    const ingest = medians.get("ingest");
    const base = ingest?.ingestPerSecond;
    const rows = counts.flatMap((count, i) => {
      const k = `s${count}`;
      const share = ratio(m?.[`${k}Ingest`], base);
      const p99 = m?.[`${k}CommitToWsP99`];
      const gated = count === 1000;
      const delivered = m?.[`${k}Delivered`];
      return [
        {
          scenario: i === 0 ? "4. Fan-out" : "",
          measure: `${count} subscribers: ingest alerts/s (of (2))`,
          result: `${num(m?.[`${k}Ingest`])} (${pct(m?.[`${k}Ingest`], base)})`,
          goal: gated ? `≥ ${goalRatio * 100}% of (2)` : "–",
          met: gated ? check(share, (v) => v >= goalRatio) : undefined,
        },
        {
          scenario: "",
          measure: `${count} subscribers: commit→client p50 / p99 (delivered)`,
          result: `${num(m?.[`${k}CommitToWsP50`])} / ${num(p99)} ms (${percent(delivered)})`,
          goal: gated ? `p99 ≤ ${goalP99Ms} ms` : "–",
          met: gated ? check(p99, (v) => v <= goalP99Ms) : undefined,
        },
      ];
    });
    const bound = socketFloorBound(m, ingest, 1000);
    rows.push(
      {
        scenario: "",
        measure: `1000 subscribers at ${pacedShare * 100}% of that rate (${num(m?.pacedRate)} alerts/s): commit→client p50 / p99 (delivered)`,
        result: `${num(m?.pacedCommitToWsP50)} / ${num(m?.pacedCommitToWsP99)} ms (${percent(m?.pacedDelivered)})`,
        goal: `p99 ≤ ${goalP99Ms} ms`,
        met: check(m?.pacedCommitToWsP99, (v) => v <= goalP99Ms),
      },
      {
        scenario: "",
        measure:
          "socket floor: machine CPU per GB over loopback to 1000 sockets; bytes per alert per subscriber",
        result: `${num(m?.floorCoreSecondsPerGB, 2)} core-s/GB; ${num(m?.s1000WireBytesPerAlert, 1)} B`,
        goal: "– (the limit of fan-out on this machine)",
        met: undefined,
      },
      {
        scenario: "",
        measure:
          "1000 subscribers: most any server could ingest here, from the floor (of (2)); measured (of that)",
        result: `${num(bound)} (${pct(bound, base)}); ${pct(m?.s1000Ingest, bound)}`,
        goal: "–",
        met: undefined,
      },
    );
    return rows;
  },
};

function percent(share: number | undefined): string {
  return share === undefined ? "–" : `${(share * 100).toFixed(1)}%`;
}
