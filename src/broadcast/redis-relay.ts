/**
 * Carries committed batches between server instances over Redis pub/sub.
 *
 * Pub/sub is at-most-once: a message published while an instance is disconnected is
 * gone. That is fine here: the sequencer notices the gap (or its poll does) and reads
 * the missing alerts back from the database, so a Redis outage delays alerts from other
 * instances but never loses them, and local alerts never depend on Redis at all.
 */
import type { Logger } from "../logger.js";
import { JsonAlert, type LiveAlert, LiveBatch } from "./live-batch.js";
import { RedisChannel } from "./redis-channel.js";

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
  readonly #channel: RedisChannel<WireBatch>;
  /** Batches not sent because Redis was unreachable. */
  unsent = 0;

  constructor(options: RedisRelayOptions) {
    this.#channel = new RedisChannel({
      url: options.url,
      channel: options.channel,
      accepts: isWireBatch,
      onMessage: (m) => {
        const alerts: LiveAlert[] = m.a.map(
          (a) =>
            new JsonAlert(
              a.seq,
              a.alert_id,
              a.host_id,
              a.severity,
              a.tripwire_type,
              JSON.stringify(a),
            ),
        );
        options.onBatch(new LiveBatch(alerts, m.f, m.t));
      },
      onReady: options.onReconnect,
      malformedWarning: "ignored a malformed message on the redis channel",
      announce: {
        connected: "redis relay connected",
        disconnected: "redis relay disconnected; repairing from the database",
      },
      log: options.log,
    });
  }

  /** Identifies this instance's own messages, which it already delivered locally. */
  get instanceId(): string {
    return this.#channel.instanceId;
  }

  /** Whether the subscription is up. */
  get connected(): boolean {
    return this.#channel.connected;
  }

  /** Connects and subscribes; resolves once subscribed or rejects if Redis is unreachable. */
  start(): Promise<void> {
    return this.#channel.start();
  }

  /** Sends a locally committed batch to the other instances. Never throws or waits. */
  publish(batch: LiveBatch): void {
    let items = "";
    for (const a of batch.alerts) items += items === "" ? a.dataJson : `,${a.dataJson}`;
    const message = `{"o":"${this.instanceId}","f":${batch.fromSeq},"t":${batch.toSeq},"a":[${items}]}`;
    if (!this.#channel.publish(message, () => this.unsent++)) this.unsent++;
  }

  async close(): Promise<void> {
    this.#channel.close();
  }
}
