/**
 * Property-based tests of `validateEvent` over arbitrary AgentEvents: it never throws,
 * it accepts exactly the events that pass every rule (written out again here as an
 * independent oracle), and whatever it accepts PostgreSQL's jsonb stores.
 */
import { create } from "@bufbuild/protobuf";
import { sql } from "drizzle-orm";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentEvent, AgentEventSchema } from "../../src/gen/alert/alert_pb.js";
import {
  maxEventDetailDepth,
  type ValidationLimits,
  type ValidEvent,
  validateEvent,
} from "../../src/ingest/validation.js";
import { type AlertStore, createAlertStore } from "../../src/storage/alert-store.js";
import type { NewAlert } from "../../src/storage/alert-types.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";

/** 2026-02-25T19:25:01.123456Z, the server clock of the pure properties. */
const nowUs = 1_772_047_501_123_456n;
const second = 1_000_000n;

const limits: ValidationLimits = {
  maxEventAgeSeconds: 300,
  maxFutureSkewSeconds: 60,
  maxEventDetailBytes: 65_536,
  maxRuleNameLength: 256,
};

// ---------------------------------------------------------------------------------------
// The oracle: every rule of the seed and of PostgreSQL, written independently of the code.
// ---------------------------------------------------------------------------------------

/** The fields of an AgentEvent, named as in the proto and in validation errors. */
type Field =
  | "alert_id"
  | "host_id"
  | "rule_name"
  | "tripwire_type"
  | "severity"
  | "timestamp_us"
  | "event_detail_json";

const hex = "[0-9a-fA-F]";
const canonicalUuid = new RegExp(`^${hex}{8}-${hex}{4}-${hex}{4}-${hex}{4}-${hex}{12}$`);
const lowerUuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const jsonStringLiteral = /"(?:[^"\\]|\\.)*"/g;
const jsonNumberLiteral = /-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/g;
const loneSurrogate = /[\uD800-\uDFFF]/u;

/** The detail as text, or undefined when the bytes are not well-formed UTF-8. */
function utf8Text(bytes: Uint8Array): string | undefined {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buf.toString("utf8");
  // Decoding replaces every malformed sequence with U+FFFD: a lossless round trip is valid.
  if (!Buffer.from(text, "utf8").equals(buf)) return undefined;
  // A byte order mark may precede JSON text (RFC 8259 §8.1); it is not part of it.
  return text.startsWith("\uFEFF") ? text.slice(1) : text;
}

/** Whether PostgreSQL's numeric (hence jsonb) holds the JSON number `whole.fraction e exp`. */
function numericHolds(whole: string, fraction: string, exp: bigint): boolean {
  if (exp >= 1_073_741_823n || exp <= -1_073_741_823n) return false;
  // As coefficient × 10^scaleExp: the scale PostgreSQL keeps is -scaleExp (the digits
  // written after the point, trailing zeros included), at most 16383.
  const scaleExp = exp - BigInt(fraction.length);
  if (-scaleExp > 16_383n) return false;
  const significant = (whole + fraction).replace(/^0+/, "");
  if (significant === "") return true;
  // The leading digit's power of ten; numeric's weight (base 10000, int16) caps it.
  return BigInt(significant.length - 1) + scaleExp <= 131_071n;
}

/** Whether PostgreSQL's jsonb stores `text`, valid JSON, and its nesting is within bounds. */
function jsonbStores(text: string): boolean {
  for (const literal of text.match(jsonStringLiteral) ?? []) {
    const value = JSON.parse(literal) as string;
    if (value.includes("\u0000") || loneSurrogate.test(value)) return false;
  }
  const outside = text.replace(jsonStringLiteral, '""');
  for (const m of outside.matchAll(jsonNumberLiteral)) {
    if (!numericHolds(m[1] as string, m[2] ?? "", BigInt(m[3] ?? "0"))) return false;
  }
  let depth = 0;
  for (const c of outside) {
    if (c === "[" || c === "{") depth++;
    else if (c === "]" || c === "}") depth--;
    if (depth > maxEventDetailDepth) return false;
  }
  return true;
}

function detailHolds(bytes: Uint8Array, max: number): boolean {
  if (bytes.length === 0) return true;
  if (bytes.length > max) return false;
  const text = utf8Text(bytes);
  if (text === undefined) return false;
  try {
    JSON.parse(text);
  } catch {
    return false;
  }
  return jsonbStores(text);
}

/** The fields of `ev` that break a rule at server time `now`. Empty: the event is valid. */
function brokenRules(ev: AgentEvent, now: bigint, l: ValidationLimits): Set<Field> {
  const broken = new Set<Field>();
  if (!canonicalUuid.test(ev.alertId)) broken.add("alert_id");
  if (!canonicalUuid.test(ev.hostId)) broken.add("host_id");
  if (
    ev.ruleName.length === 0 ||
    ev.ruleName.length > l.maxRuleNameLength ||
    ev.ruleName.includes("\u0000") ||
    loneSurrogate.test(ev.ruleName)
  ) {
    broken.add("rule_name");
  }
  if (!["FILE", "NETWORK", "PROCESS"].includes(ev.tripwireType)) broken.add("tripwire_type");
  if (!["INFO", "WARN", "CRITICAL"].includes(ev.severity)) broken.add("severity");
  const ts = ev.timestampUs;
  if (
    ts === 0n ||
    ts < now - BigInt(l.maxEventAgeSeconds) * second ||
    ts > now + BigInt(l.maxFutureSkewSeconds) * second
  ) {
    broken.add("timestamp_us");
  }
  if (!detailHolds(ev.eventDetailJson, l.maxEventDetailBytes)) broken.add("event_detail_json");
  return broken;
}

// ---------------------------------------------------------------------------------------
// Arbitraries: mostly valid fields (so that many events pass) and every kind of garbage.
// ---------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const utf8 = (s: string): Uint8Array => encoder.encode(s);
const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/** One UTF-16 unit or code point of any kind, lone surrogates and NUL included. */
const anyUnit = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
  fc.constantFrom("\u0000", '"', "\\", "\u2028", "\uFEFF", "\u00e9", "\u{1F6A8}"),
);
const anyString = fc.string({ unit: anyUnit, maxLength: 40 });
/** Mostly well-formed text, now and then anything at all. */
const mostlyPrintable = fc.oneof(
  { weight: 30, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: anyUnit },
);

function oneOf<T>(valid: fc.Arbitrary<T>, invalid: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.oneof({ weight: 8, arbitrary: valid }, { weight: 1, arbitrary: invalid });
}

const mixedCase = fc
  .tuple(fc.uuid(), fc.array(fc.boolean(), { minLength: 36, maxLength: 36 }))
  .map(([id, upper]) => [...id].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join(""));
/** A UUID with one character replaced, inserted or removed. */
const nearUuid = fc
  .tuple(fc.uuid(), fc.nat({ max: 36 }), anyUnit, fc.constantFrom("replace", "insert", "remove"))
  .map(([id, at, c, how]) =>
    how === "replace"
      ? id.slice(0, at) + c + id.slice(at + 1)
      : how === "insert"
        ? id.slice(0, at) + c + id.slice(at)
        : id.slice(0, at) + id.slice(at + 1),
  );
const uuidish = oneOf(
  fc.oneof(fc.uuid(), mixedCase),
  fc.oneof(
    nearUuid,
    anyString,
    fc.constant(""),
    fc.uuid().map((id) => id.replaceAll("-", "")),
  ),
);

const ruleName = oneOf(
  fc.string({ unit: anyUnit, minLength: 1, maxLength: 40 }),
  fc.oneof(
    fc.constant(""),
    fc.integer({ min: 250, max: 262 }).map((n) => "r".repeat(n)),
    fc.tuple(anyString, anyString).map(([a, b]) => `${a}\u0000${b}`),
  ),
);
const tripwireType = oneOf(
  fc.constantFrom("FILE", "NETWORK", "PROCESS"),
  fc.oneof(fc.constantFrom("", "file", "FILE ", "DISK", "FILE\u0000", "ＦＩＬＥ"), anyString),
);
const severity = oneOf(
  fc.constantFrom("INFO", "WARN", "CRITICAL"),
  fc.oneof(fc.constantFrom("", "info", "ERROR", "WARNING", "CRITICAL\n"), anyString),
);

const oldest = nowUs - 300n * second;
const newest = nowUs + 60n * second;
const timestampUs = oneOf(
  fc.bigInt({ min: oldest, max: newest }),
  fc.oneof(
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.bigInt({ min: -3n, max: 3n }).map((d) => oldest + d),
    fc.bigInt({ min: -3n, max: 3n }).map((d) => newest + d),
    fc.constantFrom(0n, -1n, nowUs / 1000n, nowUs * 1000n),
  ),
);

// JSON text built piece by piece, aimed at what JSON.parse takes and jsonb does not.
const digitString = (minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(..."0123456789"), minLength, maxLength });
const exponentDigits = fc.oneof(
  digitString(1, 3),
  fc
    .constantFrom(16_382, 16_383, 16_384, 131_070, 131_071, 131_072, 1_073_741_822, 1_073_741_823)
    .map(String),
  digitString(10, 24),
  digitString(1, 2).map((d) => `000${d}`),
);
const jsonNumber = fc
  .tuple(
    fc.constantFrom("", "-"),
    fc.oneof(
      fc.constant("0"),
      fc.tuple(fc.constantFrom(..."123456789"), digitString(0, 6)).map(([a, b]) => a + b),
    ),
    fc.option(
      fc.oneof(
        digitString(1, 6),
        fc.integer({ min: 0, max: 3 }).map((n) => `${"0".repeat(16_382 + n)}1`),
      ),
      { nil: undefined },
    ),
    fc.option(fc.tuple(fc.constantFrom("e", "E"), fc.constantFrom("", "+", "-"), exponentDigits), {
      nil: undefined,
    }),
  )
  .map(
    ([sign, whole, fraction, exp]) =>
      sign +
      whole +
      (fraction === undefined ? "" : `.${fraction}`) +
      (exp === undefined ? "" : exp.join("")),
  );
const hex4 = (n: number): string => n.toString(16).padStart(4, "0");
const jsonString = fc
  .array(
    fc.oneof(
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 3 }).map((s) =>
        // Raw characters JSON allows in a string: no quote, backslash or control character.
        s.replace(/["\\]|\p{Cc}/gu, "_"),
      ),
      fc.constantFrom('\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\\\u0000"),
      fc
        .oneof(
          fc.constantFrom("0000", "d800", "dbff", "dc00", "dfff", "D83D", "de00", "ffff", "001f"),
          fc.integer({ min: 0, max: 0xffff }).map(hex4),
        )
        .map((h) => `\\u${h}`),
      fc.constant("\\ud83d\\ude00"),
    ),
    { maxLength: 6 },
  )
  .map((parts) => `"${parts.join("")}"`);
const { jsonText } = fc.letrec<{
  jsonText: string;
  scalar: string;
  array: string;
  object: string;
}>((tie) => ({
  jsonText: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    tie("scalar"),
    tie("array"),
    tie("object"),
  ),
  scalar: fc.oneof(jsonNumber, jsonString, fc.constantFrom("true", "false", "null")),
  array: fc.array(tie("jsonText"), { maxLength: 4 }).map((xs) => `[${xs.join(",")}]`),
  object: fc
    .array(fc.tuple(jsonString, tie("jsonText")), { maxLength: 4 })
    .map((kv) => `{${kv.map(([k, v]) => `${k}: ${v}`).join(", ")}}`),
}));
const deepJson = fc
  .tuple(
    fc.oneof(
      fc.integer({ min: maxEventDetailDepth - 2, max: maxEventDetailDepth + 2 }),
      fc.constantFrom(1_000, 7_000, 20_000),
    ),
    fc.constantFrom("[", '{"a":'),
  )
  .map(([n, open]) => `${open.repeat(n)}1${(open === "[" ? "]" : "}").repeat(n)}`);
const nearSizeLimit = fc
  .integer({ min: limits.maxEventDetailBytes - 2, max: limits.maxEventDetailBytes + 2 })
  .map((n) => `{"p":"${"x".repeat(n - 8)}"}`);
const bom = new Uint8Array([0xef, 0xbb, 0xbf]);

/** Detail bytes that are JSON text, or nearly so. */
const jsonishDetail = fc.oneof(
  { weight: 4, arbitrary: jsonText.map(utf8) },
  fc.json({ stringUnit: anyUnit, maxDepth: 3 }).map(utf8),
  deepJson.map(utf8),
  jsonText.map((t) => concat(bom, utf8(t))),
);
const eventDetailJson = oneOf(
  fc.oneof({ weight: 6, arbitrary: jsonishDetail }, fc.constant(new Uint8Array(0))),
  fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    nearSizeLimit.map(utf8),
    // Valid JSON with malformed UTF-8 spliced in somewhere.
    fc
      .tuple(jsonText, fc.uint8Array({ minLength: 1, maxLength: 3, min: 0x80 }), fc.nat())
      .map(([t, junk, at]) => {
        const bytes = utf8(t);
        const i = at % (bytes.length + 1);
        return concat(bytes.subarray(0, i), junk, bytes.subarray(i));
      }),
  ),
);

const agentEvent = fc
  .record({
    alertId: uuidish,
    hostId: uuidish,
    timestampUs,
    tripwireType,
    ruleName,
    severity,
    eventDetailJson,
  })
  .map((fields) => create(AgentEventSchema, fields));

/** An event that is valid in every field but its detail and rule name, the free-form ones. */
function freeFormEvent(now: bigint): fc.Arbitrary<AgentEvent> {
  return fc
    .record({
      alertId: fc.oneof(fc.uuid(), mixedCase),
      hostId: fc.uuid(),
      timestampUs: fc.bigInt({ min: now - 300n * second, max: now }),
      tripwireType: fc.constantFrom("FILE", "NETWORK", "PROCESS"),
      ruleName: fc.string({ unit: mostlyPrintable, minLength: 1, maxLength: 40 }),
      severity: fc.constantFrom("INFO", "WARN", "CRITICAL"),
      eventDetailJson: jsonishDetail,
    })
    .map((fields) => create(AgentEventSchema, fields));
}

function show(ev: AgentEvent): string {
  return JSON.stringify(
    { ...ev, eventDetailJson: Buffer.from(ev.eventDetailJson).toString("hex").slice(0, 400) },
    (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v),
  );
}

describe("validateEvent on arbitrary AgentEvents", () => {
  it("never throws, and accepts an event exactly when every rule holds", () => {
    let accepted = 0;
    fc.assert(
      fc.property(agentEvent, (ev) => {
        const verdict = validateEvent(ev, nowUs, limits);
        const broken = brokenRules(ev, nowUs, limits);
        const why = `${show(ev)} → ${verdict.ok ? "ok" : verdict.error}; broken: ${[...broken]}`;
        expect(verdict.ok, why).toBe(broken.size === 0);
        if (verdict.ok) accepted++;
      }),
      { numRuns: 3_000 },
    );
    // The generators are useless if (almost) nothing passes, or everything does.
    expect(accepted).toBeGreaterThan(100);
    expect(accepted).toBeLessThan(2_900);
  });

  it("refuses with a non-empty error that names a field breaking its rule", () => {
    fc.assert(
      fc.property(agentEvent, (ev) => {
        const verdict = validateEvent(ev, nowUs, limits);
        if (verdict.ok) return;
        expect(typeof verdict.error).toBe("string");
        expect(verdict.error.trim()).not.toBe("");
        const named = verdict.error.split(" ")[0] as Field;
        expect(brokenRules(ev, nowUs, limits), verdict.error).toContain(named);
      }),
      { numRuns: 2_000 },
    );
  });

  it("gives accepted events lower-case UUIDs, the fields as sent, and detail that is JSON text", () => {
    fc.assert(
      fc.property(agentEvent, (ev) => {
        const verdict = validateEvent(ev, nowUs, limits);
        if (!verdict.ok) return;
        const out: ValidEvent = verdict.event;
        expect(out.alertId).toMatch(lowerUuid);
        expect(out.hostId).toMatch(lowerUuid);
        expect(out.alertId).toBe(ev.alertId.toLowerCase());
        expect(out.hostId).toBe(ev.hostId.toLowerCase());
        expect(out).toMatchObject({
          timestampUs: ev.timestampUs,
          tripwireType: ev.tripwireType,
          ruleName: ev.ruleName,
          severity: ev.severity,
        });
        expect(() => JSON.parse(out.eventDetailJson)).not.toThrow();
        const sent = ev.eventDetailJson.length === 0 ? "{}" : utf8Text(ev.eventDetailJson);
        expect(out.eventDetailJson).toBe(sent);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe.each(backends)("accepted events on the real store [%s]", (kind) => {
  let database: TestDatabase;
  let store: AlertStore;
  let hostId: string;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    store = createAlertStore(database);
    ({ hostId } = await store.upsertHost({
      hostname: "fuzz-host",
      platform: "linux",
      agentVersion: "fuzz",
    }));
  });
  afterAll(async () => {
    await database?.dispose();
  });

  /** Inserts `alerts` as one batch; on failure, names the alert the database refused. */
  async function insertOrExplain(alerts: readonly NewAlert[]): Promise<void> {
    try {
      await store.insertAlerts(alerts);
    } catch (err) {
      for (const alert of alerts) {
        try {
          await store.insertAlerts([alert]);
        } catch (one) {
          throw new Error(
            `the database refused an accepted event (${(one as Error).message}): ` +
              `rule_name ${JSON.stringify(alert.ruleName)}, ` +
              `event_detail_json ${JSON.stringify(alert.eventDetailJson.slice(0, 300))}`,
          );
        }
      }
      throw err;
    }
  }

  it("stores every batch of accepted events without a data error", async () => {
    const now = BigInt(Date.now()) * 1000n;
    let stored = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(freeFormEvent(now), { minLength: 1, maxLength: 12 }),
        async (evs) => {
          const alerts: NewAlert[] = [];
          for (const ev of evs) {
            const verdict = validateEvent(ev, now, limits);
            if (!verdict.ok) continue;
            // The host check is separate from validation; every alert goes to the one host.
            alerts.push({ ...verdict.event, hostId, hostname: "fuzz-host", receivedAtUs: now });
          }
          if (alerts.length === 0) return;
          await insertOrExplain(alerts);
          const ids = alerts.map((a) => a.alertId);
          const rows = await database.rows<{ n: number }>(
            sql`select count(*)::int as n from alerts where alert_id = any(${sql.param(ids)}::uuid[])`,
          );
          expect(rows[0]?.n).toBe(new Set(ids).size);
          stored += alerts.length;
        },
      ),
      { numRuns: 60 },
    );
    expect(stored).toBeGreaterThan(60);
  });
});
