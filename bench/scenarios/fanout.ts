/**
 * Scenario 4, fan-out: the ingest load with 100 and then 1000 WebSocket subscribers
 * connected (from their own process). Ingest as a ratio to scenario 2, and how long a
 * committed alert takes to reach a subscriber: a probe agent's alerts, stamped at
 * commit (NOTIFY) and on arrival at timed subscribers spread over the connection order.
 */
import { loadNotes, loadOptions, runLoad } from "../lib/load-run.js";
import {
  check,
  num,
  type Outcome,
  pct,
  type RunContext,
  ratio,
  type Scenario,
} from "../lib/scenario.js";

const counts = [100, 1000] as const;
/** The issue's goals with 1000 subscribers. */
const goalRatio = 0.7;
const goalP99Ms = 250;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  const metrics: Record<string, number | undefined> = {};
  const raw: Record<string, unknown> = {};
  const notes: string[] = [];
  let consistent = true;
  for (const count of counts) {
    const r = await runLoad(
      loadOptions(ctx, `fanout-${count}`, {
        subscribers: {
          count,
          version: s.subscriberVersion,
          timed: s.timedSubscribers,
          stall: false,
        },
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
    raw[k] = r;
    notes.push(...loadNotes(`${count} subscribers`, r));
    consistent &&= r.consistent && r.errors === 0;
  }
  return { metrics, raw, consistent, notes };
}

export const fanout: Scenario = {
  number: 4,
  id: "fanout",
  title: "Fan-out",
  needs: ["ingest"],
  run,
  rows(medians) {
    const m = medians.get("fanout");
    const base = medians.get("ingest")?.ingestPerSecond;
    return counts.flatMap((count, i) => {
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
          result: `${num(m?.[`${k}CommitToWsP50`])} / ${num(p99)} ms (${delivered === undefined ? "–" : `${(delivered * 100).toFixed(1)}%`})`,
          goal: gated ? `p99 ≤ ${goalP99Ms} ms` : "–",
          met: gated ? check(p99, (v) => v <= goalP99Ms) : undefined,
        },
      ];
    });
  },
};
