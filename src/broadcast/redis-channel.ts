/**
 * One Redis pub/sub channel between server instances: a publishing and a subscribed
 * connection, this instance's id in every message (`o`), and defensive parsing of what
 * arrives. The alert relay (redis-relay.ts) and the host status relay
 * (src/hosts/host-status-relay.ts) each carry their own message shape over one.
 *
 * Pub/sub is at-most-once; each user says how it recovers what an outage lost.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "../logger.js";

/** Every message carries the id of the instance that published it. */
export interface ChannelMessage {
  readonly o: string;
}

/** Settings of one channel. */
export interface RedisChannelOptions<T extends ChannelMessage> {
  readonly url: string;
  readonly channel: string;
  /** Whether a parsed message has the shape this channel carries (anyone may publish). */
  readonly accepts: (message: unknown) => message is T;
  /** Receives the messages of other instances; this instance's own are skipped. */
  readonly onMessage: (message: T) => void;
  /** Called whenever the subscription is (re)established: messages may have been missed. */
  readonly onReady?: () => void;
  /** Logged when a message of another shape arrives. */
  readonly malformedWarning: string;
  /** Connection messages to log; none when omitted (another channel logs them). */
  readonly announce?: { readonly connected: string; readonly disconnected: string };
  readonly log: Logger;
}

/** A channel: `start()`, then `publish()`; incoming messages go to `onMessage`. */
export class RedisChannel<T extends ChannelMessage> {
  /** Identifies this instance's own messages. */
  readonly instanceId = randomUUID();
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #options: RedisChannelOptions<T>;
  #connected = false;

  constructor(options: RedisChannelOptions<T>) {
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
    const { announce, log } = options;
    for (const client of [this.#pub, this.#sub]) {
      client.on("error", (err: Error) => {
        if (announce !== undefined && this.#connected)
          log.warn({ err: err.message }, "redis connection error");
      });
    }
    this.#sub.on("ready", () => {
      // ioredis resubscribes after a reconnect only to channels it had subscribed; when
      // Redis was down at start there were none yet, so subscribe on every connect.
      this.#sub.subscribe(options.channel).catch(() => {});
      const wasConnected = this.#connected;
      this.#connected = true;
      if (!wasConnected && announce !== undefined)
        log.info({ channel: options.channel }, announce.connected);
      options.onReady?.();
    });
    this.#sub.on("end", () => {
      this.#connected = false;
    });
    this.#sub.on("close", () => {
      if (this.#connected && announce !== undefined) log.warn({}, announce.disconnected);
      this.#connected = false;
    });
    this.#sub.on("message", (_channel: string, message: string) => this.#receive(message));
  }

  /** Whether the subscription is up. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Connects and subscribes; rejects if Redis is unreachable (it keeps retrying). */
  async start(): Promise<void> {
    await Promise.all([this.#pub.connect(), this.#sub.connect()]);
    await this.#sub.subscribe(this.#options.channel);
  }

  /**
   * Publishes `message` (JSON text carrying this instance's id as `o`). Returns false when
   * Redis is not connected; `onFailed` runs if a publish handed off fails later. Never
   * throws or waits.
   */
  publish(message: string, onFailed?: () => void): boolean {
    if (this.#pub.status !== "ready") return false;
    this.#pub.publish(this.#options.channel, message).catch(() => onFailed?.());
    return true;
  }

  #receive(message: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      parsed = undefined;
    }
    // A message of another shape must not throw out of ioredis's data handler (that
    // would end the process).
    if (!this.#options.accepts(parsed)) {
      this.#options.log.warn({}, this.#options.malformedWarning);
      return;
    }
    if (parsed.o === this.instanceId) return;
    this.#options.onMessage(parsed);
  }

  close(): void {
    this.#sub.disconnect();
    this.#pub.disconnect();
  }
}
