/**
 * Carries host status changes between server instances over Redis pub/sub, on a
 * channel of their own (`<TRIPWIRE_REDIS_CHANNEL>:hosts`), so instances that only know
 * the alert batches never see them.
 *
 * Pub/sub is at-most-once: a change lost in an outage leaves another instance's view
 * stale until the next change, or until its silence check (on the shared `last_seen`)
 * turns the host OFFLINE. GET /api/hosts on any instance is as current as its view.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
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
  /** Identifies this instance's own messages. */
  readonly instanceId = randomUUID();
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #options: HostStatusRelayOptions;

  constructor(options: HostStatusRelayOptions) {
    this.#options = options;
    const common = {
      // A status published late could overwrite a newer one: never queue while offline.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times: number) => Math.min(100 * 2 ** times, 2_000),
      lazyConnect: true,
    };
    this.#pub = new Redis(options.url, common);
    this.#sub = new Redis(options.url, { ...common, enableOfflineQueue: true });
    // The alert relay logs connection trouble; errors here must only not go unhandled.
    this.#pub.on("error", () => {});
    this.#sub.on("error", () => {});
    this.#sub.on("message", (_channel: string, message: string) => this.#receive(message));
  }

  /**
   * Connects and subscribes; rejects if Redis is unreachable. ioredis keeps retrying, and
   * the subscription, queued before the first attempt, is made once it connects.
   */
  async start(): Promise<void> {
    // The first command connects the lazy client; while it cannot, it waits in the queue.
    const subscribed = this.#sub.subscribe(this.#options.channel);
    subscribed.catch(() => {});
    await this.#pub.connect();
    await subscribed;
  }

  /** Sends a change to the other instances. Never throws or waits. */
  publish(change: HostStatusChange): void {
    if (this.#pub.status !== "ready") return;
    const message: WireChange = {
      o: this.instanceId,
      host_id: change.hostId,
      hostname: change.hostname,
      status: change.status,
      last_seen_ms: change.lastSeenMs,
    };
    this.#pub.publish(this.#options.channel, JSON.stringify(message)).catch(() => {});
  }

  #receive(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = undefined;
    }
    // Anyone who can publish on the channel could send anything; it must not throw here.
    if (!isWireChange(parsed)) {
      this.#options.log.warn({}, "ignored a malformed message on the redis hosts channel");
      return;
    }
    if (parsed.o === this.instanceId) return;
    this.#options.onChange(
      new HostStatusChange(parsed.host_id, parsed.hostname, parsed.status, parsed.last_seen_ms),
    );
  }

  close(): void {
    this.#sub.disconnect();
    this.#pub.disconnect();
  }
}
