/**
 * WebSocket frames built once per batch and written as they are to every subscriber's
 * socket, instead of one `ws.send` per subscriber (and, in version 0, per alert).
 *
 * permessage-deflate (RFC 7692) is done once per batch instead of once per socket:
 *
 * ws compresses each message separately for each socket, so a batch sent to a thousand
 * browsers would be compressed a thousand times. Instead the feed negotiates the
 * extension without context takeover, compresses a batch's `alerts` message once, and
 * writes the same complete frame to every socket that accepted the extension. A batch of
 * JSON alerts compresses about 9× at level 6, so each socket costs a ninth of the bytes.
 */
import { constants, deflateRawSync } from "node:zlib";

/**
 * Compressing happens once per batch, whatever the number of sockets, while every byte
 * saved is saved once per socket. On the agent simulator's alerts in 500-alert batches,
 * level 6 sends 47 bytes per alert for 2.5 µs of CPU per alert, level 1 58 bytes for
 * 1.2 µs; levels above 6 save under 3% more.
 */
const deflateLevel = 6;

/** What the feed offers in the handshake: no context kept between messages. */
export const perMessageDeflateOptions = {
  serverNoContextTakeover: true,
  clientNoContextTakeover: true,
  // ws must never compress on its own: its compression is asynchronous and queues
  // sends, which would reorder them with the frames written here. Every ws.send of the
  // feed passes `compress: false` as well.
  threshold: Number.MAX_SAFE_INTEGER,
} as const;

/**
 * Whether frames compressed with a full (15-bit) window may go to a socket whose
 * negotiated extensions are `extensions` (ws's `WebSocket.extensions` string). A client
 * that asked for a smaller server window gets uncompressed frames, which the extension
 * always allows.
 */
export function acceptsSharedDeflate(extensions: string): boolean {
  if (!extensions.includes("permessage-deflate")) return false;
  const bits = /server_max_window_bits=(\d+)/.exec(extensions);
  return bits === null || Number(bits[1]) >= 15;
}

/**
 * One complete, unmasked server-to-client text frame carrying `payload` compressed
 * (RSV1 set): FIN + RSV1 + opcode 1, the payload length, then the deflate data without
 * its final empty block's 00 00 ff ff tail (RFC 7692 §7.2.1).
 */
export function deflatedTextFrame(payload: Buffer): Buffer {
  const compressed = deflateRawSync(payload, {
    level: deflateLevel,
    finishFlush: constants.Z_SYNC_FLUSH,
  });
  const body = compressed.subarray(0, compressed.length - 4);
  const frame = Buffer.allocUnsafe(headerLength(body.length) + body.length);
  const at = writeHeader(frame, 0, 0xc1, body.length); // FIN, RSV1 (compressed), text
  body.copy(frame, at);
  return frame;
}

/**
 * One buffer holding a final, uncompressed, unmasked text frame for each payload, in
 * order: version 0's one message per alert, written to a socket in one write.
 */
export function textFrames(payloads: readonly Buffer[]): Buffer {
  let size = 0;
  for (const p of payloads) size += headerLength(p.length) + p.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of payloads) {
    at = writeHeader(out, at, 0x81, p.length); // FIN, text
    at += p.copy(out, at);
  }
  return out;
}

function headerLength(n: number): number {
  return n < 126 ? 2 : n < 65_536 ? 4 : 10;
}

/** Writes a server frame header (no mask) at `at`; returns where the payload starts. */
function writeHeader(buf: Buffer, at: number, first: number, n: number): number {
  buf[at] = first;
  if (n < 126) {
    buf[at + 1] = n;
    return at + 2;
  }
  if (n < 65_536) {
    buf[at + 1] = 126;
    buf.writeUInt16BE(n, at + 2);
    return at + 4;
  }
  buf[at + 1] = 127;
  buf.writeBigUInt64BE(BigInt(n), at + 2);
  return at + 10;
}
