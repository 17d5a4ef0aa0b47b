/**
 * The child processes of the benchmark (subscribers, probe agent, storm agent, echo servers): their IPC
 * messages, a typed handle to drive them, and the clock every process stamps events with.
 */
import { fork } from "node:child_process";
import type { AgentStats } from "../../src/cli/simulated-agent.js";
import { onAbort } from "./cleanup.js";

/**
 * Wall-clock time in epoch milliseconds with sub-millisecond resolution. All processes
 * run on one machine, so their stamps are on one clock (performance.timeOrigin is taken
 * from the system clock when each process starts).
 */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * The probe agent's alert_ids start with this (still a valid UUID), so subscribers can
 * find its alerts in a frame without parsing it. A random UUID starts so once in 2^32.
 */
export const probeAlertPrefix = "00000000-";

/** Parent → subscriber process: connect the subscribers. */
export interface StartSubscribers {
  readonly type: "start";
  /** ws://host:port/ws (plus query). */
  readonly url: string;
  readonly count: number;
  /** Feed protocol version: 1 (subprotocol tripwire.v1) or 0 (contract frames). */
  readonly version: 0 | 1;
  /** This many subscribers, spread evenly over the connection order, time probe alerts. */
  readonly timedSubscribers: number;
  /** Connections opened at once. */
  readonly connectConcurrency: number;
}

/** Parent → subscriber process: stop once every subscriber has seen `seq` (or the timeout passed). */
export interface FinishSubscribers {
  readonly type: "finish";
  readonly seq: number;
  readonly timeoutMs: number;
}

/**
 * Subscribers whose index is `stallGroupOffset` modulo `stallGroupEvery` form the stall
 * group (10%); the others, the timed ones among them, never stall.
 */
export const stallGroupEvery = 10;
export const stallGroupOffset = 4;

/** Parent → subscriber process: the stall group stops reading for `durationMs`, then resumes. */
export interface StallSubscribers {
  readonly type: "stall";
  readonly durationMs: number;
}

/** Parent → subscriber process: report the delivery counters now. */
export interface CountSubscribers {
  readonly type: "count";
}

/** Subscriber process → parent: alerts received so far by each group, and when. */
export interface SubscriberCounts {
  readonly type: "counts";
  /** epochMs() when counted. */
  readonly at: number;
  /** Alerts received, summed over the subscribers outside the stall group. */
  readonly othersAlerts: number;
  readonly othersSubscribers: number;
  readonly stallGroupAlerts: number;
  readonly stallGroupSubscribers: number;
}

/** Subscriber process → parent: every subscriber is connected and live (or failed). */
export interface SubscribersReady {
  readonly type: "ready";
  readonly connected: number;
  readonly failed: number;
  /** Connection attempts that failed and were tried again. */
  readonly retried: number;
  readonly firstError: string | undefined;
  readonly connectMs: number;
}

/** One probe alert as a timed subscriber received it: alert_id, epochMs() of the frame. */
export type TimedDelivery = readonly [alertId: string, receivedAt: number];

/** What one timed subscriber saw. */
export interface TimedSubscriber {
  /** Position in the connection order (0 = subscribed first, so written to first). */
  readonly index: number;
  readonly deliveries: readonly TimedDelivery[];
}

/** Subscriber process → parent: totals once finished. */
export interface SubscribersResult {
  readonly type: "result";
  readonly subscribers: number;
  /** Subscribers that saw every alert up to the awaited seq before the timeout. */
  readonly caughtUp: number;
  /** Alerts received, summed over subscribers. */
  readonly alertsReceived: number;
  readonly frames: number;
  readonly bytes: number;
  /** Alerts the server reported as dropped (`dropped` messages), summed. */
  readonly droppedReported: number;
  /** Alerts missing from the seq sequence a subscriber received, summed. */
  readonly gaps: number;
  /** Connections the server closed, by close code. */
  readonly closedByServer: Readonly<Record<string, number>>;
  /** Uncompressed `alerts` message bytes the timed subscribers decoded, and their alerts. */
  readonly sampleBytes: number;
  readonly sampleAlerts: number;
  /** Compressed frames no timed subscriber decoded, so their alerts were not counted. */
  readonly undecodedFrames: number;
  readonly timed: readonly TimedSubscriber[];
}

/**
 * The channel on which the benchmark's trigger (see `commitTriggerSql`) announces each
 * committed probe alert. NOTIFY is delivered when the inserting transaction commits, so
 * a listener learns the commit time without any change to the server.
 */
export const commitChannel = "bench_commit";

/**
 * Installs the trigger in the benchmark's own database (after the server migrated it).
 * Its WHEN clause passes only probe alerts (alert_id below 00000001-…), so the other
 * rows cost one uuid comparison each.
 */
export const commitTriggerSql = `
CREATE FUNCTION bench_notify_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('${commitChannel}', NEW.alert_id::text);
  RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_commit AFTER INSERT ON alerts FOR EACH ROW
  WHEN (NEW.alert_id < '00000001-0000-0000-0000-000000000000'::uuid)
  EXECUTE FUNCTION bench_notify_commit();`;

/** Parent → probe process: register and start sending `rate` alerts per second. */
export interface StartProbe {
  readonly type: "start";
  readonly baseUrl: string;
  /** The benchmark database, to LISTEN for commits of probe alerts. */
  readonly databaseUrl: string;
  readonly rate: number;
}

/** Parent → probe process: stop sending, collect the outstanding ACKs, report. */
export interface StopProbe {
  readonly type: "stop";
  readonly timeoutMs: number;
}

/** Probe process → parent: registered and sending. */
export interface ProbeReady {
  readonly type: "ready";
}

/**
 * One ACKed probe alert, times in epochMs(): handed to the stream, its commit announced
 * (NaN if the notification never came), its ACK read.
 */
export type ProbeSample = readonly [
  alertId: string,
  sentAt: number,
  committedAt: number,
  ackedAt: number,
];

/** Probe process → parent: every ACKed probe alert, and what went wrong. */
export interface ProbeResult {
  readonly type: "result";
  readonly samples: readonly ProbeSample[];
  readonly sent: number;
  readonly errors: number;
  readonly failure: string | undefined;
}

/** Parent → storm process: run one simulated agent that sends `count` alerts as fast as it can. */
export interface StartStorm {
  readonly type: "start-storm";
  readonly baseUrl: string;
  readonly hostname: string;
  readonly count: number;
  readonly maxInFlight: number;
  readonly drainTimeoutMs: number;
}

/** Parent → storm process: report its progress now. */
export interface CountStorm {
  readonly type: "count-storm";
}

/** Storm process → parent: replies read so far. */
export interface StormProgress {
  readonly type: "storm-progress";
  readonly acked: number;
  readonly errors: number;
}

/** Storm process → parent: the agent's final counters, and when it ran (epochMs()). */
export interface StormResult {
  readonly type: "storm-result";
  readonly stats: AgentStats;
  /** The "start-storm" message arrived (before RegisterAgent). */
  readonly startedAt: number;
  /** The first event was handed to the stream; undefined if none was. */
  readonly sendingAt: number | undefined;
  /** The stream ended: every reply read, or the drain timed out, or it failed. */
  readonly doneAt: number;
}

/** Subscriber, probe or storm process → parent: loaded and listening for messages. */
export interface ChildAlive {
  readonly type: "alive";
}

/** Echo server process → parent: listening on `port` (127.0.0.1, h2c). */
export interface EchoListening {
  readonly type: "listening";
  readonly port: number;
}

/** Parent → child messages. */
export type ToChild =
  | StartSubscribers
  | FinishSubscribers
  | StallSubscribers
  | CountSubscribers
  | StartProbe
  | StopProbe
  | StartStorm
  | CountStorm;
/** Child → parent messages. */
export type FromChild =
  | ChildAlive
  | SubscribersReady
  | SubscribersResult
  | SubscriberCounts
  | ProbeReady
  | ProbeResult
  | StormProgress
  | StormResult
  | EchoListening;

/** A child process driven over IPC. */
export interface Child<In extends ToChild, Out extends FromChild> {
  readonly pid: number;
  send(message: In): void;
  /** The next message of `type`; rejects if the process exits first. */
  next<T extends Out["type"]>(type: T): Promise<Extract<Out, { type: T }>>;
  /** Resolves once the process has exited. */
  readonly exited: Promise<void>;
  kill(): void;
}

/** Forks `script` (a .ts file, run through tsx) with an IPC channel. */
export function forkChild<In extends ToChild, Out extends FromChild>(
  script: string,
  cwd: string,
  args: readonly string[] = [],
): Child<In, Out> {
  const child = fork(script, args, {
    cwd,
    execArgv: ["--import", "tsx"],
    // Structured clone: the results carry large arrays.
    serialization: "advanced",
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Send errors (the channel closed under a send) show as the exit they come from.
  child.on("error", () => {});
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", kill);
  const release = onAbort(async () => {
    kill();
    await exited;
  });
  void exited.then(() => {
    process.off("exit", kill);
    release();
  });
  if (child.pid === undefined) throw new Error(`could not start ${script}`);
  return {
    pid: child.pid,
    send: (message) => {
      // A child that died (or was killed on Ctrl-C) fails the next `next()` instead.
      if (child.connected) child.send(message);
    },
    next: (type) =>
      new Promise((resolve, reject) => {
        const onMessage = (msg: Out): void => {
          if (msg.type !== type) return;
          child.off("message", onMessage);
          resolve(msg as Extract<Out, { type: typeof type }>);
        };
        child.on("message", onMessage);
        void exited.then(() => reject(new Error(`${script} exited before "${type}"`)));
      }),
    exited,
    kill,
  };
}

/** In a child: sends `message` to the parent and resolves once it is written. */
export function sendToParent(message: FromChild): Promise<void> {
  return new Promise((resolve, reject) => {
    process.send?.(message, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}
