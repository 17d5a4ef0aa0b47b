/**
 * The Redis relay of host status changes (src/hosts/host-status-relay.ts) against a real
 * redis-server of its own, which it stops and starts.
 */
import { afterEach, describe, expect, it } from "vitest";
import { HostStatusChange } from "../../src/hosts/host-liveness.js";
import { HostStatusRelay } from "../../src/hosts/host-status-relay.js";
import { RecordingLogger } from "../support/recording-logger.js";
import { type PrivateRedis, startPrivateRedis } from "../support/redis-server.js";
import { redisTargets } from "../support/services.js";

/** Resolves once `condition()` holds, doing `step()` between checks. */
async function until(what: string, condition: () => boolean, step: () => void): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting until ${what}`);
    step();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.each(redisTargets)("HostStatusRelay [%s]", () => {
  let redis: PrivateRedis | undefined;
  const relays: HostStatusRelay[] = [];

  afterEach(async () => {
    for (const r of relays.splice(0)) r.close();
    await redis?.stop();
  });

  function relay(url: string, received: HostStatusChange[], log = new RecordingLogger()) {
    const r = new HostStatusRelay({
      url,
      channel: "tripwire:test:hosts",
      onChange: (c) => received.push(c),
      log,
    });
    relays.push(r);
    return r;
  }

  it("delivers another instance's changes, not its own, and subscribes by itself when Redis comes up after it started", async () => {
    redis = await startPrivateRedis();
    await redis.stop();
    const atA: HostStatusChange[] = [];
    const a = relay(redis.url, atA);
    await expect(a.start()).rejects.toThrow();

    await redis.restart();
    const atB: HostStatusChange[] = [];
    const b = relay(redis.url, atB);
    await b.start();
    const change = new HostStatusChange(
      "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21",
      "web-01",
      "OFFLINE",
      1_772_047_501_123,
    );
    await until(
      "A received B's change",
      () => atA.length > 0,
      () => b.publish(change),
    );
    expect(atA[0]).toEqual(change);
    expect(atB).toEqual([]);
  });

  it("ignores a malformed message on the channel with a warning instead of throwing", async () => {
    redis = await startPrivateRedis();
    const log = new RecordingLogger();
    const received: HostStatusChange[] = [];
    const a = relay(redis.url, received, log);
    await a.start();
    const { Redis } = await import("ioredis");
    const raw = new Redis(redis.url);
    try {
      for (const bad of [
        "not json",
        '{"o":"x","host_id":1}',
        '{"o":"x","host_id":"h","hostname":"w","status":"MAYBE","last_seen_ms":1}',
      ]) {
        await raw.publish("tripwire:test:hosts", bad);
      }
      await until(
        "three warnings",
        () => log.at("warn").length >= 3,
        () => {},
      );
    } finally {
      raw.disconnect();
    }
    expect(received).toEqual([]);
    expect(log.messages("warn")).toEqual(
      Array(3).fill("ignored a malformed message on the redis hosts channel"),
    );
  });
});
