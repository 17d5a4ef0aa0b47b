/**
 * permessage-deflate (RFC 7692) done once per batch instead of once per socket.
 *
 * ws compresses each message separately for each socket, so a batch sent to a thousand
 * browsers would be compressed a thousand times. Instead the feed negotiates the
 * extension without context takeover, compresses a batch's `alerts` message once, and
 * writes the same complete frame to every socket that accepted the extension. JSON
 * alerts compress about 7× at level 1, so each socket costs a seventh of the bytes.
 */
import { constants, deflateRawSync } from "node:zlib";

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
    level: 1,
    finishFlush: constants.Z_SYNC_FLUSH,
  });
  const body = compressed.subarray(0, compressed.length - 4);
  const n = body.length;
  const headerLength = n < 126 ? 2 : n < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + n);
  frame[0] = 0xc1; // FIN, RSV1 (compressed), opcode 1 (text)
  if (n < 126) {
    frame[1] = n;
  } else if (n < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  body.copy(frame, headerLength);
  return frame;
}
