/**
 * The rules an AgentEvent must pass before it is stored. Pure and synchronous except
 * for the host lookup, which the stream does separately.
 */
import type { AgentEvent } from "../gen/alert/alert_pb.js";
import { formatMicros } from "../storage/alert-types.js";

/** The accepted tripwire types. */
export const tripwireTypes: ReadonlySet<string> = new Set(["FILE", "NETWORK", "PROCESS"]);
/** The accepted severities, least severe first. */
export const severities: ReadonlySet<string> = new Set(["INFO", "WARN", "CRITICAL"]);

/** Limits that validation enforces. */
export interface ValidationLimits {
  readonly maxEventAgeSeconds: number;
  readonly maxFutureSkewSeconds: number;
  readonly maxEventDetailBytes: number;
  readonly maxRuleNameLength: number;
}

/** An event that passed validation, with its fields normalized. */
export interface ValidEvent {
  readonly alertId: string;
  readonly hostId: string;
  readonly timestampUs: bigint;
  readonly tripwireType: string;
  readonly ruleName: string;
  readonly severity: string;
  readonly eventDetailJson: string;
}

/** The result of validation: the event, or the reason it was refused. */
export type Validation =
  | { readonly ok: true; readonly event: ValidEvent }
  | { readonly ok: false; readonly error: string };

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const utf8 = new TextDecoder("utf-8", { fatal: true });

function fail(error: string): Validation {
  return { ok: false, error };
}

/** Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form. */
export function isUuid(s: string): boolean {
  return s.length === 36 && uuidPattern.test(s);
}

/**
 * Checks one event against the seed's rules at server time `nowUs`. Error texts say
 * what was wrong and what was expected; they go back to the agent in the ERROR.
 */
export function validateEvent(ev: AgentEvent, nowUs: bigint, limits: ValidationLimits): Validation {
  if (ev.alertId === "") return fail("alert_id is required");
  if (!isUuid(ev.alertId)) return fail("alert_id must be a UUID (8-4-4-4-12 hex digits)");
  if (ev.hostId === "") return fail("host_id is required");
  if (!isUuid(ev.hostId)) return fail("host_id must be a UUID as returned by RegisterAgent");
  if (ev.ruleName === "") return fail("rule_name is required");
  if (ev.ruleName.length > limits.maxRuleNameLength) {
    return fail(`rule_name is longer than ${limits.maxRuleNameLength} characters`);
  }
  if (ev.ruleName.includes("\u0000")) return fail("rule_name must not contain NUL characters");
  if (!tripwireTypes.has(ev.tripwireType)) {
    return fail(
      `tripwire_type ${JSON.stringify(ev.tripwireType)} is not one of FILE, NETWORK, PROCESS`,
    );
  }
  if (!severities.has(ev.severity)) {
    return fail(`severity ${JSON.stringify(ev.severity)} is not one of INFO, WARN, CRITICAL`);
  }

  const ts = ev.timestampUs;
  if (ts === 0n) return fail("timestamp_us is required");
  const oldest = nowUs - BigInt(limits.maxEventAgeSeconds) * 1_000_000n;
  const newest = nowUs + BigInt(limits.maxFutureSkewSeconds) * 1_000_000n;
  if (ts < oldest) {
    return fail(
      `timestamp_us ${ts} (${describeMicros(ts)}) is older than the maximum event age of ` +
        `${limits.maxEventAgeSeconds} s (server time ${formatMicros(nowUs)}); check the agent's clock`,
    );
  }
  if (ts > newest) {
    return fail(
      `timestamp_us ${ts} (${describeMicros(ts)}) is more than ${limits.maxFutureSkewSeconds} s ` +
        `ahead of server time ${formatMicros(nowUs)}; check the agent's clock`,
    );
  }

  let eventDetailJson = "{}";
  const detail = ev.eventDetailJson;
  if (detail.length > 0) {
    if (detail.length > limits.maxEventDetailBytes) {
      return fail(`event_detail_json is larger than ${limits.maxEventDetailBytes} bytes`);
    }
    let text: string;
    try {
      text = utf8.decode(detail);
    } catch {
      return fail("event_detail_json is not valid UTF-8");
    }
    try {
      JSON.parse(text);
    } catch (err) {
      return fail(`event_detail_json is not valid JSON: ${(err as Error).message}`);
    }
    // PostgreSQL's jsonb cannot hold U+0000; refuse it here rather than fail a batch.
    if (text.includes("\\u0000")) {
      return fail("event_detail_json must not contain \\u0000");
    }
    eventDetailJson = text;
  }

  return {
    ok: true,
    event: {
      alertId: ev.alertId.toLowerCase(),
      hostId: ev.hostId.toLowerCase(),
      timestampUs: ts,
      tripwireType: ev.tripwireType,
      ruleName: ev.ruleName,
      severity: ev.severity,
      eventDetailJson,
    },
  };
}

// RFC 3339 has four-digit years: 0000-01-01 to 9999-12-31, in microseconds.
const describableMin = -62_167_219_200_000_000n;
const describableEnd = 253_402_300_800_000_000n;

function describeMicros(us: bigint): string {
  // Past year 9999 Date writes a six-digit year (or throws); say so instead.
  return us >= describableMin && us < describableEnd ? formatMicros(us) : "out of range";
}
