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

/**
 * Which rule refused an event, as a fixed word for metrics labels: `too_large` (a size
 * limit), `too_old` and `too_new` (the timestamp bounds), `invalid` (anything else).
 */
export type RefusalKind = "invalid" | "too_large" | "too_old" | "too_new";

/** The result of validation: the event, or the reason it was refused. */
export type Validation =
  | { readonly ok: true; readonly event: ValidEvent }
  | { readonly ok: false; readonly error: string; readonly kind: RefusalKind };

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const utf8 = new TextDecoder("utf-8", { fatal: true });
// With the u flag a surrogate pair is one code point, so this matches only unpaired ones.
const unpairedSurrogate = /[\ud800-\udfff]/u;

function fail(error: string, kind: RefusalKind = "invalid"): Validation {
  return { ok: false, error, kind };
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
    return fail(`rule_name is longer than ${limits.maxRuleNameLength} characters`, "too_large");
  }
  if (ev.ruleName.includes("\u0000")) return fail("rule_name must not contain NUL characters");
  // Only Connect's JSON codec can deliver these (binary protobuf checks UTF-8); drivers
  // would store U+FFFD instead, and PGlite's array encoding can fail the batch.
  if (unpairedSurrogate.test(ev.ruleName)) {
    return fail("rule_name must not contain unpaired surrogates (\\ud800-\\udfff)");
  }
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
      "too_old",
    );
  }
  if (ts > newest) {
    return fail(
      `timestamp_us ${ts} (${describeMicros(ts)}) is more than ${limits.maxFutureSkewSeconds} s ` +
        `ahead of server time ${formatMicros(nowUs)}; check the agent's clock`,
      "too_new",
    );
  }

  let eventDetailJson = "{}";
  const detail = ev.eventDetailJson;
  if (detail.length > 0) {
    if (detail.length > limits.maxEventDetailBytes) {
      return fail(
        `event_detail_json is larger than ${limits.maxEventDetailBytes} bytes`,
        "too_large",
      );
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
    // Refuse here what PostgreSQL's jsonb would refuse, rather than fail a batch.
    const problem = jsonbProblem(text);
    if (problem !== undefined) return fail(`event_detail_json ${problem}`);
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

/** Deepest nesting of arrays and objects accepted in event_detail_json. */
export const maxEventDetailDepth = 128;

// PostgreSQL's numeric, which jsonb uses for every number: at most 16383 digits after
// the decimal point, the first digit at most 10^131071, and |exponent| below 2^30 - 1.
const maxNumericScale = 16_383;
const maxNumericWeight = 131_071;
const maxNumericExponent = 1_073_741_823n;
const jsonNumber = /-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/y;

/**
 * What PostgreSQL's jsonb would refuse in `text`, which is already known to be valid
 * JSON: an escaped NUL, an escaped surrogate that is not part of a pair, a number beyond
 * numeric's range, or nesting deeper than `maxEventDetailDepth` (PostgreSQL's parser
 * recurses, and overflows its stack long before JSON.parse does). One pass, O(length).
 */
function jsonbProblem(text: string): string | undefined {
  let depth = 0;
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // A string: only its \u escapes matter. A high surrogate must come right before a low one.
      let high = false;
      for (i++; ; ) {
        const d = text.charCodeAt(i);
        if (d === 0x5c && text.charCodeAt(i + 1) === 0x75) {
          const unit = Number.parseInt(text.slice(i + 2, i + 6), 16);
          if (unit === 0) return "must not contain \\u0000";
          const isLow = unit >= 0xdc00 && unit <= 0xdfff;
          if (high !== isLow) return "has an unpaired surrogate escape (\\ud800-\\udfff)";
          high = unit >= 0xd800 && unit <= 0xdbff;
          i += 6;
          continue;
        }
        if (high) return "has an unpaired surrogate escape (\\ud800-\\udfff)";
        i += d === 0x5c ? 2 : 1;
        if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxEventDetailDepth) {
        return `is nested more than ${maxEventDetailDepth} levels deep`;
      }
      i++;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
      i++;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      jsonNumber.lastIndex = i;
      const m = jsonNumber.exec(text) as RegExpExecArray;
      i = jsonNumber.lastIndex;
      const whole = m[1] as string;
      const fraction = m[2] ?? "";
      const exponent = BigInt(m[3] ?? "0");
      const first = (whole + fraction).search(/[1-9]/);
      if (
        exponent >= maxNumericExponent ||
        exponent <= -maxNumericExponent ||
        fraction.length - Number(exponent) > maxNumericScale ||
        (first >= 0 && whole.length - 1 - first + Number(exponent) > maxNumericWeight)
      ) {
        return `has a number PostgreSQL cannot store: ${m[0].length > 24 ? `${m[0].slice(0, 24)}…` : m[0]}`;
      }
    } else {
      i++;
    }
  }
  return undefined;
}

// RFC 3339 has four-digit years: 0000-01-01 to 9999-12-31, in microseconds.
const describableMin = -62_167_219_200_000_000n;
const describableEnd = 253_402_300_800_000_000n;

function describeMicros(us: bigint): string {
  // Past year 9999 Date writes a six-digit year (or throws); say so instead.
  return us >= describableMin && us < describableEnd ? formatMicros(us) : "out of range";
}
