/**
 * The in-process fan-out: non-blocking publish, bounded per-subscriber buffers,
 * cleanup on abort and close, and the shared WebSocket frame of each alert.
 */

import { afterEach, describe, expect, it, vi } from "vitest";
import { InProcessBroadcaster, type Subscription } from "../../src/broadcast/broadcaster.js";
import type { LiveAlert } from "../../src/broadcast/live-batch.js";
import { type NewAlert, StoredAlert } from "../../src/storage/alert-types.js";
import { RecordingLogger } from "../support/recording-logger.js";

/** 2026-02-25T19:25:01.123456Z */
const baseUs = 1_772_047_501_123_456n;
let nextSeq = 1;

function alert(overrides: Partial<NewAlert> = {}, seq = nextSeq++): StoredAlert {
  return new StoredAlert(
    {
      alertId: `00000000-0000-4000-8000-${seq.toString(16).padStart(12, "0")}`,
      hostId: "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
      hostname: "web-01",
      timestampUs: baseUs,
      tripwireType: "FILE",
      ruleName: "etc-passwd-write",
      severity: "CRITICAL",
      eventDetailJson: '{"path":"/etc/passwd","pid":4242}',
      receivedAtUs: baseUs + 2_500n,
      ...overrides,
    },
    seq,
  );
}

function alerts(n: number): StoredAlert[] {
  return Array.from({ length: n }, () => alert());
}

/** Reads `subscription` until it ends, collecting every alert. */
async function drain(subscription: Subscription): Promise<LiveAlert[]> {
  const got: LiveAlert[] = [];
  for await (const a of subscription) got.push(a);
  return got;
}

/** Reads `subscription` in the background; `until(n)` resolves once n alerts arrived. */
function reader(subscription: Subscription): {
  readonly received: LiveAlert[];
  until(n: number): Promise<void>;
  readonly ended: Promise<void>;
} {
  const received: LiveAlert[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const ended = (async () => {
    for await (const a of subscription) {
      received.push(a);
      for (const w of waiters.filter((w) => received.length >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  })();
  return {
    received,
    ended,
    until(n) {
      if (received.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
}

const seqs = (list: readonly LiveAlert[]): number[] => list.map((a) => a.seq);

describe("InProcessBroadcaster", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("TestBroadcaster_SlowConsumer_DropsNotBlocks: publish returns at once for a subscriber that never reads, drops past its buffer with a rate-limited warning, and a reading subscriber gets everything", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-02-25T19:25:01Z") });
    const log = new RecordingLogger();
    const broadcaster = new InProcessBroadcaster({ bufferSize: 4, log, warnIntervalMs: 10_000 });
    const stalled = broadcaster.subscribe(new AbortController().signal); // never read
    const live = reader(broadcaster.subscribe(new AbortController().signal));
    const published = alerts(100);

    // 25 bursts of 4 single-alert publishes; the live reader catches up between bursts.
    let turnedAsync = false;
    for (let burst = 0; burst < 25; burst++) {
      queueMicrotask(() => {
        turnedAsync = true;
      });
      for (let i = 0; i < 4; i++) {
        expect(broadcaster.publish(published[burst * 4 + i] as StoredAlert)).toBeUndefined();
      }
      // Had publish awaited anything, the microtask queued before the burst would have run.
      expect(turnedAsync).toBe(false);
      await live.until((burst + 1) * 4);
      turnedAsync = false;
    }

    expect(stalled.dropped).toBe(96);
    expect(live.received).toEqual(published);
    const [warning, ...more] = log.at("warn");
    expect(more).toEqual([]);
    expect(warning?.msg).toBe("subscriber buffer full, dropping alerts");
    expect(warning?.obj).toMatchObject({ dropped: 1, droppedTotal: 1 });

    // Once the interval has passed, the next drop warns again with what it held back.
    vi.setSystemTime(Date.now() + 10_000);
    broadcaster.publish(alert());
    expect(log.at("warn")).toHaveLength(2);
    expect(log.at("warn")[1]?.obj).toMatchObject({ dropped: 96, droppedTotal: 97 });

    // The stalled subscriber kept the first 4 batches: drops are of newer alerts.
    broadcaster.close();
    expect(seqs(await drain(stalled))).toEqual(seqs(published.slice(0, 4)));
    await live.ended;
  });

  it("TestBroadcaster_ContextCancelUnsubscribes: abort removes the subscriber, ends its iterator, and later publishes do not reach it", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const abort = new AbortController();
    const subscription = broadcaster.subscribe(abort.signal);
    const other = broadcaster.subscribe(new AbortController().signal);
    expect(broadcaster.size).toBe(2);
    const iterator = subscription[Symbol.asyncIterator]();
    const first = alert();
    broadcaster.publish(first);
    expect(await iterator.next()).toEqual({ done: false, value: first });
    const pending = iterator.next(); // waiting for the next alert

    abort.abort();

    expect(broadcaster.size).toBe(1);
    expect(await pending).toEqual({ done: true, value: undefined });
    broadcaster.publish(alert());
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
    expect(subscription.dropped).toBe(0);
    broadcaster.close();
    expect(await drain(other)).toHaveLength(2);
  });

  it("discards what an aborted subscriber had buffered", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const abort = new AbortController();
    const subscription = broadcaster.subscribe(abort.signal);
    broadcaster.publishBatch(alerts(3));
    abort.abort();
    expect(await drain(subscription)).toEqual([]);
  });

  it("ends at once a subscription whose signal is already aborted, without registering it", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const subscription = broadcaster.subscribe(AbortSignal.abort());
    expect(broadcaster.size).toBe(0);
    broadcaster.publish(alert());
    expect(await drain(subscription)).toEqual([]);
  });

  it.each([
    ["alerts", (s: Subscription): AsyncIterable<unknown> => s],
    ["batches()", (s: Subscription): AsyncIterable<unknown> => s.batches()],
  ])("unsubscribes when the consumer stops iterating %s early", async (_what, iterable) => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const subscription = broadcaster.subscribe(new AbortController().signal);
    broadcaster.publishBatch(alerts(3));
    for await (const _ of iterable(subscription)) break;
    expect(broadcaster.size).toBe(0);
  });

  it("close() ends every iterator after delivering what each had buffered", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const buffered = broadcaster.subscribe(new AbortController().signal);
    const waiting = reader(broadcaster.subscribe(new AbortController().signal));
    const batchA = alerts(2);
    const batchB = alerts(3);
    broadcaster.publishBatch(batchA);
    broadcaster.publishBatch(batchB);
    await waiting.until(5);

    broadcaster.close();

    expect(broadcaster.size).toBe(0);
    await waiting.ended;
    expect(await drain(buffered)).toEqual([...batchA, ...batchB]);
    expect(waiting.received).toEqual([...batchA, ...batchB]);
    // After close, new subscriptions end at once and publishes go nowhere.
    const late = broadcaster.subscribe(new AbortController().signal);
    broadcaster.publish(alert());
    expect(await drain(late)).toEqual([]);
  });

  it("delivers every alert of one 500-alert batch to a subscriber with 64 slots: a slot holds a committed batch", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 64, log: new RecordingLogger() });
    const busy = broadcaster.subscribe(new AbortController().signal); // not reading yet
    const waiting = reader(broadcaster.subscribe(new AbortController().signal));
    const batch = alerts(500);

    broadcaster.publishBatch(batch);
    broadcaster.close();

    expect(busy.dropped).toBe(0);
    expect(await drain(busy)).toEqual(batch);
    await waiting.ended;
    expect(waiting.received).toEqual(batch);
  });

  it("counts a whole dropped batch in `dropped`", async () => {
    const log = new RecordingLogger();
    const broadcaster = new InProcessBroadcaster({ bufferSize: 1, log });
    const subscription = broadcaster.subscribe(new AbortController().signal);
    broadcaster.publishBatch(alerts(2)); // fills the only slot
    broadcaster.publishBatch(alerts(7));
    expect(subscription.dropped).toBe(7);
    expect(log.at("warn")[0]?.obj).toMatchObject({ dropped: 7, droppedTotal: 7 });
  });

  it("batches() yields each committed batch whole, with the same alerts array", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const subscription = broadcaster.subscribe(new AbortController().signal);
    const first = alerts(3);
    const second = alerts(1);
    broadcaster.publishBatch(first);
    broadcaster.publishBatch([]); // nothing to deliver: no empty batch
    broadcaster.publishBatch(second);
    broadcaster.close();

    const got: Array<readonly LiveAlert[]> = [];
    for await (const batch of subscription.batches()) got.push(batch.alerts);
    expect(got).toHaveLength(2);
    expect(got[0]).toBe(first);
    expect(got[1]).toBe(second);
  });

  it("gives every subscriber the same alert object, whose frame is built once", async () => {
    const broadcaster = new InProcessBroadcaster({ bufferSize: 8, log: new RecordingLogger() });
    const a = broadcaster.subscribe(new AbortController().signal);
    const b = broadcaster.subscribe(new AbortController().signal);
    const published = alert();
    const build = vi.spyOn(published, "dataJson", "get");
    broadcaster.publish(published);
    broadcaster.close();

    const [fromA] = await drain(a);
    const [fromB] = await drain(b);
    expect(fromA).toBe(published);
    expect(fromB).toBe(published);
    const frameA = fromA?.frame;
    const frameB = fromB?.frame;
    expect(frameA).toBe(frameB);
    expect(build).toHaveBeenCalledTimes(1);
  });

  describe("the frame", () => {
    it('is {"type":"alert","data":{…}} with the wire contract\'s fields, plus seq', () => {
      const a = alert(
        {
          alertId: "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a70",
          hostId: "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
          hostname: "web-01",
          timestampUs: 1_772_047_501_000_000n,
          tripwireType: "NETWORK",
          ruleName: "outbound-ssh",
          severity: "WARN",
          eventDetailJson: '{"port":22,"dst":"10.0.0.9","tags":["a",1,null]}',
          receivedAtUs: 1_772_047_501_000_007n,
        },
        42,
      );
      expect(JSON.parse(a.frame)).toEqual({
        type: "alert",
        data: {
          seq: 42,
          alert_id: "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a70",
          host_id: "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
          hostname: "web-01",
          timestamp: "2026-02-25T19:25:01.000000Z",
          tripwire_type: "NETWORK",
          rule_name: "outbound-ssh",
          severity: "WARN",
          event_detail: { port: 22, dst: "10.0.0.9", tags: ["a", 1, null] },
          received_at: "2026-02-25T19:25:01.000007Z",
        },
      });
    });

    it.each([
      ["with microseconds", 1_772_047_501_123_456n, "2026-02-25T19:25:01.123456Z"],
      ["one microsecond into a second", 1_772_047_501_000_001n, "2026-02-25T19:25:01.000001Z"],
      ["before 1970", -1n, "1969-12-31T23:59:59.999999Z"],
    ])("writes timestamps %s with six fractional digits and Z", (_what, us, text) => {
      const data = JSON.parse(alert({ timestampUs: us, receivedAtUs: us }).frame).data;
      expect(data.timestamp).toBe(text);
      expect(data.received_at).toBe(text);
    });

    it("escapes quotes, backslashes, control characters and unicode in hostname and rule_name", () => {
      const hostname = 'host "q" \\ back\nline\t\u0001 ünï 🚨 \u2028 \ud800';
      const ruleName = '</script><b>"x"</b> \\u0041 ñ \u007f';
      const a = alert({
        hostname,
        ruleName,
        eventDetailJson: '{"path":"C:\\\\temp\\\\\\"a\\"","u":"\\u00e9🚨"}',
      });
      const data = JSON.parse(a.frame).data;
      expect(data.hostname).toBe(hostname);
      expect(data.rule_name).toBe(ruleName);
      expect(data.event_detail).toEqual({ path: 'C:\\temp\\"a"', u: "é🚨" });
    });
  });
});
