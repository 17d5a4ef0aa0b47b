/**
 * Host liveness: which hosts are ONLINE, and `hosts.last_seen` kept current.
 *
 * A host is ONLINE while it has an open StreamAlerts stream, and for
 * `offlineAfterMs` after it was last seen otherwise (a registration, or its last stream
 * closing). It turns OFFLINE when its last stream on this instance closes, or when it
 * has been silent for `offlineAfterMs`; it turns ONLINE again when it registers or
 * streams. Every change is logged and handed to listeners (the /ws route).
 *
 * Events only mark their host as seen in memory (one Map lookup and one store); a timer
 * writes the `last_seen` of every host seen since the last write in one statement.
 *
 * Several instances: the instance that holds a host's stream decides ONLINE and
 * OFFLINE for it and relays the change (HostStatusRelay); the others adopt it. Silence
 * is judged on the shared `last_seen`, which every instance refreshes for the hosts
 * whose streams it holds, so a quiet host streaming to one instance is not taken for
 * silent by another.
 */
import type { Logger } from "../logger.js";
import { formatMicros } from "../storage/alert-types.js";
import type { HostStore } from "./host-store.js";

/** A host's liveness. */
export type HostStatus = "ONLINE" | "OFFLINE";

/** What the AlertService reports about hosts; every method is O(1) and never waits. */
export interface HostActivity {
  /** RegisterAgent succeeded for the host. */
  registered(hostId: string, hostname: string): void;
  /** A stream sent its first event for the host. */
  streamOpened(hostId: string, hostname: string): void;
  /** The host sent an event: the per-event hot path. */
  seen(hostId: string): void;
  /** A stream that had sent for the host ended. */
  streamClosed(hostId: string): void;
}

/** One status change, as pushed to /ws subscribers and relayed to other instances. */
export class HostStatusChange {
  #frame: Buffer | undefined;

  constructor(
    readonly hostId: string,
    readonly hostname: string,
    readonly status: HostStatus,
    readonly lastSeenMs: number,
  ) {}

  /** The `data` object of the `host_status` message (docs/websocket.md). */
  toJSON(): object {
    return {
      host_id: this.hostId,
      hostname: this.hostname,
      status: this.status,
      last_seen: formatMs(this.lastSeenMs),
    };
  }

  /** `{"type":"host_status","data":…}` as UTF-8, built once for every subscriber. */
  get frame(): Buffer {
    this.#frame ??= Buffer.from(JSON.stringify({ type: "host_status", data: this }));
    return this.#frame;
  }
}

/** Formats epoch milliseconds like every other timestamp the server sends. */
export function formatMs(ms: number): string {
  return formatMicros(BigInt(ms) * 1000n);
}

/** Settings and dependencies of the tracker. */
export interface HostLivenessOptions {
  readonly store: HostStore;
  readonly offlineAfterMs: number;
  readonly flushMs: number;
  readonly log: Logger;
  /** Sends a change this instance decided to the other instances (none without Redis). */
  readonly relay?: ((change: HostStatusChange) => void) | undefined;
}

interface HostEntry {
  hostname: string;
  status: HostStatus;
  /** Epoch ms this instance last saw the host (or learned another did). */
  lastSeen: number;
  /** The newest `lastSeen` known to be in the database. */
  written: number;
  /** Streams on this instance that have sent for the host. */
  streams: number;
}

/** Tracks the liveness of every host this instance has heard of. */
export class HostLiveness implements HostActivity {
  readonly #hosts = new Map<string, HostEntry>();
  readonly #listeners = new Set<(change: HostStatusChange) => void>();
  readonly #options: HostLivenessOptions;
  #relay: ((change: HostStatusChange) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #stopping = false;
  /** Statements that wrote last_seen, since start. */
  flushes = 0;
  /** Silence checks completed, since start. */
  sweeps = 0;

  constructor(options: HostLivenessOptions) {
    this.#options = options;
    this.#relay = options.relay;
  }

  /** Sets where changes decided here are relayed (the relay is built after the tracker). */
  set relay(relay: ((change: HostStatusChange) => void) | undefined) {
    this.#relay = relay;
  }

  /**
   * Loads the hosts seen within `offlineAfterMs` as ONLINE (their agents are expected to
   * reconnect after a restart) and starts the flush and silence timer.
   */
  async start(): Promise<void> {
    const now = Date.now();
    for (const h of await this.#options.store.seenSince(now - this.#options.offlineAfterMs)) {
      this.#hosts.set(h.hostId, {
        hostname: h.hostname,
        status: "ONLINE",
        lastSeen: h.lastSeenMs,
        written: h.lastSeenMs,
        streams: 0,
      });
    }
    this.#timer = setInterval(() => void this.tick(), this.#options.flushMs);
    this.#timer.unref();
  }

  /** Adds a listener of every change this instance sees; returns its removal. */
  onChange(listener: (change: HostStatusChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The status of a host, given the `last_seen` the database holds for it: this
   * instance's view when it has one, else judged by `last_seen` alone.
   */
  statusOf(hostId: string, storedLastSeenMs: number): { status: HostStatus; lastSeenMs: number } {
    const entry = this.#hosts.get(hostId);
    if (entry === undefined) {
      const silent = Date.now() - storedLastSeenMs >= this.#options.offlineAfterMs;
      return { status: silent ? "OFFLINE" : "ONLINE", lastSeenMs: storedLastSeenMs };
    }
    return { status: entry.status, lastSeenMs: Math.max(entry.lastSeen, storedLastSeenMs) };
  }

  registered(hostId: string, hostname: string): void {
    const entry = this.#entry(hostId, hostname);
    entry.lastSeen = Date.now();
    if (entry.status !== "ONLINE") this.#change(hostId, entry, "ONLINE", "registered", true);
  }

  streamOpened(hostId: string, hostname: string): void {
    const entry = this.#entry(hostId, hostname);
    entry.streams++;
    entry.lastSeen = Date.now();
    if (entry.status !== "ONLINE") this.#change(hostId, entry, "ONLINE", "stream opened", true);
  }

  seen(hostId: string): void {
    // Hot path, once per event: no allocation, no I/O; the timer writes it.
    const entry = this.#hosts.get(hostId);
    if (entry !== undefined) entry.lastSeen = Date.now();
  }

  streamClosed(hostId: string): void {
    const entry = this.#hosts.get(hostId);
    if (entry === undefined) return;
    entry.streams = Math.max(0, entry.streams - 1);
    entry.lastSeen = Date.now();
    // Streams that end because this instance stops are not the host going away: its
    // agent reconnects elsewhere, or the silence check on another instance notices.
    if (entry.streams === 0 && entry.status === "ONLINE" && !this.#stopping) {
      this.#change(hostId, entry, "OFFLINE", "stream closed", true);
    }
  }

  /** Adopts a change another instance decided. */
  acceptRemote(change: HostStatusChange): void {
    const entry = this.#entry(change.hostId, change.hostname);
    if (change.lastSeenMs > entry.lastSeen) entry.lastSeen = change.lastSeenMs;
    // The deciding instance writes last_seen itself.
    if (change.lastSeenMs > entry.written) entry.written = change.lastSeenMs;
    if (change.status === "OFFLINE" && entry.streams > 0) {
      // Its stream there closed, but this instance still holds one: say so to the others.
      if (entry.status === "ONLINE") {
        this.#relay?.(new HostStatusChange(change.hostId, entry.hostname, "ONLINE", Date.now()));
      }
      return;
    }
    if (entry.status !== change.status) {
      this.#change(change.hostId, entry, change.status, "reported by another instance", false);
    }
  }

  /** Stops deciding OFFLINE for streams that end from now on (the server is shutting down). */
  stopping(): void {
    this.#stopping = true;
  }

  /** One round of the timer: the silence check, then the write. Never runs twice at once. */
  tick(): Promise<void> {
    this.#ticking ??= (async () => {
      try {
        await this.sweep();
        await this.flush();
      } catch (err) {
        this.#options.log.warn(
          { err: (err as Error).message },
          "host liveness: could not reach the database; retrying at the next interval",
        );
      } finally {
        this.#ticking = undefined;
      }
    })();
    return this.#ticking;
  }

  /** Writes `last_seen` of every host seen since it was last written, in one statement. */
  async flush(): Promise<void> {
    const now = Date.now();
    // A host with an open stream here is present; refreshing its last_seen well within
    // offlineAfterMs keeps other instances from taking it for silent while it is quiet.
    const refreshAfter = this.#options.offlineAfterMs / 3;
    const ids: string[] = [];
    const times: number[] = [];
    const entries: HostEntry[] = [];
    for (const [hostId, entry] of this.#hosts) {
      if (entry.streams > 0 && now - entry.lastSeen >= refreshAfter) entry.lastSeen = now;
      if (entry.lastSeen > entry.written) {
        ids.push(hostId);
        times.push(entry.lastSeen);
        entries.push(entry);
      }
    }
    if (ids.length === 0) return;
    await this.#options.store.writeLastSeen(ids, times);
    this.flushes++;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i] as HostEntry;
      entry.written = Math.max(entry.written, times[i] as number);
    }
  }

  /**
   * Turns OFFLINE the ONLINE hosts without a stream here that nobody has seen for
   * `offlineAfterMs`. "Nobody" includes other instances: the candidates' stored
   * `last_seen` is read first (one query, and none when there are no candidates).
   */
  async sweep(): Promise<void> {
    const { offlineAfterMs } = this.#options;
    const candidates: string[] = [];
    const silent = (entry: HostEntry, now: number): boolean =>
      entry.status === "ONLINE" && entry.streams === 0 && now - entry.lastSeen >= offlineAfterMs;
    const before = Date.now();
    for (const [hostId, entry] of this.#hosts) if (silent(entry, before)) candidates.push(hostId);
    if (candidates.length > 0) {
      const stored = await this.#options.store.lastSeen(candidates);
      const now = Date.now();
      for (const hostId of candidates) {
        const entry = this.#hosts.get(hostId);
        if (entry === undefined) continue;
        const storedMs = stored.get(hostId) ?? 0;
        if (storedMs > entry.lastSeen) entry.lastSeen = storedMs;
        if (storedMs > entry.written) entry.written = storedMs;
        if (silent(entry, now)) this.#change(hostId, entry, "OFFLINE", "silent", true);
      }
    }
    this.sweeps++;
  }

  /** Stops the timer and writes what is left; call before the database closes. */
  async close(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#timer);
    await this.#ticking;
    try {
      await this.flush();
    } catch (err) {
      this.#options.log.warn(
        { err: (err as Error).message },
        "host liveness: last_seen not written at shutdown",
      );
    }
    this.#listeners.clear();
  }

  #entry(hostId: string, hostname: string): HostEntry {
    let entry = this.#hosts.get(hostId);
    if (entry === undefined) {
      entry = { hostname, status: "OFFLINE", lastSeen: 0, written: 0, streams: 0 };
      this.#hosts.set(hostId, entry);
    } else {
      entry.hostname = hostname;
    }
    return entry;
  }

  #change(
    hostId: string,
    entry: HostEntry,
    status: HostStatus,
    reason: string,
    decidedHere: boolean,
  ): void {
    entry.status = status;
    const change = new HostStatusChange(hostId, entry.hostname, status, entry.lastSeen);
    if (decidedHere) {
      this.#options.log.info(
        { hostId, hostname: entry.hostname, status, reason, lastSeen: formatMs(entry.lastSeen) },
        `host ${status === "ONLINE" ? "online" : "offline"}`,
      );
      this.#relay?.(change);
    } else {
      this.#options.log.debug({ hostId, hostname: entry.hostname, status, reason }, "host status");
    }
    // Listeners only send; each is O(1) and never waits.
    for (const listener of this.#listeners) listener(change);
  }
}
