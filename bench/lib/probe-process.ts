/**
 * The probe agent of the benchmark, run as its own, mostly idle process.
 *
 * It sends a few alerts per second (alert_ids starting with `probeAlertPrefix`) on one
 * StreamAlerts stream and stamps when each was sent, when PostgreSQL announced its
 * commit (LISTEN on `commitChannel`) and when its ACK was read. Its event loop has
 * nothing else to do, so it reads a notification or an ACK as soon as it arrives; the
 * load agents, with thousands of replies queued, would read it late.
 *
 * Run by bench/lib/load-run.ts: `node --import tsx bench/lib/probe-process.ts`.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pg from "pg";
import { makeRealisticEvent } from "../../src/cli/simulated-agent.js";
import { type AgentEvent, AlertService } from "../../src/gen/alert/alert_pb.js";
import {
  commitChannel,
  epochMs,
  type ProbeSample,
  probeAlertPrefix,
  type StartProbe,
  sendToParent,
  type ToChild,
} from "./ipc.js";

const decoder = new TextDecoder();
/** alert_id → [sentAt, ackedAt] of every ACKed probe alert. */
const acked = new Map<string, readonly [number, number]>();
const sentAt = new Map<string, number>();
const committedAt = new Map<string, number>();
let sent = 0;
let errors = 0;
let failure: string | undefined;
const stopSending = new AbortController();
let streamDone: Promise<void> = Promise.resolve();
let sessionManager: Http2SessionManager | undefined;
let call: AbortController | undefined;
let listener: pg.Client | undefined;

async function start(msg: StartProbe): Promise<void> {
  listener = new pg.Client({ connectionString: msg.databaseUrl });
  await listener.connect();
  listener.on("notification", (n) => {
    if (n.channel === commitChannel && n.payload !== undefined)
      committedAt.set(n.payload, epochMs());
  });
  await listener.query(`LISTEN ${commitChannel}`);
  sessionManager = new Http2SessionManager(msg.baseUrl);
  const client = createClient(
    AlertService,
    createGrpcTransport({ baseUrl: msg.baseUrl, sessionManager }),
  );
  const { hostId } = await client.registerAgent({
    hostname: "bench-probe",
    platform: "linux",
    agentVersion: "bench-probe",
  });
  const intervalMs = 1000 / msg.rate;

  async function* events(): AsyncGenerator<AgentEvent> {
    const began = performance.now();
    for (let n = 0; !stopSending.signal.aborted; n++) {
      // On a schedule from the start, so a late timer does not slow the rate.
      const wait = began + n * intervalMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (stopSending.signal.aborted) return;
      const event = makeRealisticEvent(hostId);
      event.alertId = `${probeAlertPrefix}${randomUUID().slice(probeAlertPrefix.length)}`;
      sentAt.set(event.alertId, epochMs());
      sent++;
      yield event;
    }
  }

  call = new AbortController();
  const stream = client.streamAlerts(events(), { signal: call.signal });
  streamDone = (async () => {
    try {
      for await (const cmd of stream) {
        const at = epochMs();
        const payload = JSON.parse(decoder.decode(cmd.payload)) as { alert_id?: string };
        const id = payload.alert_id ?? "";
        const s = sentAt.get(id);
        if (s === undefined) continue;
        sentAt.delete(id);
        if (cmd.type === "ACK") acked.set(id, [s, at]);
        else errors++;
      }
    } catch (err) {
      if (!call?.signal.aborted) failure = err instanceof Error ? err.message : String(err);
    }
  })();
  await sendToParent({ type: "ready" });
}

async function stop(timeoutMs: number): Promise<void> {
  stopSending.abort();
  const timer = setTimeout(() => call?.abort(), timeoutMs);
  await streamDone;
  clearTimeout(timer);
  sessionManager?.abort();
  // Notifications already sent arrive before this query's answer.
  await listener?.query("select 1");
  await listener?.end();
  // The notification may arrive after the ACK: pair them up only now.
  const samples: ProbeSample[] = [];
  for (const [id, [s, a]] of acked) samples.push([id, s, committedAt.get(id) ?? Number.NaN, a]);
  await sendToParent({ type: "result", samples, sent, errors, failure });
  process.disconnect();
}

process.on("message", (msg: ToChild) => {
  const run =
    msg.type === "start" && "baseUrl" in msg
      ? start(msg)
      : msg.type === "stop"
        ? stop(msg.timeoutMs)
        : Promise.resolve();
  run.catch((err: unknown) => {
    process.stderr.write(`probe process failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exitCode = 1;
    process.disconnect();
  });
});
// Started while the server starts: the parent waits for this before sending "start".
void sendToParent({ type: "alive" });
