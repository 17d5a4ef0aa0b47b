/**
 * The two messages of the agents' hot path, coded by hand: AgentEvent in, ServerCommand
 * (ACK) out. protobuf-es decodes and encodes by reflection over the schema, which cost
 * more per alert than validating and storing it (docs/performance.md, "Ingest hot
 * path"). Only the common, well-formed case is handled here; anything else (an unknown
 * field, an unexpected wire type, a string that is not plain UTF-8) goes to protobuf-es,
 * so the result, or the error, is always exactly what `fromBinary` gives.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type AgentEvent,
  AgentEventSchema,
  type ServerCommand,
  ServerCommandSchema,
} from "../gen/alert/alert_pb.js";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const emptyBytes: Uint8Array = new Uint8Array(0);
/** Returned by the fast decoder when it leaves the message to protobuf-es. */
const notHandled = Symbol("not handled");

/** Decodes one AgentEvent; the same result, or the same error, as `fromBinary`. */
export function decodeAgentEvent(bytes: Uint8Array): AgentEvent {
  const fast = decodeCommonCase(bytes);
  return fast === notHandled ? fromBinary(AgentEventSchema, bytes) : fast;
}

function decodeCommonCase(bytes: Uint8Array): AgentEvent | typeof notHandled {
  // Request chunks are Buffers already; a plain Uint8Array gets a Buffer view, no copy.
  const b = Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let alertId = "";
  let hostId = "";
  let timestampUs = 0n;
  let tripwireType = "";
  let ruleName = "";
  let eventDetailJson: Uint8Array = emptyBytes;
  let severity = "";
  const end = b.length;
  let i = 0;
  while (i < end) {
    // Fields 1 to 7 have one-byte tags: (field << 3) | wire type.
    const tag = b[i++] as number;
    if (tag === 0x18) {
      // timestamp_us, int64 as a varint: exact in a double up to 2^53, else BigInt.
      let value = 0;
      let scale = 1;
      const start = i;
      for (;;) {
        if (i >= end || i - start >= 10) return notHandled;
        const byte = b[i++] as number;
        value += (byte & 0x7f) * scale;
        scale *= 128;
        if (byte < 0x80) break;
      }
      // Beyond 2^53 (or negative: ten bytes) is no timestamp an agent sends; leave it.
      if (value > Number.MAX_SAFE_INTEGER) return notHandled;
      timestampUs = BigInt(value);
      continue;
    }
    if ((tag & 7) !== 2 || tag < 0x0a || tag > 0x3a || tag === 0x1a) return notHandled;
    // A length-delimited field: the length, then that many bytes.
    let len = 0;
    let scale = 1;
    for (let n = 0; ; n++) {
      if (i >= end || n >= 5) return notHandled;
      const byte = b[i++] as number;
      len += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) break;
    }
    const stop = i + len;
    if (stop > end) return notHandled;
    if (tag === 0x32) {
      // A view, as protobuf-es gives: the same class as the input.
      eventDetailJson = bytes.subarray(i, stop);
    } else {
      const s = decodeString(b, i, stop);
      if (s === undefined) return notHandled;
      switch (tag) {
        case 0x0a:
          alertId = s;
          break;
        case 0x12:
          hostId = s;
          break;
        case 0x22:
          tripwireType = s;
          break;
        case 0x2a:
          ruleName = s;
          break;
        case 0x3a:
          severity = s;
          break;
      }
    }
    i = stop;
  }
  return {
    $typeName: "alert.AgentEvent",
    alertId,
    hostId,
    timestampUs,
    tripwireType,
    ruleName,
    eventDetailJson,
    severity,
  };
}

/** The UTF-8 text of b[start, stop), or undefined when it is not valid UTF-8. */
function decodeString(b: Buffer, start: number, stop: number): string | undefined {
  // Agents send ASCII ids, types and rule names: one byte per character, copied as
  // latin1 into one flat string, with no decoder.
  for (let i = start; i < stop; i++) {
    if ((b[i] as number) >= 0x80) {
      try {
        return strictUtf8.decode(b.subarray(start, stop));
      } catch {
        return undefined;
      }
    }
  }
  return b.toString("latin1", start, stop);
}

// An ACK's gRPC envelope: flags, length, then ServerCommand { type = "ACK" (field 1),
// payload = {"alert_id":"<36 characters>"} (field 2) }. Only the id changes.
const ackPayloadPrefix = '{"alert_id":"';
const ackIdLength = 36;
const ackPayloadLength = ackPayloadPrefix.length + ackIdLength + 2;
const ackMessageLength = 5 + 2 + ackPayloadLength;
const ackEnvelope = Buffer.alloc(5 + ackMessageLength);
ackEnvelope.writeUInt32BE(ackMessageLength, 1);
ackEnvelope.set([0x0a, 3, 0x41, 0x43, 0x4b, 0x12, ackPayloadLength], 5);
ackEnvelope.write(ackPayloadPrefix, 12, "latin1");
ackEnvelope.write('"}', 12 + ackPayloadPrefix.length + ackIdLength, "latin1");
const ackIdOffset = 12 + ackPayloadPrefix.length;
/** What a UUID as the agent may have sent it looks like: nothing JSON would escape. */
const plainId = /^[0-9A-Fa-f-]{36}$/;

const encoder = new TextEncoder();

/** Builds the ACK for `alertId` (as the agent sent it, so it can match its queue). */
export function ackCommand(alertId: string): ServerCommand {
  // What create() returns, without its walk over the schema.
  return {
    $typeName: "alert.ServerCommand",
    type: "ACK",
    payload: encoder.encode(`{"alert_id":${JSON.stringify(alertId)}}`),
  };
}

/** Builds the ERROR for `alertId` with a reason the operator can act on. */
export function errorCommand(alertId: string, error: string): ServerCommand {
  return {
    $typeName: "alert.ServerCommand",
    type: "ERROR",
    payload: encoder.encode(JSON.stringify({ alert_id: alertId, error })),
  };
}

/**
 * The gRPC envelopes of many replies, in order, as one buffer: one write and one
 * HTTP/2 DATA frame (or a few) for all of them, still one ServerCommand per event.
 * `errors[i]` undefined means an ACK of `alertIds[i]`. Throws when one message would
 * be larger than `writeMaxBytes`, with Connect's error.
 */
export function encodeReplies(
  alertIds: readonly string[],
  errors: readonly (string | undefined)[],
  writeMaxBytes: number,
): Buffer {
  // ACKs (nearly all replies) are copied from the template; the rest go through protobuf-es.
  let others: (Uint8Array | undefined)[] | undefined;
  let size = 0;
  for (let i = 0; i < alertIds.length; i++) {
    const id = alertIds[i] as string;
    const error = errors[i];
    if (error === undefined && id.length === ackIdLength && plainId.test(id)) {
      size += ackEnvelope.length;
      continue;
    }
    const message = toBinary(
      ServerCommandSchema,
      error === undefined ? ackCommand(id) : errorCommand(id, error),
    );
    if (message.length > writeMaxBytes) {
      throw new ConnectError(
        `message size ${message.length} is larger than configured writeMaxBytes ${writeMaxBytes}`,
        Code.ResourceExhausted,
      );
    }
    others ??= new Array<Uint8Array | undefined>(alertIds.length);
    others[i] = message;
    size += 5 + message.length;
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < alertIds.length; i++) {
    const message = others?.[i];
    if (message === undefined) {
      ackEnvelope.copy(out, at);
      out.write(alertIds[i] as string, at + ackIdOffset, ackIdLength, "latin1");
      at += ackEnvelope.length;
    } else {
      out[at] = 0;
      out.writeUInt32BE(message.length, at + 1);
      out.set(message, at + 5);
      at += 5 + message.length;
    }
  }
  return out;
}
