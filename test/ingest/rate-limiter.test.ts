import { describe, expect, it } from "vitest";
import { HostRateLimiter } from "../../src/ingest/rate-limiter.js";

describe("HostRateLimiter", () => {
  it("lets a burst through, then refuses until tokens refill at the rate", () => {
    let now = 1_000;
    const limiter = new HostRateLimiter({ ratePerSecond: 10, burst: 5, now: () => now });
    const first = Array.from({ length: 7 }, () => limiter.take("a"));
    expect(first).toEqual([true, true, true, true, true, false, false]);
    expect(limiter.limited).toBe(2);
    now += 100; // one token at 10/s
    expect(limiter.take("a")).toBe(true);
    expect(limiter.take("a")).toBe(false);
    now += 10_000; // refills to the burst, not beyond
    expect(Array.from({ length: 6 }, () => limiter.take("a")).filter(Boolean)).toHaveLength(5);
  });

  it("limits each host on its own: one host over its rate does not affect another", () => {
    const now = 0;
    const limiter = new HostRateLimiter({ ratePerSecond: 1, burst: 2, now: () => now });
    expect([limiter.take("noisy"), limiter.take("noisy"), limiter.take("noisy")]).toEqual([
      true,
      true,
      false,
    ]);
    expect([limiter.take("quiet"), limiter.take("quiet")]).toEqual([true, true]);
  });

  it("is off when the rate is 0", () => {
    const limiter = new HostRateLimiter({ ratePerSecond: 0, burst: 0 });
    expect(Array.from({ length: 1000 }, () => limiter.take("a")).every(Boolean)).toBe(true);
  });

  it("keeps at most maxHosts buckets", () => {
    let now = 0;
    const limiter = new HostRateLimiter({
      ratePerSecond: 1,
      burst: 1,
      maxHosts: 3,
      now: () => now,
    });
    for (const h of ["a", "b", "c", "d", "e"]) {
      limiter.take(h);
      now += 1;
    }
    // A host that was forgotten starts again with a full bucket, which is what it would have.
    expect(limiter.take("e")).toBe(false);
  });
});
