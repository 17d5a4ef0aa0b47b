/**
 * Scenario 5, slow subscribers: 1000 subscribers, of which 10% stop reading for the
 * whole measured window (60 s; shorter with --quick). The others' delivery rate and the
 * ingest, as ratios to the same load without stalls, and the server's memory against
 * the bound its settings give.
 *
 * Both runs hold the agents to half the rate 1000 subscribers allowed (scenario 4's
 * figure when it ran in this round, else a run of its own), for the same 60 s. At full
 * rate the machine's two cores are out of CPU, and the one process that reads all 1000
 * subscribers' sockets falls behind with them: the server then rightly drops for and
 * closes subscribers that never stalled, and the ratio measures the load generator's
 * share of the cores instead of what a stalled browser costs the others. Half rate
 * leaves every subscriber able to keep up, so whatever the stalled ones cost shows in
 * the others' rate, in their delivery latency and in ingest. Both runs last as long,
 * since ingest slows as the table grows.
 *
 * The bound per stalled subscriber, from src/live/ws-route.ts and the broadcaster: its
 * subscription buffers up to TRIPWIRE_SUBSCRIBER_BUFFER committed batches of at most
 * TRIPWIRE_BATCH_SIZE alerts; its socket is written to while less than
 * TRIPWIRE_WS_HIGH_WATER_BYTES is queued, so at most that plus one more frame. Frames
 * are as big as the alerts they carry (uncompressed bytes per alert, measured in the run by
 * the timed subscribers, which decode every frame), so
 *   bound = high-water + (buffer + 1) × batch size × bytes per alert.
 * (The batches are shared by every subscriber, so this overstates what many stalled
 * subscribers pin together; the table also shows how much the RSS actually grew.)
 */
import { loadConfig } from "../../src/config.js";
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

const subscribers = 1000;
const goalRatio = 0.95;
/** Both runs' share of the rate 1000 subscribers allowed. */
const pacedShare = 0.5;
const slackBytes = 50 * 2 ** 20;
const mib = (bytes: number | undefined): string =>
  bytes === undefined ? "–" : `${num(bytes / 2 ** 20)} MiB`;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  const setup = { count: subscribers, version: s.subscriberVersion, timed: s.timedSubscribers };
  const notes: string[] = [];
  let consistent = true;
  let max = ctx.earlier.get("fanout")?.s1000Ingest;
  let maxRaw: unknown = "scenario 4, 1000 subscribers, same round";
  if (max === undefined) {
    const m = await runLoad(
      loadOptions(ctx, "slow-max", {
        subscribers: { ...setup, stall: false },
        onStatus: (status) => ctx.onStatus(`full rate: ${status}`),
      }),
    );
    max = m.ingestPerSecond;
    maxRaw = m;
    notes.push(...loadNotes("Full rate", m));
    consistent &&= m.consistent && m.errors === 0;
  }
  const rate = pacedShare * max;
  const paced = (stall: boolean, label: string) =>
    runLoad(
      loadOptions(ctx, stall ? "slow-stalled" : "slow-baseline", {
        subscribers: { ...setup, stall },
        ratePerAgent: rate / s.agents,
        durationMs: s.stallMs,
        onStatus: (status) => ctx.onStatus(`${label} at ${num(rate)}/s: ${status}`),
      }),
    );
  const b = await paced(false, "no stall");
  notes.push(...loadNotes("No stall", b));
  consistent &&= b.consistent && b.errors === 0;
  const r = await paced(true, "10% stalled");
  notes.push(...loadNotes("10% stalled", r));
  consistent &&= r.consistent && r.errors === 0;

  const config = loadConfig({});
  const info = r.subscribersInfo;
  const bytesPerAlert =
    info && info.sampleAlerts > 0 ? info.sampleBytes / info.sampleAlerts : undefined;
  const perSubscriberBound =
    bytesPerAlert === undefined
      ? undefined
      : config.wsHighWaterBytes + (config.subscriberBuffer + 1) * config.batchSize * bytesPerAlert;
  const stalled = r.delivery?.stallGroupSubscribers ?? subscribers / 10;
  return {
    metrics: {
      pacedRate: rate,
      baselineIngest: b.ingestPerSecond,
      baselineOthersPerSecond: b.delivery?.othersPerSecond,
      baselineCommitToWsP99: b.commitToWsMs.p99,
      commitToWsP99: r.commitToWsMs.p99,
      ingest: r.ingestPerSecond,
      othersPerSecond: r.delivery?.othersPerSecond,
      stallGroupPerSecond: r.delivery?.stallGroupPerSecond,
      stalled,
      rssStart: r.serverRss.start,
      rssPeak: r.serverRss.peak,
      bytesPerAlert,
      perSubscriberBound,
      memoryLimit:
        perSubscriberBound === undefined ? undefined : stalled * perSubscriberBound + slackBytes,
    },
    raw: { max: maxRaw, baseline: b, stalled: r, config: { ...config, wsTokens: undefined } },
    consistent,
    notes,
  };
}

export const slowSubscribers: Scenario = {
  number: 5,
  id: "slow-subscribers",
  title: "Slow subscribers",
  needs: [],
  run,
  rows(medians, s) {
    const m = medians.get("slow-subscribers");
    const others = ratio(m?.othersPerSecond, m?.baselineOthersPerSecond);
    const ingestShare = ratio(m?.ingest, m?.baselineIngest);
    return [
      {
        scenario: "5. Slow subscribers",
        measure: `10% of ${subscribers} stop reading for ${s.stallMs / 1000} s, agents held to ${num(m?.pacedRate)} alerts/s (${pacedShare * 100}% of (4) at 1000): the others' delivery rate (of no stall)`,
        result: `${num(m?.othersPerSecond)} alerts/s each (${pct(m?.othersPerSecond, m?.baselineOthersPerSecond)})`,
        goal: `≥ ${goalRatio * 100}%`,
        met: check(others, (v) => v >= goalRatio),
      },
      {
        scenario: "",
        measure: "ingest alerts/s (of no stall)",
        result: `${num(m?.ingest)} (${pct(m?.ingest, m?.baselineIngest)})`,
        goal: `≥ ${goalRatio * 100}%`,
        met: check(ingestShare, (v) => v >= goalRatio),
      },
      {
        scenario: "",
        measure: "the others' commit→client p99 (no stall)",
        result: `${num(m?.commitToWsP99)} ms (${num(m?.baselineCommitToWsP99)} ms)`,
        goal: "–",
        met: undefined,
      },
      {
        scenario: "",
        measure: `server RSS peak (at window start); bound ${mib(m?.perSubscriberBound)} per stalled subscriber`,
        result: `${mib(m?.rssPeak)} (${mib(m?.rssStart)})`,
        goal: `≤ ${num(m?.stalled)} × bound + 50 MiB = ${mib(m?.memoryLimit)}`,
        met:
          m?.memoryLimit === undefined
            ? undefined
            : check(m.rssPeak, (v) => v <= (m.memoryLimit as number)),
      },
    ];
  },
};
