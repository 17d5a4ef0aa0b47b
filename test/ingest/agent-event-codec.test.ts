/**
 * The hand-written codec of the agents' hot path agrees with protobuf-es: every byte
 * string decodes to the same AgentEvent or fails with the same error, and a batch of
 * replies is byte for byte the gRPC envelopes Connect would have written one by one.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AgentEventSchema, ServerCommandSchema } from "../../src/gen/alert/alert_pb.js";
import {
  ackCommand,
  decodeAgentEvent,
  encodeReplies,
  errorCommand,
} from "../../src/ingest/agent-event-codec.js";

function outcome(decode: () => unknown): unknown {
  try {
    return { ok: decode() };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

const text = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.uuid());
const event = fc.record({
  alertId: text,
  hostId: text,
  timestampUs: fc.oneof(
    fc.bigInt({ min: 0n, max: 2n ** 53n }),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  ),
  tripwireType: text,
  ruleName: text,
  eventDetailJson: fc.uint8Array({ maxLength: 64 }),
  severity: text,
});

describe("decodeAgentEvent", () => {
  it("gives what fromBinary gives for any encoded AgentEvent", () => {
    fc.assert(
      fc.property(event, (init) => {
        const bytes = toBinary(AgentEventSchema, create(AgentEventSchema, init));
        expect(decodeAgentEvent(bytes)).toEqual(fromBinary(AgentEventSchema, bytes));
      }),
      { numRuns: 2000 },
    );
  });

  it("gives what fromBinary gives, value or error, for arbitrary and damaged bytes", () => {
    const damaged = fc
      .tuple(event, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat())
      .map(([init, at, byte, cut]) => {
        const bytes = toBinary(AgentEventSchema, create(AgentEventSchema, init));
        if (bytes.length > 0) bytes[at % bytes.length] = byte;
        return bytes.subarray(0, bytes.length - (cut % 4));
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }), damaged), (bytes) => {
        expect(outcome(() => decodeAgentEvent(bytes))).toEqual(
          outcome(() => fromBinary(AgentEventSchema, bytes)),
        );
      }),
      { numRuns: 5000 },
    );
  });

  it("gives what fromBinary gives for known fields with another wire type, and unknown fields", () => {
    const cases = [
      [0x1a, 2, 0x31, 0x32], // timestamp_us as length-delimited
      [0x08, 5], // alert_id as a varint
      [0x0d, 1, 2, 3, 4], // alert_id as fixed32
      [0x42, 1, 0x41], // field 8, unknown to this schema
      [0x0a, 2, 0x41, 0x42, 0x90, 0x01, 7], // unknown field 18 after alert_id
      [0x0a, 2, 0xc3, 0x28], // alert_id that is not UTF-8
      [0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // timestamp_us -1
    ];
    for (const c of cases) {
      const bytes = new Uint8Array(c);
      expect(outcome(() => decodeAgentEvent(bytes))).toEqual(
        outcome(() => fromBinary(AgentEventSchema, bytes)),
      );
    }
  });

  it("keeps concatenated fields last-one-wins, as protobuf merges a repeated scalar", () => {
    const a = toBinary(
      AgentEventSchema,
      create(AgentEventSchema, { alertId: "first", ruleName: "r" }),
    );
    const b = toBinary(AgentEventSchema, create(AgentEventSchema, { alertId: "second" }));
    const both = new Uint8Array([...a, ...b]);
    expect(decodeAgentEvent(both)).toEqual(fromBinary(AgentEventSchema, both));
    expect(decodeAgentEvent(both).alertId).toBe("second");
  });
});

describe("encodeReplies", () => {
  const connectWouldWrite = (alertIds: string[], errors: (string | undefined)[]): Uint8Array =>
    Buffer.concat(
      alertIds.map((id, i) => {
        const error = errors[i];
        const cmd = error === undefined ? ackCommand(id) : errorCommand(id, error);
        return encodeEnvelope(0, toBinary(ServerCommandSchema, cmd));
      }),
    );

  it("writes the envelopes Connect would write, one per reply, in order", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.oneof(
              fc.uuid(),
              fc.uuid().map((u) => u.toUpperCase()),
              fc.string(),
              fc.string({ minLength: 36, maxLength: 36 }),
            ),
            fc.option(fc.string(), { nil: undefined }),
          ),
          { maxLength: 20 },
        ),
        (replies) => {
          const ids = replies.map(([id]) => id);
          const errors = replies.map(([, error]) => error);
          expect(new Uint8Array(encodeReplies(ids, errors, 1 << 20))).toEqual(
            new Uint8Array(connectWouldWrite(ids, errors)),
          );
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("refuses a reply larger than writeMaxBytes with RESOURCE_EXHAUSTED", () => {
    const attempt = () => encodeReplies(["x"], ["e".repeat(200)], 100);
    expect(attempt).toThrow(ConnectError);
    expect(attempt).toThrow(/larger than configured writeMaxBytes 100/);
    try {
      attempt();
    } catch (err) {
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    }
  });
});
