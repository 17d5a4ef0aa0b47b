/**
 * The WebSocket subscribers of the benchmark, run as a child process (IPC) so that reading
 * their frames does not steal the load generator's event loop.
 *
 * Most subscribers do what a subscriber must and no more: read each frame and note the
 * seq range it covers (the first and last `"seq":` of the frame), so gaps and `dropped`
 * reports are counted without parsing the JSON. A few timed subscribers, spread over the
 * connection order (the server writes to them in that order), also pick out the probe
 * agent's alerts in each frame and stamp when they arrived.
 *
 * Run by bench/lib/load-run.ts: `node --import tsx bench/lib/subscriber-process.ts`.
 */
import { WebSocket } from "ws";
import {
  epochMs,
  probeAlertPrefix,
  type StartSubscribers,
  sendToParent,
  stallGroupEvery,
  stallGroupOffset,
  type TimedDelivery,
  type ToChild,
} from "./ipc.js";

const v1Prefix = Buffer.from('{"type":"alerts","items":[{"seq":');
const v0Prefix = Buffer.from('{"type":"alert","data":{"seq":');
const seqKey = Buffer.from('{"seq":');
const timedNeedle = Buffer.from(`"alert_id":"${probeAlertPrefix}`);
const alertIdKeyLength = '"alert_id":"'.length;
const uuidLength = 36;
/** Byte 9 of every server message is the first letter of its type: `{"type":"…`. */
const typeByte = 9;
const charA = "a".charCodeAt(0);
const charD = "d".charCodeAt(0);
const charL = "l".charCodeAt(0);

interface Subscriber {
  readonly index: number;
  readonly socket: WebSocket;
  readonly timed: TimedDelivery[] | undefined;
  /** In the group that stalls on a "stall" message (10%). */
  readonly stallGroup: boolean;
  /** Alerts this subscriber received. */
  alerts: number;
  lastSeq: number;
  live: boolean;
}

/** The decimal number at `offset` of `buf` (digits only). */
function readInt(buf: Buffer, offset: number): number {
  let n = 0;
  for (let i = offset; i < buf.length; i++) {
    const c = (buf[i] as number) - 48;
    if (c < 0 || c > 9) break;
    n = n * 10 + c;
  }
  return n;
}

const totals = {
  alertsReceived: 0,
  frames: 0,
  bytes: 0,
  droppedReported: 0,
  gaps: 0,
};
const closedByServer: Record<string, number> = {};
const subscribers: Subscriber[] = [];
let finishing = false;

/** Notes the seq range [first, last] of alerts a subscriber just received. */
function received(s: Subscriber, first: number, last: number): void {
  if (s.lastSeq > 0 && first > s.lastSeq + 1) totals.gaps += first - s.lastSeq - 1;
  totals.alertsReceived += last - first + 1;
  s.alerts += last - first + 1;
  if (last > s.lastSeq) s.lastSeq = last;
}

function timeSampled(s: Subscriber, data: Buffer, at: number): void {
  const out = s.timed as TimedDelivery[];
  let i = data.indexOf(timedNeedle);
  while (i !== -1) {
    const idStart = i + alertIdKeyLength;
    out.push([data.toString("latin1", idStart, idStart + uuidLength), at]);
    i = data.indexOf(timedNeedle, idStart + uuidLength);
  }
}

function onFrame(s: Subscriber, version: 0 | 1, data: Buffer): void {
  const at = epochMs();
  totals.frames++;
  totals.bytes += data.length;
  const kind = data[typeByte];
  if (kind === charA) {
    if (version === 1) {
      const first = readInt(data, v1Prefix.length);
      const last = readInt(data, data.lastIndexOf(seqKey) + seqKey.length);
      received(s, first, last);
    } else {
      const seq = readInt(data, v0Prefix.length);
      received(s, seq, seq);
    }
    if (s.timed !== undefined) timeSampled(s, data, at);
    return;
  }
  // Control messages are rare: parse them.
  const msg = JSON.parse(data.toString("utf8")) as {
    type?: string;
    seq?: number;
    count?: number;
    to_seq?: number;
  };
  if (kind === charD && msg.type === "dropped") {
    totals.droppedReported += msg.count ?? 0;
    // The range was reported, so it is not a gap.
    if ((msg.to_seq ?? 0) > s.lastSeq) s.lastSeq = msg.to_seq ?? 0;
  } else if (kind === charL && msg.type === "live") {
    s.live = true;
    if ((msg.seq ?? 0) > s.lastSeq) s.lastSeq = msg.seq ?? 0;
  }
}

function connectOne(start: StartSubscribers, index: number, timed: boolean): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(start.url, start.version === 1 ? ["tripwire.v1"] : [], {
      // A load generator, not a browser: skip what costs CPU and proves nothing here.
      skipUTF8Validation: true,
      perMessageDeflate: false,
    });
    const s: Subscriber = {
      index,
      socket,
      timed: timed ? [] : undefined,
      stallGroup: index % stallGroupEvery === stallGroupOffset,
      alerts: 0,
      lastSeq: 0,
      live: start.version === 0,
    };
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      if (err !== undefined) reject(err);
      else resolve(s);
    };
    socket.on("message", (data, isBinary) => {
      if (isBinary) return;
      onFrame(s, start.version, data as Buffer);
      if (s.live) settle();
    });
    socket.on("open", () => {
      if (start.version === 0) settle();
    });
    socket.on("error", (err) => settle(err));
    socket.on("close", (code) => {
      settle(new Error(`closed with ${code} before going live`));
      if (!finishing) closedByServer[String(code)] = (closedByServer[String(code)] ?? 0) + 1;
    });
  });
}

/** Tries per subscriber before its connection counts as failed. */
const connectAttempts = 3;

/** Indexes of the timed subscribers: `n` of `count`, evenly spread, the last one included. */
function timedIndexes(count: number, n: number): Set<number> {
  const out = new Set<number>();
  const k = Math.min(count, n);
  for (let j = 1; j <= k; j++) out.add(Math.round((j * count) / k) - 1);
  return out;
}

async function start(msg: StartSubscribers): Promise<void> {
  const began = performance.now();
  const timed = timedIndexes(msg.count, msg.timedSubscribers);
  let next = 0;
  let failed = 0;
  let retried = 0;
  let firstError: string | undefined;
  const slots: Array<Subscriber | undefined> = new Array(msg.count);
  // Connect in order, a few at a time, so the connection order is (nearly) the index order.
  const worker = async (): Promise<void> => {
    while (next < msg.count) {
      const index = next++;
      // A busy machine may reset a handshake now and then: a browser would retry too.
      for (let attempt = 1; ; attempt++) {
        try {
          slots[index] = await connectOne(msg, index, timed.has(index));
          break;
        } catch (err) {
          if (attempt < connectAttempts) {
            retried++;
            await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
            continue;
          }
          failed++;
          firstError ??= err instanceof Error ? err.message : String(err);
          break;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, msg.connectConcurrency) }, worker));
  for (const s of slots) if (s !== undefined) subscribers.push(s);
  await sendToParent({
    type: "ready",
    connected: subscribers.length,
    failed,
    retried,
    firstError,
    connectMs: performance.now() - began,
  });
}

async function finish(seq: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const behind = (): number =>
    subscribers.filter((s) => s.socket.readyState === WebSocket.OPEN && s.lastSeq < seq).length;
  // No event says "every subscriber is at seq": poll it, with a deadline.
  while (behind() > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  finishing = true;
  const caughtUp = subscribers.filter((s) => s.lastSeq >= seq).length;
  await sendToParent({
    type: "result",
    subscribers: subscribers.length,
    caughtUp,
    ...totals,
    closedByServer,
    timed: subscribers
      .filter((s) => s.timed !== undefined)
      .map((s) => ({ index: s.index, deliveries: s.timed ?? [] })),
  });
  for (const s of subscribers) s.socket.terminate();
  process.disconnect();
}

/**
 * The stall group stops reading: ws pauses the socket, so the kernel buffers fill and
 * the server sees a client that does not read. It resumes after `durationMs`.
 */
function stall(durationMs: number): Promise<void> {
  const group = subscribers.filter((s) => s.stallGroup);
  for (const s of group) s.socket.pause();
  setTimeout(() => {
    for (const s of group) s.socket.resume();
  }, durationMs);
  return Promise.resolve();
}

function count(): Promise<void> {
  let othersAlerts = 0;
  let othersSubscribers = 0;
  let stallGroupAlerts = 0;
  let stallGroupSubscribers = 0;
  for (const s of subscribers) {
    if (s.stallGroup) {
      stallGroupAlerts += s.alerts;
      stallGroupSubscribers++;
    } else {
      othersAlerts += s.alerts;
      othersSubscribers++;
    }
  }
  return sendToParent({
    type: "counts",
    at: epochMs(),
    othersAlerts,
    othersSubscribers,
    stallGroupAlerts,
    stallGroupSubscribers,
  });
}

process.on("message", (msg: ToChild) => {
  const run =
    msg.type === "start" && "url" in msg
      ? start(msg)
      : msg.type === "finish"
        ? finish(msg.seq, msg.timeoutMs)
        : msg.type === "stall"
          ? stall(msg.durationMs)
          : msg.type === "count"
            ? count()
            : Promise.resolve();
  run.catch((err: unknown) => {
    process.stderr.write(`subscriber process failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exitCode = 1;
    process.disconnect();
  });
});
// Started while the server starts: the parent waits for this before sending "start".
void sendToParent({ type: "alive" });
