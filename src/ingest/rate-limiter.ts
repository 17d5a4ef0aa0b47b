/**
 * Per-host event rate limit: a token bucket for each host_id, refilled lazily on use,
 * so the cost is O(1) per event and nothing runs while hosts are quiet.
 */

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Settings of the limiter; `ratePerSecond` 0 turns it off. */
export interface RateLimitOptions {
  readonly ratePerSecond: number;
  readonly burst: number;
  /** Buckets kept at most; idle ones are forgotten first (a full bucket is the default). */
  readonly maxHosts?: number;
  readonly now?: () => number;
}

/** Token buckets by host. */
export class HostRateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #options: RateLimitOptions;
  readonly #now: () => number;
  /** Events refused so far. */
  limited = 0;

  constructor(options: RateLimitOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Takes one token for `hostId`; false when the host is over its rate. */
  take(hostId: string): boolean {
    const { ratePerSecond, burst } = this.#options;
    if (ratePerSecond <= 0) return true;
    const now = this.#now();
    let bucket = this.#buckets.get(hostId);
    if (bucket === undefined) {
      if (this.#buckets.size >= (this.#options.maxHosts ?? 100_000)) this.#forgetIdle(now);
      bucket = { tokens: burst, updatedMs: now };
      this.#buckets.set(hostId, bucket);
    } else {
      bucket.tokens = Math.min(
        burst,
        bucket.tokens + ((now - bucket.updatedMs) * ratePerSecond) / 1000,
      );
      bucket.updatedMs = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return true;
    }
    this.limited++;
    return false;
  }

  /** Drops buckets that have refilled completely: forgetting them changes nothing. */
  #forgetIdle(now: number): void {
    const { ratePerSecond, burst } = this.#options;
    for (const [host, b] of this.#buckets) {
      if (b.tokens + ((now - b.updatedMs) * ratePerSecond) / 1000 >= burst)
        this.#buckets.delete(host);
    }
    // Still full of busy hosts: forget the oldest entry rather than grow without bound.
    if (this.#buckets.size >= (this.#options.maxHosts ?? 100_000)) {
      const oldest = this.#buckets.keys().next().value;
      if (oldest !== undefined) this.#buckets.delete(oldest);
    }
  }
}
