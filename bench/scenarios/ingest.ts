/**
 * Scenario 2, ingest: 8 agents over gRPC, each pipelining up to `inFlight` events, as
 * fast as the server ACKs them. ACKed (and so committed) alerts per second, as a ratio
 * to the database ceiling; the server's CPU time per ACKed alert; rows stored = ACKs.
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

/** The goal: ingest at least this share of the database ceiling. */
const goalOfCeiling = 0.5;

async function run(ctx: RunContext): Promise<Outcome> {
  const r = await runLoad(loadOptions(ctx, "ingest", {}));
  return {
    metrics: {
      ingestPerSecond: r.ingestPerSecond,
      serverCpuUsPerAck: r.serverCpuUsPerAck,
      sendToAckP50: r.sendToAckMs.p50,
      sendToAckP99: r.sendToAckMs.p99,
      serverCores: r.cpu.server,
      postgresCores: r.cpu.postgres,
      loadCores: r.cpu.loadGenerator,
      machineBusy: r.cpu.machineBusy,
      rowsEqualAcks: r.rowsStored === r.acked ? 1 : 0,
    },
    raw: r,
    consistent: r.consistent && r.errors === 0,
    notes: loadNotes("Ingest", r),
  };
}

export const ingest: Scenario = {
  number: 2,
  id: "ingest",
  title: "Ingest",
  needs: [],
  run,
  rows(medians, s) {
    const m = medians.get("ingest");
    const ceiling = medians.get("db-ceiling")?.rowsPerSecond;
    const share = ratio(m?.ingestPerSecond, ceiling);
    return [
      {
        scenario: "2. Ingest",
        measure: `${s.agents} gRPC agents, ${s.inFlight} in flight each: ACKed alerts/s (of (1))`,
        result: `${num(m?.ingestPerSecond)} (${pct(m?.ingestPerSecond, ceiling)})`,
        goal: `≥ ${goalOfCeiling * 100}% of (1)`,
        met: check(share, (v) => v >= goalOfCeiling),
      },
      {
        scenario: "",
        measure: "server CPU per ACKed alert (cores: server / PostgreSQL / agents)",
        result: `${num(m?.serverCpuUsPerAck)} µs (${num(m?.serverCores, 2)} / ${num(m?.postgresCores, 2)} / ${num(m?.loadCores, 2)})`,
        goal: "– (prototype: 57 µs)",
        met: undefined,
      },
      {
        scenario: "",
        measure: "rows in the database = ACKs",
        result: m?.rowsEqualAcks === 1 ? "equal" : "**differ**",
        goal: "equal",
        met: m?.rowsEqualAcks === undefined ? undefined : m.rowsEqualAcks === 1,
      },
    ];
  },
};
