/**
 * The WebSocket subscribers of the benchmark, run as a child process (IPC) so that reading
 * their frames does not steal the load generator's event loop.
 *
 * Every subscriber is a raw WebSocket client (raw-feed-client.ts) that offers
 * permessage-deflate, as browsers do. Most do what a subscriber must and no more: read
 * each frame and note the seq range it covers (the first and last `"seq":` of the frame),
 * so gaps and `dropped` reports are counted without parsing the JSON.
 *
 * A compressed frame is the same bytes for every subscriber (the server compresses each
 * batch once), so only the timed subscribers, spread over the connection order (the
 * server writes to them in that order), inflate it: they record its seq range under a
 * fingerprint of its bytes, pick out the probe agent's alerts and stamp when they
 * arrived. The others look their frames up by fingerprint. A frame no timed subscriber
 * has decoded yet waits in the subscriber's queue, in order, until one has.
 *
 * Run by bench/lib/load-run.ts: `node --import tsx bench/lib/subscriber-process.ts`.
 */
import { constants, inflateRawSync } from "node:zlib";
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
import { connectRaw, type RawFeedClient } from "./raw-feed-client.js";

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
  socket: RawFeedClient | undefined;
  readonly timed: TimedDelivery[] | undefined;
  /** In the group that stalls on a "stall" message (10%). */
  readonly stallGroup: boolean;
  /** Alerts this subscriber received. */
  alerts: number;
  lastSeq: number;
  live: boolean;
  /** Compressed frames received and not yet decoded by a timed subscriber, in order. */
  readonly undecoded: string[];
}

/** Seq ranges of the compressed frames the timed subscribers decoded, by fingerprint. */
const decodedRanges = new Map<string, readonly [first: number, last: number]>();
const syncFlushTail = Buffer.from([0, 0, 0xff, 0xff]);
const opText = 0x1;

/**
 * Identifies a compressed frame: its length and three 16-byte windows. Frames are whole
 * batches with distinct seq ranges, which reach every window's bytes.
 */
function fingerprint(data: Buffer): string {
  const n = data.length;
  const mid = n >> 1;
  return `${n}:${data.toString("base64", 0, 16)}:${data.toString("base64", mid, mid + 16)}:${data.toString("base64", Math.max(0, n - 16), n)}`;
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
  /** Uncompressed `alerts` message bytes and their alerts, as the timed subscribers saw them. */
  sampleBytes: 0,
  sampleAlerts: 0,
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

function onMessage(s: Subscriber, version: 0 | 1, compressed: boolean, data: Buffer): void {
  totals.frames++;
  totals.bytes += data.length;
  if (!compressed) {
    onFrame(s, version, data);
    return;
  }
  const key = fingerprint(data);
  if (s.timed !== undefined) {
    const text = inflateRawSync(Buffer.concat([data, syncFlushTail]), {
      finishFlush: constants.Z_SYNC_FLUSH,
    });
    const first = readInt(text, v1Prefix.length);
    const last = readInt(text, text.lastIndexOf(seqKey) + seqKey.length);
    decodedRanges.set(key, [first, last]);
    onFrame(s, version, text);
    return;
  }
  s.undecoded.push(key);
  settleUndecoded(s);
}

/** Counts the subscriber's queued compressed frames whose ranges are known, in order. */
function settleUndecoded(s: Subscriber): void {
  while (s.undecoded.length > 0) {
    const range = decodedRanges.get(s.undecoded[0] as string);
    if (range === undefined) return;
    s.undecoded.shift();
    received(s, range[0], range[1]);
  }
}

function onFrame(s: Subscriber, version: 0 | 1, data: Buffer): void {
  const at = epochMs();
  const kind = data[typeByte];
  if (kind === charA) {
    if (version === 1) {
      const first = readInt(data, v1Prefix.length);
      const last = readInt(data, data.lastIndexOf(seqKey) + seqKey.length);
      received(s, first, last);
      if (s.timed !== undefined) {
        totals.sampleBytes += data.length;
        totals.sampleAlerts += last - first + 1;
      }
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

async function connectOne(
  start: StartSubscribers,
  index: number,
  timed: boolean,
): Promise<Subscriber> {
  const s: Subscriber = {
    index,
    socket: undefined,
    timed: timed ? [] : undefined,
    // Timed subscribers decode for the others, so they never stall.
    stallGroup: !timed && index % stallGroupEvery === stallGroupOffset,
    alerts: 0,
    lastSeq: 0,
    live: start.version === 0,
    undecoded: [],
  };
  let wentLive: () => void = () => {};
  let failed: (err: Error) => void = () => {};
  const live = new Promise<void>((resolve, reject) => {
    wentLive = resolve;
    failed = reject;
  });
  s.socket = await connectRaw({
    url: start.url,
    protocols: start.version === 1 ? ["tripwire.v1"] : [],
    deflate: true,
    onMessage: (opcode, compressed, payload) => {
      if (opcode !== opText) return;
      onMessage(s, start.version, compressed, payload);
      if (s.live) wentLive();
    },
    onClose: (code) => {
      failed(new Error(`closed with ${code} before going live`));
      if (!finishing) closedByServer[String(code)] = (closedByServer[String(code)] ?? 0) + 1;
    },
  });
  if (start.version === 0) wentLive();
  await live;
  return s;
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
  const behind = (): number => {
    for (const s of subscribers) settleUndecoded(s);
    return subscribers.filter((s) => s.socket?.open() === true && s.lastSeq < seq).length;
  };
  // No event says "every subscriber is at seq": poll it, with a deadline.
  while (behind() > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  finishing = true;
  const caughtUp = subscribers.filter((s) => s.lastSeq >= seq).length;
  const undecodedFrames = subscribers.reduce((n, s) => n + s.undecoded.length, 0);
  await sendToParent({
    type: "result",
    subscribers: subscribers.length,
    caughtUp,
    ...totals,
    closedByServer,
    undecodedFrames,
    timed: subscribers
      .filter((s) => s.timed !== undefined)
      .map((s) => ({ index: s.index, deliveries: s.timed ?? [] })),
  });
  for (const s of subscribers) s.socket?.terminate();
  process.disconnect();
}

/**
 * The stall group stops reading: its sockets are paused, so the kernel buffers fill and
 * the server sees a client that does not read. It resumes after `durationMs`.
 */
function stall(durationMs: number): Promise<void> {
  const group = subscribers.filter((s) => s.stallGroup);
  for (const s of group) s.socket?.pause();
  setTimeout(() => {
    for (const s of group) s.socket?.resume();
  }, durationMs);
  return Promise.resolve();
}

function count(): Promise<void> {
  let othersAlerts = 0;
  let othersSubscribers = 0;
  let stallGroupAlerts = 0;
  let stallGroupSubscribers = 0;
  for (const s of subscribers) {
    settleUndecoded(s);
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
