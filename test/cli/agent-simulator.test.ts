/**
 * The agent simulator: its events against the server's own validation, its pacing and
 * pipelining in process, and the CLI as a child process against a real server on every
 * database backend.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { sql } from "drizzle-orm";
import type { FastifyRequest } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  errorReason,
  invalidKinds,
  isDeliberatelyInvalid,
  makeInvalidEvent,
  makeRealisticEvent,
  Pacer,
  type Rng,
  runSimulatedAgent,
} from "../../src/cli/simulated-agent.js";
import { configWith } from "../../src/config.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { validateEvent } from "../../src/ingest/validation.js";
import { nowMicros } from "../../src/storage/alert-types.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cliPath = "src/cli/agent-simulator.ts";
const hostId = "4b0e3f4c-8d1a-4b8e-9a59-7f8c1d2e3a4b";

/** A seeded generator (mulberry32), so event contents are the same on every run. */
function seeded(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the server's request log says about one request (a type: pino wants an index signature). */
type SeenRequest = {
  readonly url: string;
  readonly contentType: string;
  readonly httpVersion: string;
};

interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Starts the CLI as `node --import tsx`, the way `npm run agent` runs it. */
function startCli(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", cliPath, ...args], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    // A hung simulator must not outlive the test.
    timeout: 60_000,
  });
}

async function finished(child: ChildProcess): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
  });
  child.stderr?.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stdout, stderr };
}

function runCli(args: readonly string[]): Promise<CliRun> {
  return finished(startCli(args));
}

/** The `--json` summary fields the tests read. */
interface JsonSummary {
  ok: boolean;
  sent: number;
  invalidSent: number;
  acked: number;
  errors: number;
  missing: number;
  errorsByReason: Record<string, number>;
  validRefused: number;
  invalidAccepted: number;
  failures: string[];
  agents: Array<{ hostname: string; hostId: string; sent: number; acked: number }>;
}

function parseSummary(run: CliRun): JsonSummary {
  const lines = run.stdout.trim().split("\n");
  expect(lines, `stdout: ${run.stdout}\nstderr: ${run.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0] as string) as JsonSummary;
}

describe("simulated events", () => {
  const limits = configWith();

  it("every realistic event passes the server's validation, and all types and severities occur, mostly INFO and WARN", () => {
    const rng = seeded(1);
    const types = new Map<string, number>();
    const severities = new Map<string, number>();
    const ids = new Set<string>();
    for (let i = 0; i < 600; i++) {
      const event = makeRealisticEvent(hostId, rng);
      const verdict = validateEvent(event, nowMicros(), limits);
      expect(verdict.ok ? "valid" : verdict.error).toBe("valid");
      ids.add(event.alertId);
      types.set(event.tripwireType, (types.get(event.tripwireType) ?? 0) + 1);
      severities.set(event.severity, (severities.get(event.severity) ?? 0) + 1);
    }
    expect(ids.size).toBe(600);
    expect([...types.keys()].sort()).toEqual(["FILE", "NETWORK", "PROCESS"]);
    expect([...severities.keys()].sort()).toEqual(["CRITICAL", "INFO", "WARN"]);
    const critical = severities.get("CRITICAL") ?? 0;
    expect((severities.get("INFO") ?? 0) + (severities.get("WARN") ?? 0)).toBeGreaterThan(
      3 * critical,
    );
  });

  it("each event's detail fits its type, and addresses stay in loopback or documentation ranges", () => {
    const rng = seeded(2);
    const reserved = /^(127\.\d+\.\d+\.\d+|192\.0\.2\.\d+|198\.51\.100\.\d+|203\.0\.113\.\d+)$/;
    for (let i = 0; i < 300; i++) {
      const event = makeRealisticEvent(hostId, rng);
      const detail = JSON.parse(new TextDecoder().decode(event.eventDetailJson)) as Record<
        string,
        unknown
      >;
      if (event.tripwireType === "FILE") {
        expect(detail).toMatchObject({
          path: expect.stringMatching(/^\//),
          operation: expect.stringMatching(/^(write|chmod|delete)$/),
          user: expect.any(String),
        });
      } else if (event.tripwireType === "NETWORK") {
        expect(detail).toMatchObject({
          dst_ip: expect.stringMatching(reserved),
          src_ip: expect.stringMatching(reserved),
          dst_port: expect.any(Number),
          protocol: expect.stringMatching(/^(tcp|udp)$/),
          direction: expect.stringMatching(/^(inbound|outbound)$/),
        });
      } else {
        expect(detail).toMatchObject({
          pid: expect.any(Number),
          ppid: expect.any(Number),
          exe: expect.stringMatching(/^\//),
          cmdline: expect.any(String),
          user: expect.any(String),
        });
      }
    }
  });

  it("each deliberately invalid kind is refused by the server's validation for its own reason", () => {
    const expected: Record<(typeof invalidKinds)[number], RegExp> = {
      "bad-tripwire-type": /^tripwire_type /,
      "stale-timestamp": /older than the maximum event age/,
      "bad-json": /^event_detail_json is not valid JSON/,
      "missing-rule-name": /^rule_name is required$/,
    };
    const rng = seeded(3);
    for (const kind of invalidKinds) {
      const verdict = validateEvent(makeInvalidEvent(hostId, kind, rng), nowMicros(), limits);
      expect(verdict.ok, kind).toBe(false);
      if (!verdict.ok) expect(verdict.error).toMatch(expected[kind]);
    }
  });

  it("the error mix picks exactly that fraction of events, spread evenly", () => {
    const picked = (mix: number, n: number): number[] =>
      Array.from({ length: n }, (_, i) => i).filter((i) => isDeliberatelyInvalid(i, mix));
    expect(picked(0.2, 20)).toEqual([4, 9, 14, 19]);
    expect(picked(0, 100)).toEqual([]);
    expect(picked(1, 5)).toEqual([0, 1, 2, 3, 4]);
    expect(picked(0.25, 1000)).toHaveLength(250);
  });

  it("errors that differ only in their values count under one reason", () => {
    const a = errorReason(
      "timestamp_us 1700000000000000 (2023-11-14T22:13:20.000000Z) is older than the maximum event age of 300 s (server time 2026-01-01T00:00:00.000000Z); check the agent's clock",
    );
    const b = errorReason(
      "timestamp_us 1600000000000000 (2020-09-13T12:26:40.000000Z) is older than the maximum event age of 300 s (server time 2026-01-01T00:00:01.000000Z); check the agent's clock",
    );
    expect(a).toBe(b);
    expect(a).toBe("timestamp_us N is older than the maximum event age of N s");
    expect(errorReason('tripwire_type "USB" is not one of FILE, NETWORK, PROCESS')).toBe(
      errorReason('tripwire_type "file" is not one of FILE, NETWORK, PROCESS'),
    );
  });
});

describe("Pacer", () => {
  it("schedules event n at n / rate after the first, so late events go out at once", () => {
    let now = 1_000;
    const pacer = new Pacer(100, () => now); // one event per 10 ms
    expect(pacer.next()).toBe(0);
    expect(pacer.next()).toBe(10);
    now += 4;
    expect(pacer.next()).toBe(16); // due at 1020
    now = 1_100; // held back: events 3..10 were due from 1030 to 1100
    const waits = Array.from({ length: 8 }, () => pacer.next());
    expect(waits).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(pacer.next()).toBe(10); // event 11 is due at 1110
  });

  it("never waits at rate 0", () => {
    const pacer = new Pacer(0, () => 0);
    expect(Array.from({ length: 5 }, () => pacer.next())).toEqual([0, 0, 0, 0, 0]);
  });
});

describe.each(backends)("agent simulator against a real server [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;
  /** Every RPC the server received, from its request log: which protocol, which HTTP. */
  const requests: SeenRequest[] = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    const stream = {
      write(line: string): void {
        const entry = JSON.parse(line) as { msg?: string; req?: SeenRequest };
        if (entry.msg === "incoming request" && entry.req !== undefined) requests.push(entry.req);
      },
    };
    server = await startServer(
      database,
      { flushIntervalMs: 20 },
      {
        logger: {
          level: "info",
          stream,
          serializers: {
            req: (req: FastifyRequest): SeenRequest => ({
              url: req.url,
              contentType: req.headers["content-type"] ?? "",
              httpVersion: req.raw.httpVersion,
            }),
          },
        },
      },
    );
  });

  /** The StreamAlerts calls received since `from` requests had been seen. */
  function streamsSince(from: number): SeenRequest[] {
    return requests.slice(from).filter((r) => r.url === "/alert.AlertService/StreamAlerts");
  }
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  async function storedCount(hostIds: readonly string[]): Promise<number> {
    const rows = await database.rows<{ n: number }>(
      sql`select count(*)::int as n from alerts where host_id::text in ${hostIds}`,
    );
    return rows[0]?.n ?? -1;
  }

  it("two pipelining agents with a 0.2 error mix get a reply for every event; the ACKed ones are stored and both hosts registered", async () => {
    const seen = requests.length;
    const run = await runCli([
      "--url",
      server.baseUrl,
      "--agents",
      "2",
      "--count",
      "50",
      "--rate",
      "0",
      "--error-mix",
      "0.2",
      "--json",
      "--quiet",
    ]);
    expect(run.code, run.stderr).toBe(0);
    const summary = parseSummary(run);
    expect(summary).toMatchObject({
      ok: true,
      sent: 100,
      invalidSent: 20,
      acked: 80,
      errors: 20,
      missing: 0,
      validRefused: 0,
      invalidAccepted: 0,
      failures: [],
    });
    // The four kinds in turn, ten invalid events per agent: 3, 3, 2, 2 each.
    expect(Object.values(summary.errorsByReason).sort()).toEqual([4, 4, 6, 6]);

    const hostIds = summary.agents.map((a) => a.hostId);
    expect(await storedCount(hostIds)).toBe(summary.acked);
    const hosts = await database.rows<{ hostname: string }>(
      sql`select hostname from hosts where host_id::text in ${hostIds} order by hostname`,
    );
    expect(hosts.map((h) => h.hostname)).toEqual(summary.agents.map((a) => a.hostname).sort());
    for (const h of hosts) expect(h.hostname).toMatch(/^sim-[12]-[0-9a-f]{6}$/);
    // One gRPC stream per agent, over HTTP/2.
    expect(streamsSince(seen)).toEqual([
      { url: expect.any(String), contentType: "application/grpc+proto", httpVersion: "2.0" },
      { url: expect.any(String), contentType: "application/grpc+proto", httpVersion: "2.0" },
    ]);
  });

  it.each([
    ["connect", "application/connect+proto"],
    ["grpc-web", "application/grpc-web+proto"],
  ])(
    "--protocol %s streams over HTTP/2 (%s) and every event is answered and stored",
    async (protocol, contentType) => {
      const seen = requests.length;
      const prefix = `${protocol}-${kind}-${Date.now()}`;
      const run = await runCli([
        "--url",
        server.baseUrl,
        "--protocol",
        protocol,
        "--agents",
        "2",
        "--count",
        "30",
        "--rate",
        "0",
        "--hostname-prefix",
        prefix,
        "--json",
        "--quiet",
      ]);
      expect(run.code, run.stderr).toBe(0);
      const summary = parseSummary(run);
      expect(summary).toMatchObject({ ok: true, sent: 60, acked: 60, errors: 0, missing: 0 });
      expect(summary.agents.map((a) => a.hostname)).toEqual([`${prefix}-1`, `${prefix}-2`]);
      expect(await storedCount(summary.agents.map((a) => a.hostId))).toBe(60);
      const calls = streamsSince(seen);
      expect(calls).toHaveLength(2);
      for (const call of calls) expect(call).toMatchObject({ contentType, httpVersion: "2.0" });
    },
  );

  it("SIGINT stops an unbounded run; the simulator waits for the outstanding replies and exits 0", async () => {
    const child = startCli([
      "--url",
      server.baseUrl,
      "--duration",
      "0",
      "--rate",
      "0",
      "--max-in-flight",
      "32",
      "--json",
    ]);
    const done = finished(child);
    // The first progress line shows the run is streaming.
    child.stderr?.on("data", function onData(chunk: string) {
      if (chunk.includes(" s] sent ")) {
        child.stderr?.off("data", onData);
        child.kill("SIGINT");
      }
    });
    const run = await done;
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/stopping; waiting up to 5 s for replies/);
    const summary = parseSummary(run);
    expect(summary.sent).toBeGreaterThan(0);
    expect(summary.acked).toBe(summary.sent);
    expect(summary.missing).toBe(0);
    expect(await storedCount(summary.agents.map((a) => a.hostId))).toBe(summary.acked);
  });

  it("an agent keeps up to max-in-flight events unanswered without waiting for each ACK", async () => {
    // Replies come only when 5 events are pending: an agent that waited for each ACK
    // would stall, one that sent a 6th before a reply would be seen doing so.
    const held = await startServer(database, { flushIntervalMs: 60_000, batchSize: 5 });
    try {
      const client = createClient(AlertService, createGrpcTransport({ baseUrl: held.baseUrl }));
      let unanswered = 0;
      let most = 0;
      const stats = await runSimulatedAgent({
        client,
        hostname: `in-flight-${kind}`,
        rate: 0,
        durationMs: 10_000,
        count: 20,
        maxInFlight: 5,
        onSend: () => {
          unanswered++;
          most = Math.max(most, unanswered);
        },
        onReply: () => {
          unanswered--;
        },
      });
      expect(stats).toMatchObject({ sent: 20, acked: 20, inFlight: 0, failure: undefined });
      expect(most).toBe(5);
    } finally {
      await held.close();
    }
  });

  it("aborting the signal stops sending, and every event sent is still answered", async () => {
    const client = server.grpcClient();
    const abort = new AbortController();
    let replies = 0;
    const stats = await runSimulatedAgent({
      client,
      hostname: `abort-${kind}`,
      rate: 0,
      durationMs: 0,
      maxInFlight: 16,
      errorMix: 0.5,
      signal: abort.signal,
      onReply: () => {
        if (++replies === 40) abort.abort();
      },
    });
    expect(stats.failure).toBeUndefined();
    expect(stats.sent).toBeGreaterThanOrEqual(40);
    expect(stats.acked + stats.errors).toBe(stats.sent);
    expect(stats.inFlight).toBe(0);
    expect(stats.invalidSent).toBe(stats.errors);
    expect(stats.validRefused).toBe(0);
  });
});

describe("agent simulator command line", () => {
  it("a bad flag value exits 2 with a message naming the flag", async () => {
    const run = await runCli(["--rate", "fast"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--rate "fast" is not valid: expected events per second/);
    expect(run.stdout).toBe("");
  });

  it("an unknown flag exits 2 with a message naming it", async () => {
    const run = await runCli(["--agent", "3"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/Unknown option '--agent'/);
  });

  it("an unreachable server exits 1 and says why", async () => {
    // A port that was free a moment ago: nothing listens on it.
    const probe = createServer();
    probe.listen(0, "127.0.0.1");
    await once(probe, "listening");
    const address = probe.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    probe.close();
    await once(probe, "close");

    const run = await runCli(["--url", `http://127.0.0.1:${address.port}`, "--json", "--quiet"]);
    expect(run.code).toBe(1);
    const summary = parseSummary(run);
    expect(summary).toMatchObject({ ok: false, sent: 0 });
    expect(summary.failures[0]).toMatch(/RegisterAgent failed: .*ECONNREFUSED/);
  });
});
