/**
 * Carries host status changes between server instances over Redis pub/sub, on a
 * channel of their own (`<TRIPWIRE_REDIS_CHANNEL>:hosts`), so instances that only know
 * the alert batches never see them.
 *
 * Pub/sub is at-most-once: a change lost in an outage leaves another instance's view
 * stale until the next change, or until its silence check (on the shared `last_seen`)
 * turns the host OFFLINE. GET /api/hosts on any instance is as current as its view.
 */
import { RedisChannel } from "../broadcast/redis-channel.js";
import type { Logger } from "../logger.js";
import { HostStatusChange } from "./host-liveness.js";

/** Settings of the relay. */
export interface HostStatusRelayOptions {
  readonly url: string;
  readonly channel: string;
  /** Receives changes decided by other instances. */
  readonly onChange: (change: HostStatusChange) => void;
  readonly log: Logger;
}

interface WireChange {
  o: string;
  host_id: string;
  hostname: string;
  status: "ONLINE" | "OFFLINE";
  last_seen_ms: number;
}

function isWireChange(v: unknown): v is WireChange {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Record<string, unknown>;
  return (
    typeof m.o === "string" &&
    typeof m.host_id === "string" &&
    typeof m.hostname === "string" &&
    (m.status === "ONLINE" || m.status === "OFFLINE") &&
    Number.isSafeInteger(m.last_seen_ms)
  );
}

/** Publishes this instance's host status changes and delivers the others'. */
export class HostStatusRelay {
  readonly #channel: RedisChannel<WireChange>;

  constructor(options: HostStatusRelayOptions) {
    // The alert relay logs connection trouble; this channel only must not throw.
    this.#channel = new RedisChannel({
      url: options.url,
      channel: options.channel,
      accepts: isWireChange,
      onMessage: (m) =>
        options.onChange(new HostStatusChange(m.host_id, m.hostname, m.status, m.last_seen_ms)),
      malformedWarning: "ignored a malformed message on the redis hosts channel",
      log: options.log,
    });
  }

  /** Identifies this instance's own messages. */
  get instanceId(): string {
    return this.#channel.instanceId;
  }

  /**
   * Connects and subscribes; rejects if Redis is unreachable. ioredis keeps retrying and
   * subscribes once it connects.
   */
  start(): Promise<void> {
    return this.#channel.start();
  }

  /** Sends a change to the other instances. Never throws or waits. */
  publish(change: HostStatusChange): void {
    const message: WireChange = {
      o: this.instanceId,
      host_id: change.hostId,
      hostname: change.hostname,
      status: change.status,
      last_seen_ms: change.lastSeenMs,
    };
    this.#channel.publish(JSON.stringify(message));
  }

  close(): void {
    this.#channel.close();
  }
}
