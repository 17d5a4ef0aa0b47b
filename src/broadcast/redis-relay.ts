/**
 * Carries committed batches between server instances over Redis pub/sub.
 *
 * Pub/sub is at-most-once: a message published while an instance is disconnected is
 * gone. That is fine here: the sequencer notices the gap (or its poll does) and reads
 * the missing alerts back from the database, so a Redis outage delays alerts from other
 * instances but never loses them, and local alerts never depend on Redis at all.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import { JsonAlert, type LiveAlert, LiveBatch } from "./live-batch.js";

/** Settings of the relay. */
export interface RedisRelayOptions {
  readonly url: string;
  readonly channel: string;
  /** Receives batches committed by other instances. */
  readonly onBatch: (batch: LiveBatch) => void;
  /** Called when the subscription is (re)established: messages may have been missed. */
  readonly onReconnect: () => void;
  readonly log: Logger;
}

interface WireAlert {
  seq: number;
  alert_id: string;
  host_id: string;
  severity: string;
  tripwire_type: string;
}

interface WireBatch {
  o: string;
  f: number;
  t: number;
  a: WireAlert[];
}

function isWireAlert(v: unknown): v is WireAlert {
  if (typeof v !== "object" || v === null) return false;
  const a = v as Record<string, unknown>;
  return (
    Number.isSafeInteger(a.seq) &&
    typeof a.alert_id === "string" &&
    typeof a.host_id === "string" &&
    typeof a.severity === "string" &&
    typeof a.tripwire_type === "string"
  );
}

/** Whether a parsed message is a batch as `publish` sends it. O(alerts). */
function isWireBatch(v: unknown): v is WireBatch {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Record<string, unknown>;
  return (
    typeof m.o === "string" &&
    Number.isSafeInteger(m.f) &&
    Number.isSafeInteger(m.t) &&
    (m.f as number) <= (m.t as number) &&
    Array.isArray(m.a) &&
    m.a.every(isWireAlert)
  );
}

/** Publishes this instance's batches and delivers the others'. */
export class RedisRelay {
  /** Identifies this instance's own messages, which it already delivered locally. */
  readonly instanceId = randomUUID();
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #options: RedisRelayOptions;
  #connected = false;
  /** Batches not sent because Redis was unreachable. */
  unsent = 0;

  constructor(options: RedisRelayOptions) {
    this.#options = options;
    const common = {
      // Never queue commands while disconnected: a stale publish is worse than none.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times: number) => Math.min(100 * 2 ** times, 2_000),
      lazyConnect: true,
    };
    this.#pub = new Redis(options.url, common);
    this.#sub = new Redis(options.url, { ...common, enableOfflineQueue: true });
    for (const client of [this.#pub, this.#sub]) {
      client.on("error", (err: Error) => {
        if (this.#connected) options.log.warn({ err: err.message }, "redis connection error");
      });
    }
    this.#sub.on("ready", () => {
      // ioredis resubscribes after a reconnect only to channels it had subscribed; when
      // Redis was down at start there were none yet, so subscribe on every connect.
      this.#sub.subscribe(options.channel).catch(() => {});
      const wasConnected = this.#connected;
      this.#connected = true;
      if (!wasConnected) options.log.info({ channel: options.channel }, "redis relay connected");
      options.onReconnect();
    });
    this.#sub.on("end", () => {
      this.#connected = false;
    });
    this.#sub.on("close", () => {
      if (this.#connected)
        options.log.warn({}, "redis relay disconnected; repairing from the database");
      this.#connected = false;
    });
    this.#sub.on("message", (_channel: string, message: string) => this.#receive(message));
  }

  /** Whether the subscription is up. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Connects and subscribes; resolves once subscribed or rejects if Redis is unreachable. */
  async start(): Promise<void> {
    await Promise.all([this.#pub.connect(), this.#sub.connect()]);
    await this.#sub.subscribe(this.#options.channel);
  }

  /** Sends a locally committed batch to the other instances. Never throws or waits. */
  publish(batch: LiveBatch): void {
    if (this.#pub.status !== "ready") {
      this.unsent++;
      return;
    }
    let items = "";
    for (const a of batch.alerts) items += items === "" ? a.dataJson : `,${a.dataJson}`;
    const message = `{"o":"${this.instanceId}","f":${batch.fromSeq},"t":${batch.toSeq},"a":[${items}]}`;
    this.#pub.publish(this.#options.channel, message).catch(() => {
      this.unsent++;
    });
  }

  #receive(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = undefined;
    }
    // Anyone who can publish on the channel could send anything: a message that is not a
    // batch must not throw out of ioredis's data handler (that would end the process).
    if (!isWireBatch(parsed)) {
      this.#options.log.warn({}, "ignored a malformed message on the redis channel");
      return;
    }
    if (parsed.o === this.instanceId) return;
    const alerts: LiveAlert[] = parsed.a.map(
      (a) =>
        new JsonAlert(a.seq, a.alert_id, a.host_id, a.severity, a.tripwire_type, JSON.stringify(a)),
    );
    this.#options.onBatch(new LiveBatch(alerts, parsed.f, parsed.t));
  }

  async close(): Promise<void> {
    this.#sub.disconnect();
    this.#pub.disconnect();
  }
}
