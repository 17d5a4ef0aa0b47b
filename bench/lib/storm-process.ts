/**
 * The storm agent of scenario 7, run as its own process.
 *
 * One simulated agent sends `count` alerts as fast as its in-flight bound allows. That
 * is tens of thousands of messages per second through connect-node; in the benchmark's
 * process it would hold up the event loop that reads the trickle agents' ACKs, so the
 * trickle's latency would include the load generator's own queueing. On a real network
 * the storm comes from another machine; here it at least gets its own event loop.
 *
 * Run by bench/scenarios/storm.ts: `node --import tsx bench/lib/storm-process.ts`.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { type SimulatedAgent, startSimulatedAgent } from "../../src/cli/simulated-agent.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { epochMs, type StartStorm, sendToParent, type ToChild } from "./ipc.js";

let agent: SimulatedAgent | undefined;

async function start(msg: StartStorm): Promise<void> {
  if (agent !== undefined) throw new Error("the storm was started twice");
  const startedAt = epochMs();
  let sendingAt: number | undefined;
  const sessionManager = new Http2SessionManager(msg.baseUrl);
  agent = startSimulatedAgent({
    client: createClient(
      AlertService,
      createGrpcTransport({ baseUrl: msg.baseUrl, sessionManager }),
    ),
    hostname: msg.hostname,
    rate: 0,
    durationMs: 0,
    count: msg.count,
    maxInFlight: msg.maxInFlight,
    drainTimeoutMs: msg.drainTimeoutMs,
    onSend() {
      sendingAt ??= epochMs();
    },
  });
  const stats = await agent.done;
  const doneAt = epochMs();
  sessionManager.abort();
  await sendToParent({ type: "storm-result", stats, startedAt, sendingAt, doneAt });
  process.disconnect();
}

async function count(): Promise<void> {
  const stats = agent?.stats();
  await sendToParent({
    type: "storm-progress",
    acked: stats?.acked ?? 0,
    errors: stats?.errors ?? 0,
  });
}

process.on("message", (msg: ToChild) => {
  const run =
    msg.type === "start-storm"
      ? start(msg)
      : msg.type === "count-storm"
        ? count()
        : Promise.resolve();
  run.catch((err: unknown) => {
    process.stderr.write(`storm process failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exitCode = 1;
    process.disconnect();
  });
});
// Started while the server starts: the parent waits for this before sending "start-storm".
void sendToParent({ type: "alive" });
