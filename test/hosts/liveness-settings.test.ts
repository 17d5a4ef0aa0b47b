/**
 * The liveness settings: defaults, and the rule that ties the offline time to the flush.
 */
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.js";

describe("host liveness settings", () => {
  it("default to a write every 5 s and OFFLINE after 90 s of silence", () => {
    const config = loadConfig({});
    expect(config.hostSeenFlushMs).toBe(5_000);
    expect(config.hostOfflineAfterMs).toBe(90_000);
  });

  it("stop startup when the offline time is shorter than two flushes, naming both variables", () => {
    const env = { TRIPWIRE_HOST_SEEN_FLUSH_MS: "1000", TRIPWIRE_HOST_OFFLINE_AFTER_MS: "1999" };
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(
      "TRIPWIRE_HOST_OFFLINE_AFTER_MS=1999 is not valid: expected at least twice TRIPWIRE_HOST_SEEN_FLUSH_MS (1000)",
    );
    expect(loadConfig({ ...env, TRIPWIRE_HOST_OFFLINE_AFTER_MS: "2000" }).hostOfflineAfterMs).toBe(
      2_000,
    );
  });

  it("stop startup on a flush interval that is not a whole number of milliseconds", () => {
    expect(() => loadConfig({ TRIPWIRE_HOST_SEEN_FLUSH_MS: "5s" })).toThrow(
      /TRIPWIRE_HOST_SEEN_FLUSH_MS="5s" is not valid: expected a whole number from 10/,
    );
  });
});
