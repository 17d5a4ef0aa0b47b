/**
 * Scenario 5, slow subscribers: 1000 subscribers, of which 10% stop reading for the
 * whole measured window (60 s; shorter with --quick). The others' delivery rate and the
 * ingest, as ratios to the same load without stalls (scenario 4's 1000-subscriber run
 * when it ran in this round, else a run of its own), and the server's memory against
 * the bound its settings give.
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
const slackBytes = 50 * 2 ** 20;
const mib = (bytes: number | undefined): string =>
  bytes === undefined ? "–" : `${num(bytes / 2 ** 20)} MiB`;

async function run(ctx: RunContext): Promise<Outcome> {
  const s = ctx.settings;
  const setup = { count: subscribers, version: s.subscriberVersion, timed: s.timedSubscribers };
  const notes: string[] = [];
  let consistent = true;
  let baselineIngest = ctx.earlier.get("fanout")?.s1000Ingest;
  let baselineOthers = ctx.earlier.get("fanout")?.s1000OthersPerSecond;
  let baselineRaw: unknown = "scenario 4, 1000 subscribers, same round";
  if (baselineIngest === undefined || baselineOthers === undefined) {
    const b = await runLoad(
      loadOptions(ctx, "slow-baseline", {
        subscribers: { ...setup, stall: false },
        onStatus: (status) => ctx.onStatus(`no stall: ${status}`),
      }),
    );
    baselineIngest = b.ingestPerSecond;
    baselineOthers = b.delivery?.othersPerSecond;
    baselineRaw = b;
    notes.push(...loadNotes("No stall", b));
    consistent &&= b.consistent && b.errors === 0;
  }
  const r = await runLoad(
    loadOptions(ctx, "slow-stalled", {
      subscribers: { ...setup, stall: true },
      durationMs: s.stallMs,
      onStatus: (status) => ctx.onStatus(`10% stalled: ${status}`),
    }),
  );
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
      baselineIngest,
      baselineOthersPerSecond: baselineOthers,
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
    raw: { baseline: baselineRaw, stalled: r, config: { ...config, wsTokens: undefined } },
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
        measure: `10% of ${subscribers} stop reading for ${s.stallMs / 1000} s: the others' delivery rate (of no stall)`,
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
