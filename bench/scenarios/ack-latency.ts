/**
 * Scenario 3, ACK latency: the same agents, rate-limited to 25% and then 50% of the
 * maximum rate scenario 2 measured in the same round; send→ACK p50 and p99 at the agents.
 */
import { loadNotes, loadOptions, runLoad } from "../lib/load-run.js";
import { check, num, type Outcome, type RunContext, type Scenario } from "../lib/scenario.js";

const shares = [0.25, 0.5] as const;
/** The issue's goal at 50%: p99 within the flush interval plus this. */
const slackMs = 150;

async function run(ctx: RunContext): Promise<Outcome> {
  const max = ctx.earlier.get("ingest")?.ingestPerSecond;
  if (max === undefined || !(max > 0))
    throw new Error("ack-latency needs the ingest rate of scenario 2");
  const metrics: Record<string, number | undefined> = { maxRate: max };
  const raw: Record<string, unknown> = {};
  const notes: string[] = [];
  let consistent = true;
  for (const share of shares) {
    const key = `at${share * 100}`;
    const label = `ACK latency at ${share * 100}%`;
    const r = await runLoad(
      loadOptions(ctx, `ack-latency-${share * 100}`, {
        ratePerAgent: (share * max) / ctx.settings.agents,
        onStatus: (status) => ctx.onStatus(`${share * 100}%: ${status}`),
      }),
    );
    metrics[`${key}Rate`] = r.ingestPerSecond;
    metrics[`${key}P50`] = r.sendToAckMs.p50;
    metrics[`${key}P99`] = r.sendToAckMs.p99;
    raw[key] = r;
    notes.push(...loadNotes(label, r));
    consistent &&= r.consistent && r.errors === 0;
  }
  return { metrics, raw, consistent, notes };
}

export const ackLatency: Scenario = {
  number: 3,
  id: "ack-latency",
  title: "ACK latency",
  needs: ["ingest"],
  run,
  rows(medians, s) {
    const m = medians.get("ack-latency");
    const limit = s.flushIntervalMs + slackMs;
    return shares.map((share, i) => {
      const key = `at${share * 100}`;
      return {
        scenario: i === 0 ? "3. ACK latency" : "",
        measure: `send→ACK p50 / p99 at ${share * 100}% of (2) (${num(m?.[`${key}Rate`])} alerts/s)`,
        result: `${num(m?.[`${key}P50`])} / ${num(m?.[`${key}P99`])} ms`,
        goal: share === 0.5 ? `p99 ≤ ${limit} ms (flush ${s.flushIntervalMs} + ${slackMs})` : "–",
        met: share === 0.5 ? check(m?.[`${key}P99`], (v) => v <= limit) : undefined,
      };
    });
  },
};
