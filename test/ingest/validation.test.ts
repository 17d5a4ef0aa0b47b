/**
 * The rules of `validateEvent`, one table per rule, at a fixed server time.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type AgentEvent, AgentEventSchema } from "../../src/gen/alert/alert_pb.js";
import {
  type Validation,
  type ValidationLimits,
  validateEvent,
} from "../../src/ingest/validation.js";

/** 2026-02-25T19:25:01.123456Z, the server clock of every test. */
const nowUs = 1_772_047_501_123_456n;
const nowText = "2026-02-25T19:25:01.123456Z";
const second = 1_000_000n;

const limits: ValidationLimits = {
  maxEventAgeSeconds: 300,
  maxFutureSkewSeconds: 60,
  maxEventDetailBytes: 64,
  maxRuleNameLength: 32,
};

const alertId = "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a70";
const hostId = "5f2c8e1a-3b4d-4c6e-9f8a-7b6c5d4e3f21";
const encode = (s: string): Uint8Array => new TextEncoder().encode(s);

function event(overrides: Partial<AgentEvent> = {}): AgentEvent {
  return create(AgentEventSchema, {
    alertId,
    hostId,
    timestampUs: nowUs - 10n * second,
    tripwireType: "FILE",
    ruleName: "etc-passwd-write",
    severity: "CRITICAL",
    eventDetailJson: encode('{"path":"/etc/passwd","pid":4242}'),
    ...overrides,
  });
}

function check(overrides: Partial<AgentEvent>): Validation {
  return validateEvent(event(overrides), nowUs, limits);
}

/** The error text, failing the test when the event was accepted. */
function errorOf(overrides: Partial<AgentEvent>): string {
  const result = check(overrides);
  if (result.ok) throw new Error(`expected a refusal, got ${JSON.stringify(result, bigints)}`);
  return result.error;
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

describe("validateEvent", () => {
  it("accepts a valid event and keeps its fields", () => {
    expect(check({})).toEqual({
      ok: true,
      event: {
        alertId,
        hostId,
        timestampUs: nowUs - 10n * second,
        tripwireType: "FILE",
        ruleName: "etc-passwd-write",
        severity: "CRITICAL",
        eventDetailJson: '{"path":"/etc/passwd","pid":4242}',
      },
    });
  });

  it("normalizes alert_id and host_id to lower case, so a replay in other case is the same alert", () => {
    const result = check({ alertId: alertId.toUpperCase(), hostId: hostId.toUpperCase() });
    expect(result.ok && result.event.alertId).toBe(alertId);
    expect(result.ok && result.event.hostId).toBe(hostId);
  });

  it('stores an absent event_detail_json as "{}"', () => {
    const result = check({ eventDetailJson: new Uint8Array(0) });
    expect(result.ok && result.event.eventDetailJson).toBe("{}");
  });

  describe("required fields", () => {
    it.each([
      ["alert_id", { alertId: "" }, "alert_id is required"],
      ["host_id", { hostId: "" }, "host_id is required"],
      ["rule_name", { ruleName: "" }, "rule_name is required"],
      ["timestamp_us", { timestampUs: 0n }, "timestamp_us is required"],
    ] as const)("refuses an event without %s", (_field, overrides, message) => {
      expect(errorOf(overrides)).toBe(message);
    });
  });

  describe("UUIDs", () => {
    const notUuids = [
      "not-a-uuid",
      "0b7e2d4c9a514f3e8c2a6d1f0e9b8a70", // no dashes
      "{0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a70}", // braces
      "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a7g", // non-hex digit
      "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a7", // one digit short
      "0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a700", // one digit long
      "0b7e2d4c-9a514-f3e-8c2a-6d1f0e9b8a70", // dash misplaced
      " 0b7e2d4c-9a51-4f3e-8c2a-6d1f0e9b8a70", // padded
    ];

    it.each(notUuids)("refuses alert_id %j", (id) => {
      expect(errorOf({ alertId: id })).toBe("alert_id must be a UUID (8-4-4-4-12 hex digits)");
    });

    it.each(notUuids)("refuses host_id %j", (id) => {
      expect(errorOf({ hostId: id })).toBe("host_id must be a UUID as returned by RegisterAgent");
    });

    it.each([
      "00000000-0000-0000-0000-000000000000",
      "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
      "0B7E2d4c-9a51-4F3E-8c2a-6d1f0e9b8a70",
    ])("accepts %s as alert_id and host_id", (id) => {
      const result = check({ alertId: id, hostId: id });
      expect(result.ok && result.event.alertId).toBe(id.toLowerCase());
      expect(result.ok && result.event.hostId).toBe(id.toLowerCase());
    });
  });

  describe("timestamp bounds", () => {
    const oldest = nowUs - 300n * second;
    const newest = nowUs + 60n * second;

    it.each([
      ["the oldest accepted instant", oldest],
      ["the server time", nowUs],
      ["the newest accepted instant", newest],
    ])("accepts %s", (_what, timestampUs) => {
      const result = check({ timestampUs });
      expect(result.ok && result.event.timestampUs).toBe(timestampUs);
    });

    it("refuses one microsecond older than the maximum age, naming that bound and the server time", () => {
      const ts = oldest - 1n;
      expect(errorOf({ timestampUs: ts })).toBe(
        `timestamp_us ${ts} (2026-02-25T19:20:01.123455Z) is older than the maximum event ` +
          `age of 300 s (server time ${nowText}); check the agent's clock`,
      );
    });

    it("refuses one microsecond past the allowed future skew, naming that bound and the server time", () => {
      const ts = newest + 1n;
      expect(errorOf({ timestampUs: ts })).toBe(
        `timestamp_us ${ts} (2026-02-25T19:26:01.123457Z) is more than 60 s ahead of ` +
          `server time ${nowText}; check the agent's clock`,
      );
    });

    it.each([
      ["a negative timestamp", -1n, "older than", "1969-12-31T23:59:59.999999Z"],
      ["milliseconds sent as microseconds", nowUs / 1000n, "older than", "1970-01-21T"],
      ["nanoseconds sent as microseconds", nowUs * 1000n, "ahead of", "out of range"],
      [
        "the last microsecond of year 9999",
        253_402_300_799_999_999n,
        "ahead of",
        "9999-12-31T23:59:59.999999Z",
      ],
      ["the first microsecond of year 10000", 253_402_300_800_000_000n, "ahead of", "out of range"],
      [
        "the first microsecond of year 0",
        -62_167_219_200_000_000n,
        "older than",
        "0000-01-01T00:00:00.000000Z",
      ],
      ["the microsecond before year 0", -62_167_219_200_000_001n, "older than", "out of range"],
      ["the smallest int64", -(2n ** 63n), "older than", "out of range"],
      ["the largest int64", 2n ** 63n - 1n, "ahead of", "out of range"],
    ])("refuses %s without throwing", (_what, timestampUs, bound, described) => {
      const error = errorOf({ timestampUs });
      expect(error).toContain(bound);
      expect(error).toContain(described);
      expect(error).toContain(nowText);
    });
  });

  describe("tripwire_type and severity", () => {
    it.each(["FILE", "NETWORK", "PROCESS"])("accepts tripwire_type %s", (tripwireType) => {
      const result = check({ tripwireType });
      expect(result.ok && result.event.tripwireType).toBe(tripwireType);
    });

    it.each(["", "file", "DISK", "FILE ", "REGISTRY"])("refuses tripwire_type %j", (type) => {
      expect(errorOf({ tripwireType: type })).toBe(
        `tripwire_type ${JSON.stringify(type)} is not one of FILE, NETWORK, PROCESS`,
      );
    });

    it.each(["INFO", "WARN", "CRITICAL"])("accepts severity %s", (severity) => {
      const result = check({ severity });
      expect(result.ok && result.event.severity).toBe(severity);
    });

    it.each(["", "critical", "ERROR", "WARNING", "DEBUG"])("refuses severity %j", (severity) => {
      expect(errorOf({ severity })).toBe(
        `severity ${JSON.stringify(severity)} is not one of INFO, WARN, CRITICAL`,
      );
    });
  });

  describe("rule_name", () => {
    it("accepts a rule_name of exactly the maximum length", () => {
      const ruleName = "r".repeat(32);
      const result = check({ ruleName });
      expect(result.ok && result.event.ruleName).toBe(ruleName);
    });

    it("refuses a rule_name one character over the maximum length", () => {
      expect(errorOf({ ruleName: "r".repeat(33) })).toBe("rule_name is longer than 32 characters");
    });

    it.each(["\u0000", "rule\u0000", "\u0000rule", "ru\u0000le"])(
      "refuses a rule_name with a NUL character (%j)",
      (ruleName) => {
        expect(errorOf({ ruleName })).toBe("rule_name must not contain NUL characters");
      },
    );

    it("keeps quotes, backslashes and non-ASCII characters in rule_name", () => {
      const ruleName = 'say "hi" \\ ünï 🚨';
      const result = check({ ruleName });
      expect(result.ok && result.event.ruleName).toBe(ruleName);
    });
  });

  describe("event_detail_json", () => {
    it.each([
      ["a lone continuation byte", [0x7b, 0x80, 0x7d]],
      ["a truncated two-byte sequence", [0x22, 0xc3, 0x22]],
      ["an overlong encoding of '/'", [0x22, 0xc0, 0xaf, 0x22]],
      ["an encoded surrogate", [0x22, 0xed, 0xa0, 0x80, 0x22]],
      ["0xff", [0xff]],
    ])("refuses invalid UTF-8: %s", (_what, bytes) => {
      expect(errorOf({ eventDetailJson: new Uint8Array(bytes) })).toBe(
        "event_detail_json is not valid UTF-8",
      );
    });

    it.each(['{"path":', "{path:1}", "{'a':1}", '{"a":1,}', "undefined", '{"a":"\u0000"}'])(
      "refuses invalid JSON %j, saying why",
      (text) => {
        expect(errorOf({ eventDetailJson: encode(text) })).toMatch(
          /^event_detail_json is not valid JSON: .+/,
        );
      },
    );

    it.each(['{"a":"\\u0000"}', '{"\\u0000":1}', '["x\\u0000y"]'])(
      "refuses an escaped NUL (%s), which PostgreSQL's jsonb cannot store",
      (text) => {
        expect(errorOf({ eventDetailJson: encode(text) })).toBe(
          "event_detail_json must not contain \\u0000",
        );
      },
    );

    it("accepts a detail of exactly the maximum size in bytes", () => {
      const text = `{"p":"${"x".repeat(64 - 8)}"}`;
      expect(encode(text).length).toBe(64);
      const result = check({ eventDetailJson: encode(text) });
      expect(result.ok && result.event.eventDetailJson).toBe(text);
    });

    it("refuses a detail one byte over the maximum size", () => {
      const text = `{"p":"${"x".repeat(64 - 7)}"}`;
      expect(errorOf({ eventDetailJson: encode(text) })).toBe(
        "event_detail_json is larger than 64 bytes",
      );
    });

    it("counts the size in UTF-8 bytes, not characters", () => {
      // 30 characters of "é" are 30 UTF-16 units but 60 bytes.
      const text = `{"p":"${"é".repeat(30)}"}`;
      expect(text.length).toBeLessThanOrEqual(64);
      expect(errorOf({ eventDetailJson: encode(text) })).toBe(
        "event_detail_json is larger than 64 bytes",
      );
    });

    it("keeps valid non-ASCII JSON as its decoded text", () => {
      const text = '{"path":"/tmp/ünï 🚨","q":"\\""}';
      const result = check({ eventDetailJson: encode(text) });
      expect(result.ok && result.event.eventDetailJson).toBe(text);
    });
  });

  describe("refusal kinds (the reason label of tripwire_events_rejected_total)", () => {
    it.each([
      ["a rule_name over the length limit", { ruleName: "r".repeat(33) }, "too_large"],
      [
        "an event_detail_json over the size limit",
        { eventDetailJson: encode(`{"p":"${"x".repeat(64)}"}`) },
        "too_large",
      ],
      ["a timestamp past the maximum age", { timestampUs: nowUs - 301n * second }, "too_old"],
      ["a timestamp past the future skew", { timestampUs: nowUs + 61n * second }, "too_new"],
      ["an unknown severity", { severity: "LOUD" }, "invalid"],
      ["a missing alert_id", { alertId: "" }, "invalid"],
      ["an event_detail_json that is not JSON", { eventDetailJson: encode("{") }, "invalid"],
    ] as const)("calls a refusal for %s %s", (_what, overrides, kind) => {
      const result = check(overrides);
      expect(result.ok ? "accepted" : result.kind).toBe(kind);
    });
  });
});
