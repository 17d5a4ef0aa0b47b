/**
 * One load measurement against a real server: the building block of the ingest, ACK
 * latency, fan-out and slow-subscriber scenarios.
 *
 * Four kinds of process share the machine, as they would share a small host:
 * - the server (built JavaScript or tsx) on a fresh PostgreSQL database;
 * - the WebSocket subscribers, if any (subscriber-process.ts);
 * - this process, the load generator: simulated agents over gRPC (HTTP/2), each
 *   pipelining up to `inFlight` events, as fast as the server ACKs them or at a set rate;
 * - a probe agent (probe-process.ts) that sends a few alerts per second from an
 *   otherwise idle process and stamps their commit (LISTEN/NOTIFY from a trigger added
 *   to the benchmark's own database) and their ACK.
 *
 * Ingest is load-agent ACKs per second during the measured window (after a warm-up);
 * afterwards the stored row count must equal the ACKs. Every process stamps with the
 * same clock (performance.timeOrigin + performance.now()).
 */
import { join } from "node:path";
import type { Client } from "@connectrpc/connect";
import { startSimulatedAgent } from "../../src/cli/simulated-agent.js";
import type { AlertService } from "../../src/gen/alert/alert_pb.js";
import { backendPids, createBenchDatabase, storedAlerts, withClient } from "./database.js";
import {
  type Child,
  type ChildAlive,
  type CountSubscribers,
  commitTriggerSql,
  type FinishSubscribers,
  forkChild,
  type ProbeReady,
  type ProbeResult,
  type StallSubscribers,
  type StartProbe,
  type StartSubscribers,
  type StopProbe,
  type SubscriberCounts,
  type SubscribersReady,
  type SubscribersResult,
} from "./ipc.js";
import { createLeanClient, type LeanClient } from "./lean-grpc-client.js";
import { sleep } from "./machine.js";
import { type Distribution, distribution, SampleBuffer } from "./percentiles.js";
import { CpuMeter, machineCpu, RssSampler } from "./proc-stats.js";
import type { RunContext } from "./scenario.js";
import { type ServerEntry, type ServerProcess, startServerProcess } from "./server-process.js";

/** WebSocket subscribers connected before the load starts. */
export interface SubscriberSetup {
  readonly count: number;
  /** Feed protocol version: 1 (one frame per batch) or 0 (one frame per alert). */
  readonly version: 0 | 1;
  /** Subscribers that time the probe's alerts, spread over the connection order. */
  readonly timed: number;
  /** The stall group (10%) stops reading for the whole measured window. */
  readonly stall: boolean;
}

/** What to run. */
export interface LoadRunOptions {
  readonly repoRoot: string;
  readonly entry: ServerEntry;
  /** PostgreSQL admin URL: a fresh database is created on it and dropped afterwards. */
  readonly adminUrl: string;
  readonly agents: number;
  readonly inFlight: number;
  /** Events per second per agent; 0: as fast as the server ACKs them. */
  readonly ratePerAgent: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly subscribers: SubscriberSetup | undefined;
  /** Alerts per second of the probe agent. */
  readonly probeRate: number;
  /** How long subscribers may take to catch up after the load. */
  readonly finishTimeoutMs: number;
  /** Extra TRIPWIRE_* settings of the server. */
  readonly serverEnv?: Readonly<Record<string, string>>;
  /** Directory for the server's --cpu-prof output; undefined: no profile. */
  readonly profileDir: string | undefined;
  /** Told what is happening (for the progress display). */
  readonly onStatus: (status: string) => void;
}

/** CPU use during the measured window, in cores (CPU seconds per second). */
export interface CpuCores {
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
  /** machineBusy minus all the above: PostgreSQL's background processes, anything else. */
  readonly other: number;
}

/** Delivery to the subscribers during the window, per subscriber. */
export interface DeliveryRates {
  /** Alerts per second per subscriber outside the stall group. */
  readonly othersPerSecond: number;
  /** Alerts per second per subscriber of the stall group. */
  readonly stallGroupPerSecond: number;
  readonly stallGroupSubscribers: number;
}

/** What one load run measured. */
export interface LoadResult {
  readonly windowSeconds: number;
  /** Load-agent ACKs per second in the window. */
  readonly ingestPerSecond: number;
  /** Every agent (load and probe) over the whole run. */
  readonly sent: number;
  readonly acked: number;
  readonly errors: number;
  readonly errorsByReason: Readonly<Record<string, number>>;
  /** Events that never got a reply. */
  readonly unanswered: number;
  readonly agentFailures: readonly string[];
  /** Rows in the alerts table afterwards; must equal `acked`. */
  readonly rowsStored: number;
  /** send→ACK at the load agents, ms. */
  readonly sendToAckMs: Distribution;
  /** send→ACK at the probe agent (a few alerts per second, idle process), ms. */
  readonly probeSendToAckMs: Distribution;
  /** Commit (NOTIFY from the benchmark's trigger) → probe ACK read, ms. */
  readonly commitToAckMs: Distribution;
  /** Commit → frame at a timed subscriber, ms, over (probe alert, timed subscriber). */
  readonly commitToWsMs: Distribution;
  /** The same, for the subscriber that subscribed last (written to last). */
  readonly commitToWsLastSubscriberMs: Distribution;
  /** Probe ACK read → frame at a timed subscriber, ms (negative: frame before ACK). */
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
  readonly delivery: DeliveryRates | undefined;
  readonly cpu: CpuCores;
  /** Server RSS in bytes: at the start of the window, its peak in the window, at its end. */
  readonly serverRss: { readonly start: number; readonly peak: number; readonly end: number };
  /** Server CPU per load ACK, µs (all threads). */
  readonly serverCpuUsPerAck: number;
  readonly serverWarnings: Readonly<Record<string, number>>;
  /** How the server ended when stopped (exit code 0 after SIGTERM is a clean stop). */
  readonly serverExit: { readonly code: number | null; readonly signal: string | null };
  /** Every event answered, rows stored = ACKs, no agent failed. */
  readonly consistent: boolean;
}

type SubscriberProcess = Child<
  StartSubscribers | FinishSubscribers | StallSubscribers | CountSubscribers,
  ChildAlive | SubscribersReady | SubscribersResult | SubscriberCounts
>;
type ProbeProcess = Child<StartProbe | StopProbe, ChildAlive | ProbeReady | ProbeResult>;

/** Runs the load once on a fresh database and server; stops and drops them afterwards. */
export async function runLoad(o: LoadRunOptions): Promise<LoadResult> {
  o.onStatus("creating the database, starting the server");
  const db = await createBenchDatabase(o.adminUrl);
  let server: ServerProcess | undefined;
  let subs: SubscriberProcess | undefined;
  let probe: ProbeProcess | undefined;
  const sessions: LeanClient[] = [];
  try {
    // The helper processes load (tsx) while the server starts.
    const wantSubscribers = o.subscribers !== undefined && o.subscribers.count > 0;
    subs = wantSubscribers
      ? forkChild(join(o.repoRoot, "bench/lib/subscriber-process.ts"), o.repoRoot)
      : undefined;
    const subsAlive = subs?.next("alive");
    probe = forkChild(join(o.repoRoot, "bench/lib/probe-process.ts"), o.repoRoot);
    const probeAlive = probe.next("alive");
    // Until awaited below; a child that dies meanwhile must not go unhandled.
    subsAlive?.catch(() => {});
    probeAlive.catch(() => {});
    server = await startServerProcess({
      repoRoot: o.repoRoot,
      entry: o.entry,
      databaseUrl: db.url,
      env: o.serverEnv,
      nodeArgs: o.profileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${o.profileDir}`],
    });
    const serverPid = server.pid;
    const serverWarnings = server.warnings;
    const baseUrl = `http://127.0.0.1:${server.port}`;
    await withClient(db.url, (c) => c.query(commitTriggerSql));

    let ready: SubscribersReady | undefined;
    if (subs !== undefined && o.subscribers !== undefined) {
      o.onStatus(`connecting ${o.subscribers.count} subscribers`);
      await subsAlive;
      const readyMessage = subs.next("ready");
      subs.send({
        type: "start",
        url: `ws://127.0.0.1:${server.port}/ws`,
        count: o.subscribers.count,
        version: o.subscribers.version,
        timedSubscribers: o.subscribers.timed,
        connectConcurrency: 20,
      });
      ready = await readyMessage;
      if (ready.failed > 0) {
        throw new Error(`${ready.failed} subscribers failed to connect: ${ready.firstError}`);
      }
    }
    await probeAlive;
    const probeReady = probe.next("ready");
    probe.send({ type: "start", baseUrl, databaseUrl: db.url, rate: o.probeRate });
    await probeReady;
    const subsPid = subs?.pid;
    const probePid = probe.pid;

    // The load: agents in this process, each on its own HTTP/2 connection.
    o.onStatus("warming up");
    const sendToAck = new SampleBuffer();
    let windowAcks = 0;
    let inWindow = false;
    const t0 = performance.now();
    const windowStart = t0 + o.warmupMs;
    const windowEnd = windowStart + o.durationMs;
    const agents = Array.from({ length: o.agents }, (_, i) => {
      // Plain gRPC without connect-node's per-message pipeline: the load generator
      // shares the cores with the server (bench/lib/lean-grpc-client.ts).
      const lean = createLeanClient(baseUrl);
      sessions.push(lean);
      return startSimulatedAgent({
        client: lean.client as Client<typeof AlertService>,
        hostname: `bench-agent-${i + 1}`,
        rate: o.ratePerAgent,
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

    // CPU of each party and the server's memory over the window.
    const meters = {
      server: new CpuMeter(),
      subscribers: new CpuMeter(),
      loadGenerator: new CpuMeter(),
      postgres: new CpuMeter(),
    };
    const rss = new RssSampler(serverPid, 200);
    let rssSeen = {
      first: undefined as number | undefined,
      peak: 0,
      last: undefined as number | undefined,
    };
    let machineStart = machineCpu();
    let machineEnd = machineStart;
    let measuredStart = 0;
    let measuredEnd = 0;
    let countsStart: SubscriberCounts | undefined;
    let countsEnd: SubscriberCounts | undefined;
    const progress = setInterval(() => {
      if (!inWindow) return;
      const left = Math.max(0, (windowEnd - performance.now()) / 1000);
      const rate = windowAcks / Math.max(0.001, (performance.now() - measuredStart) / 1000);
      o.onStatus(`measuring: ${rate.toFixed(0)} alerts/s, ${left.toFixed(0)} s left`);
    }, 1_000);
    const windowDone = (async () => {
      await sleep(windowStart - performance.now());
      if (subs !== undefined) {
        const counted = subs.next("counts");
        subs.send({ type: "count" });
        countsStart = await counted;
        if (o.subscribers?.stall === true) subs.send({ type: "stall", durationMs: o.durationMs });
      }
      inWindow = true;
      measuredStart = performance.now();
      machineStart = machineCpu();
      rss.start();
      meters.server.add([serverPid]);
      if (subsPid !== undefined) meters.subscribers.add([subsPid]);
      // The probe is part of the load; it is nearly idle.
      meters.loadGenerator.add([process.pid, probePid]);
      // Read after the window opened (a query takes a few ms); the pool is warm by now.
      meters.postgres.add(await backendPids(o.adminUrl, db.name));
      await sleep(windowEnd - performance.now());
      inWindow = false;
      measuredEnd = performance.now();
      machineEnd = machineCpu();
      rssSeen = rss.stop();
      for (const m of Object.values(meters)) m.sample();
      if (subs !== undefined) {
        const counted = subs.next("counts");
        subs.send({ type: "count" });
        countsEnd = await counted;
      }
    })();

    // Awaited after the agents; a failure meanwhile must not go unhandled.
    windowDone.catch(() => {});
    const finals = await Promise.all(agents.map((a) => a.done));
    await windowDone;
    clearInterval(progress);
    o.onStatus("collecting");
    for (const s of sessions) s.close();
    const probeResultMessage = probe.next("result");
    probe.send({ type: "stop", timeoutMs: 30_000 });
    const probeResult = await probeResultMessage;

    const { rows: rowsStored, maxSeq } = await storedAlerts(db.url);

    let result: SubscribersResult | undefined;
    if (subs !== undefined) {
      o.onStatus("waiting for the subscribers to catch up");
      const resultMessage = subs.next("result");
      subs.send({ type: "finish", seq: maxSeq, timeoutMs: o.finishTimeoutMs });
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
    const commitToWsLast = new SampleBuffer();
    const sendToWs = new SampleBuffer();
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
    };
    const other = Math.max(
      0,
      cpu.machineBusy -
        cpu.server -
        cpu.subscribers -
        cpu.loadGenerator -
        cpu.postgres -
        cpu.irq -
        cpu.steal,
    );

    let delivery: DeliveryRates | undefined;
    if (countsStart !== undefined && countsEnd !== undefined) {
      const seconds = (countsEnd.at - countsStart.at) / 1000;
      const perSubscriber = (alerts: number, n: number): number =>
        n === 0 ? 0 : alerts / n / seconds;
      delivery = {
        othersPerSecond: perSubscriber(
          countsEnd.othersAlerts - countsStart.othersAlerts,
          countsEnd.othersSubscribers,
        ),
        stallGroupPerSecond: perSubscriber(
          countsEnd.stallGroupAlerts - countsStart.stallGroupAlerts,
          countsEnd.stallGroupSubscribers,
        ),
        stallGroupSubscribers: countsEnd.stallGroupSubscribers,
      };
    }

    const sum = (f: (s: (typeof finals)[number]) => number): number =>
      finals.reduce((n, s) => n + f(s), 0);
    const errorsByReason: Record<string, number> = {};
    for (const f of finals) {
      for (const [reason, n] of Object.entries(f.errorsByReason))
        errorsByReason[reason] = (errorsByReason[reason] ?? 0) + n;
    }
    let subscribersInfo: LoadResult["subscribersInfo"];
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
    const acked = sum((s) => s.acked) + probeResult.samples.length;
    const errors = sum((s) => s.errors) + probeResult.errors;
    const unanswered = sum((s) => s.inFlight);
    const ingestPerSecond = windowAcks / windowSeconds;
    // Stopped here, before the subscribers and probe are killed, to see how it ends.
    const serverExit = await server.stop(30_000);
    server = undefined;
    return {
      windowSeconds,
      ingestPerSecond,
      sent: sum((s) => s.sent) + probeResult.sent,
      acked,
      errors,
      errorsByReason,
      unanswered,
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
      delivery,
      cpu: { ...cpu, other },
      serverRss: {
        start: rssSeen.first ?? 0,
        peak: rssSeen.peak,
        end: rssSeen.last ?? 0,
      },
      serverCpuUsPerAck: ingestPerSecond > 0 ? (cpu.server * 1e6) / ingestPerSecond : Number.NaN,
      serverWarnings: Object.fromEntries(serverWarnings),
      serverExit,
      consistent:
        rowsStored === acked && unanswered === 0 && failures.length === 0 && serverExit.code === 0,
    };
  } finally {
    for (const s of sessions) s.close();
    subs?.kill();
    probe?.kill();
    await server?.stop(30_000);
    await db.drop();
  }
}

/**
 * The suite's load settings for `runLoad`, with the scenario's own choices on top;
 * `profileName` names the server's profile directory when profiling.
 */
export function loadOptions(
  ctx: RunContext,
  profileName: string,
  own: Partial<LoadRunOptions>,
): LoadRunOptions {
  const s = ctx.settings;
  return {
    repoRoot: s.repoRoot,
    entry: s.entry,
    adminUrl: s.adminUrl,
    agents: s.agents,
    inFlight: s.inFlight,
    ratePerAgent: 0,
    warmupMs: s.warmupMs,
    durationMs: s.durationMs,
    subscribers: undefined,
    probeRate: s.probeRate,
    finishTimeoutMs: s.finishTimeoutMs,
    profileDir: s.profileDir === undefined ? undefined : join(s.profileDir, profileName),
    onStatus: ctx.onStatus,
    ...own,
  };
}

/** Facts about a load run worth a line under the table (empty when all went well). */
export function loadNotes(label: string, r: LoadResult): string[] {
  const problems: string[] = [];
  if (r.rowsStored !== r.acked) problems.push(`${r.rowsStored} rows stored for ${r.acked} ACKs`);
  if (r.unanswered > 0) problems.push(`${r.unanswered} events never answered`);
  for (const f of r.agentFailures) problems.push(f);
  for (const [reason, n] of Object.entries(r.errorsByReason))
    problems.push(`${n} × ERROR "${reason}"`);
  const info = r.subscribersInfo;
  if (info !== undefined) {
    // 1006: no close frame, i.e. the server terminated the connection (missed ping).
    const closes = Object.entries(info.closedByServer).map(
      ([code, n]) => `${n} × ${code}${code === "1006" ? " (terminated)" : ""}`,
    );
    if (closes.length > 0) problems.push(`subscribers closed by the server: ${closes.join(", ")}`);
    if (info.droppedReported > 0)
      problems.push(`${info.droppedReported} deliveries dropped (reported to the subscribers)`);
    if (info.gaps > 0) problems.push(`${info.gaps} deliveries missing unreported`);
    if (info.undecodedFrames > 0)
      problems.push(`${info.undecodedFrames} compressed frames no timed subscriber decoded`);
    if (info.caughtUp < info.subscribers)
      problems.push(`${info.subscribers - info.caughtUp} subscribers never caught up`);
  }
  if (r.serverExit.code !== 0)
    problems.push(`server ended with ${r.serverExit.code ?? r.serverExit.signal} when stopped`);
  if (info !== undefined && info.retried > 0)
    problems.push(`${info.retried} subscriber connections retried`);
  if (r.commitsMissed > 0) problems.push(`${r.commitsMissed} probe commits not announced`);
  const warnings = Object.entries(r.serverWarnings).filter(
    ([msg]) => !msg.includes("open to anyone who can reach this port"),
  );
  if (warnings.length > 0)
    problems.push(`server warnings: ${warnings.map(([msg, n]) => `${n} × "${msg}"`).join(", ")}`);
  return problems.length === 0 ? [] : [`${label}: ${problems.join("; ")}.`];
}
