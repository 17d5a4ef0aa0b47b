import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, settings, settingsTable } from "../../src/config.js";

describe("loadConfig", () => {
  it("uses the documented defaults when nothing is set", () => {
    const config = loadConfig({});
    expect(config.port).toBe(8080);
    expect(config.host).toBe("127.0.0.1");
    expect(config.databaseUrl).toBeUndefined();
    expect(config.maxEventAgeSeconds).toBe(300);
    expect(config.maxFutureSkewSeconds).toBe(60);
    expect(config.flushIntervalMs).toBe(100);
    expect(config.subscriberBuffer).toBe(64);
  });

  it("reads every setting from its variable", () => {
    const config = loadConfig({
      PORT: "9000",
      DATABASE_URL: "postgres://u@db:5432/tw",
      TRIPWIRE_FLUSH_INTERVAL_MS: "250",
      TRIPWIRE_MAX_IN_FLIGHT_PER_STREAM: "7",
    });
    expect(config.port).toBe(9000);
    expect(config.databaseUrl).toBe("postgres://u@db:5432/tw");
    expect(config.flushIntervalMs).toBe(250);
    expect(config.maxInFlightPerStream).toBe(7);
  });

  it.each([
    ["PORT", "http", /PORT="http" is not valid: expected a whole number from 0 to 65535/],
    ["PORT", "70000", /PORT="70000" is not valid/],
    [
      "TRIPWIRE_BATCH_SIZE",
      "0",
      /TRIPWIRE_BATCH_SIZE="0" is not valid: expected a whole number from 1/,
    ],
    ["TRIPWIRE_FLUSH_INTERVAL_MS", "1.5", /TRIPWIRE_FLUSH_INTERVAL_MS="1.5" is not valid/],
    [
      "DATABASE_URL",
      "mysql://x/y",
      /DATABASE_URL has protocol mysql: expected postgres:\/\/… or postgresql:\/\/…/,
    ],
    ["DATABASE_URL", "not a url", /DATABASE_URL is not a valid URL/],
    ["TRIPWIRE_LOG_LEVEL", "loud", /TRIPWIRE_LOG_LEVEL="loud" is not valid: expected one of/],
  ])("stops on a bad %s=%s with a message naming the variable", (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  it("keeps every alert by default (retention off) and pages the history API by 100 up to 1000", () => {
    const config = loadConfig({});
    expect(config.retentionDays).toBe(0);
    expect(config.retentionBatch).toBe(1000);
    expect(config.apiDefaultLimit).toBe(100);
    expect(config.apiMaxLimit).toBe(1000);
  });

  it("stops when the history API's default page size is above its maximum", () => {
    expect(() =>
      loadConfig({ TRIPWIRE_API_DEFAULT_LIMIT: "500", TRIPWIRE_API_MAX_LIMIT: "200" }),
    ).toThrow(
      "TRIPWIRE_API_DEFAULT_LIMIT (500) is above TRIPWIRE_API_MAX_LIMIT (200): expected at most the maximum",
    );
  });

  it("the README's configuration table is the one generated from the settings", () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    expect(readme).toContain(settingsTable());
    expect(Object.keys(settings).length).toBeGreaterThan(10);
  });
});
