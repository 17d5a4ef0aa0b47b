/**
 * Scenario 6, RPC headroom: how many bidi messages per second the protocol layer alone
 * carries on this machine. A minimal echo service (bench/lib/echo-service.ts) runs as
 * its own process, first on Connect over Fastify (h2c, our server's stack), then on
 * @grpc/grpc-js; the same client load (the agents' shape: `agents` streams, each on its
 * own HTTP/2 connection, pipelining up to `inFlight` AgentEvents) drives both. Ingest
 * (scenario 2) as a share of the Connect echo rate says how much of the protocol's
 * capacity the real work leaves.
 */
import { join } from "node:path";
import { type CallOptions, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { makeRealisticEvent } from "../../src/cli/simulated-agent.js";
import type { AgentEvent, ServerCommand } from "../../src/gen/alert/alert_pb.js";
import { EchoService } from "../lib/echo-service.js";
import { type EchoListening, forkChild } from "../lib/ipc.js";
import { sleep } from "../lib/machine.js";
import { CpuMeter } from "../lib/proc-stats.js";
import { num, type Outcome, pct, type RunContext, type Scenario } from "../lib/scenario.js";

const servers = ["connect", "grpc-js"] as const;
type EchoKind = (typeof servers)[number];

interface EchoClient {
  stream(requests: AsyncIterable<AgentEvent>, options?: CallOptions): AsyncIterable<ServerCommand>;
}

/** One pipelined stream: sends from `pool` while fewer than `inFlight` are unanswered. */
async function pump(
  client: EchoClient,
  pool: readonly AgentEvent[],
  inFlight: number,
  stop: AbortSignal,
  onReply: () => void,
): Promise<void> {
  let outstanding = 0;
  let wake: (() => void) | undefined;
  const nudge = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  stop.addEventListener("abort", nudge, { once: true });
  async function* events(): AsyncGenerator<AgentEvent> {
    for (let i = 0; !stop.aborted; i++) {
      while (outstanding >= inFlight && !stop.aborted) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      if (stop.aborted) return;
      outstanding++;
      yield pool[i % pool.length] as AgentEvent;
    }
  }
  for await (const _reply of client.stream(events())) {
    outstanding--;
    onReply();
    nudge();
  }
}

interface EchoResult {
  readonly messagesPerSecond: number;
  readonly serverCpuUsPerMessage: number;
  readonly serverCores: number;
}

async function measure(ctx: RunContext, kind: EchoKind): Promise<EchoResult> {
  const s = ctx.settings;
  const child = forkChild<never, EchoListening>(
    join(s.repoRoot, "bench/lib/echo-server-process.ts"),
    s.repoRoot,
    [kind],
  );
  const sessions: Http2SessionManager[] = [];
  try {
    const { port } = await child.next("listening");
    const baseUrl = `http://127.0.0.1:${port}`;
    const pool = Array.from({ length: 1000 }, () => makeRealisticEvent("bench-echo"));
    const stop = new AbortController();
    let replies = 0;
    let windowReplies = 0;
    let inWindow = false;
    const streams = Array.from({ length: s.agents }, () => {
      const sessionManager = new Http2SessionManager(baseUrl);
      sessions.push(sessionManager);
      const client = createClient(
        EchoService,
        createGrpcTransport({ baseUrl, sessionManager }),
      ) as unknown as EchoClient;
      return pump(client, pool, s.inFlight, stop.signal, () => {
        replies++;
        if (inWindow) windowReplies++;
      });
    });
    const failed = Promise.all(streams).then(
      () => undefined,
      (err: unknown) => err,
    );
    ctx.onStatus(`${kind}: warming up`);
    await sleep(s.warmupMs);
    const meter = new CpuMeter();
    meter.add([child.pid]);
    inWindow = true;
    const began = performance.now();
    const status = setInterval(() => {
      const rate = windowReplies / ((performance.now() - began) / 1000);
      ctx.onStatus(`${kind}: measuring: ${num(rate)} messages/s`);
    }, 1_000);
    await sleep(s.durationMs);
    inWindow = false;
    clearInterval(status);
    meter.sample();
    const seconds = (performance.now() - began) / 1000;
    stop.abort();
    const err = await failed;
    if (err !== undefined) throw new Error(`${kind} echo stream failed: ${String(err)}`);
    if (replies === 0) throw new Error(`${kind} echo server answered nothing`);
    const rate = windowReplies / seconds;
    return {
      messagesPerSecond: rate,
      serverCpuUsPerMessage: (meter.seconds * 1e6) / windowReplies,
      serverCores: meter.seconds / seconds,
    };
  } finally {
    for (const session of sessions) session.abort();
    child.kill();
    await child.exited;
  }
}

async function run(ctx: RunContext): Promise<Outcome> {
  const connect = await measure(ctx, "connect");
  const grpcJs = await measure(ctx, "grpc-js");
  return {
    metrics: {
      connectPerSecond: connect.messagesPerSecond,
      connectCpuUs: connect.serverCpuUsPerMessage,
      grpcJsPerSecond: grpcJs.messagesPerSecond,
      grpcJsCpuUs: grpcJs.serverCpuUsPerMessage,
    },
    raw: { connect, grpcJs },
    consistent: true,
    notes: [],
  };
}

export const rpcHeadroom: Scenario = {
  number: 6,
  id: "rpc-headroom",
  title: "RPC headroom",
  needs: [],
  run,
  rows(medians) {
    const m = medians.get("rpc-headroom");
    const ingest = medians.get("ingest")?.ingestPerSecond;
    return [
      {
        scenario: "6. RPC headroom",
        measure: "bidi echo messages/s, Connect on Fastify (h2c) (of grpc-js)",
        result: `${num(m?.connectPerSecond)} (${pct(m?.connectPerSecond, m?.grpcJsPerSecond)}), ${num(m?.connectCpuUs, 1)} µs CPU/message`,
        goal: "– (the protocol layer's limit)",
        met: undefined,
      },
      {
        scenario: "",
        measure: "bidi echo messages/s, @grpc/grpc-js",
        result: `${num(m?.grpcJsPerSecond)}, ${num(m?.grpcJsCpuUs, 1)} µs CPU/message`,
        goal: "–",
        met: undefined,
      },
      {
        scenario: "",
        measure: "ingest (2) as a share of the Connect echo rate",
        result: pct(ingest, m?.connectPerSecond),
        goal: "–",
        met: undefined,
      },
    ];
  },
};
