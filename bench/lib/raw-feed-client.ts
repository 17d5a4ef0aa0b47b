/**
 * A minimal WebSocket client for the fan-out benchmark's bulk subscribers: it does the
 * HTTP upgrade itself and splits the byte stream into frames, without inflating
 * compressed frames or decoding text. It is a real peer (it reads every byte the server
 * sends and answers pings), but it costs the machine as little as a client can, so the
 * benchmark measures the server's fan-out rather than a thousand JavaScript decoders
 * sharing its two cores. A browser inflates its own frames on its own machine.
 */
import { randomBytes } from "node:crypto";
import * as net from "node:net";

/** One complete message: its opcode, whether it is compressed (RSV1), and its payload. */
export type RawMessageHandler = (opcode: number, compressed: boolean, payload: Buffer) => void;

/** What to offer in the handshake. */
export interface RawConnectOptions {
  /** ws://host:port/path?query */
  readonly url: string;
  readonly protocols: readonly string[];
  /** Offer permessage-deflate (without context takeover), as browsers do. */
  readonly deflate: boolean;
  readonly onMessage: RawMessageHandler;
  /** Called once when the connection ends, with the close code received (1006: none). */
  readonly onClose: (code: number) => void;
}

/** An open raw connection. */
export interface RawFeedClient {
  /** The Sec-WebSocket-Extensions the server accepted ("" for none). */
  readonly extensions: string;
  readonly open: () => boolean;
  /** Stops reading (the kernel buffers fill and the server sees a client that hangs). */
  pause(): void;
  resume(): void;
  terminate(): void;
}

const opPing = 0x9;
const opClose = 0x8;
const opPong = 0xa;

/** Connects and resolves after the 101 answer; rejects on a refusal or an error. */
export function connectRaw(options: RawConnectOptions): Promise<RawFeedClient> {
  const url = new URL(options.url);
  const socket = net.connect(Number(url.port), url.hostname);
  socket.setNoDelay(true);
  const key = randomBytes(16).toString("base64");
  const lines = [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
  ];
  if (options.protocols.length > 0) {
    lines.push(`Sec-WebSocket-Protocol: ${options.protocols.join(", ")}`);
  }
  if (options.deflate) {
    lines.push(
      "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover",
    );
  }
  socket.write(`${lines.join("\r\n")}\r\n\r\n`);

  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    let open = false;
    let closed = false;
    let closeCode = 1006;
    const frames = new FrameSplitter((opcode, compressed, payload) => {
      if (opcode === opPing) {
        socket.write(maskedFrame(opPong, payload));
      } else if (opcode === opClose) {
        closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        socket.end(maskedFrame(opClose, payload.subarray(0, 2)));
      } else {
        options.onMessage(opcode, compressed, payload);
      }
    });
    const onHead = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) return;
      const text = head.subarray(0, end).toString("latin1");
      if (!text.startsWith("HTTP/1.1 101")) {
        socket.destroy();
        reject(new Error(`refused: ${text.split("\r\n")[0]}`));
        return;
      }
      const extensions = /\r\nsec-websocket-extensions: *([^\r]*)/i.exec(text)?.[1] ?? "";
      socket.off("data", onHead);
      socket.on("data", (data: Buffer) => frames.push(data));
      open = true;
      const rest = head.subarray(end + 4);
      if (rest.length > 0) frames.push(rest);
      resolve({
        extensions,
        open: () => open,
        pause: () => socket.pause(),
        resume: () => socket.resume(),
        terminate: () => socket.destroy(),
      });
    };
    socket.on("data", onHead);
    socket.on("error", (err) => {
      if (!open) reject(err);
    });
    socket.on("close", () => {
      open = false;
      if (closed) return;
      closed = true;
      options.onClose(closeCode);
      reject(new Error(`closed with ${closeCode} during the handshake`));
    });
  });
}

/** A client frame (clients must mask), for pongs and the close answer. */
function maskedFrame(opcode: number, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(6 + payload.length);
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | payload.length; // control payloads are < 126 bytes
  randomBytes(4).copy(frame, 2);
  for (let i = 0; i < payload.length; i++) {
    frame[6 + i] = (payload[i] as number) ^ (frame[2 + (i % 4)] as number);
  }
  return frame;
}

/**
 * Splits the server's byte stream into messages. Server frames are unmasked; the feed
 * never fragments its messages, but continuation frames are joined all the same.
 */
class FrameSplitter {
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #fragments: Buffer[] = [];
  #fragmentOpcode = 0;
  #fragmentCompressed = false;

  constructor(private readonly onMessage: RawMessageHandler) {}

  push(data: Buffer): void {
    this.#pending.push(data);
    this.#pendingBytes += data.length;
    for (;;) {
      const buf = this.#peek(10);
      if (buf.length < 2) return;
      const b0 = buf[0] as number;
      const b1 = buf[1] as number;
      let length = b1 & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buf.length < 4) return;
        length = buf.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buf.length < 10) return;
        length = Number(buf.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.#pendingBytes < offset + length) return;
      const frame = this.#take(offset + length).subarray(offset);
      const fin = (b0 & 0x80) !== 0;
      const compressed = (b0 & 0x40) !== 0;
      const opcode = b0 & 0x0f;
      if (opcode >= 0x8) {
        this.onMessage(opcode, false, frame);
      } else if (fin && opcode !== 0) {
        this.onMessage(opcode, compressed, frame);
      } else {
        if (opcode !== 0) {
          this.#fragmentOpcode = opcode;
          this.#fragmentCompressed = compressed;
        }
        this.#fragments.push(frame);
        if (fin) {
          const whole = Buffer.concat(this.#fragments);
          this.#fragments = [];
          this.onMessage(this.#fragmentOpcode, this.#fragmentCompressed, whole);
        }
      }
    }
  }

  /** Up to `n` bytes from the front, without consuming them. */
  #peek(n: number): Buffer {
    const first = this.#pending[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length >= n || this.#pending.length === 1) return first;
    return Buffer.concat(this.#pending, Math.min(n, this.#pendingBytes));
  }

  /** Consumes exactly `n` bytes from the front. */
  #take(n: number): Buffer {
    this.#pendingBytes -= n;
    const first = this.#pending[0] as Buffer;
    if (first.length >= n) {
      if (first.length === n) this.#pending.shift();
      else this.#pending[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#pending[0] as Buffer;
      const want = n - filled;
      if (chunk.length <= want) {
        chunk.copy(out, filled);
        filled += chunk.length;
        this.#pending.shift();
      } else {
        chunk.copy(out, filled, 0, want);
        this.#pending[0] = chunk.subarray(want);
        filled += want;
      }
    }
    return out;
  }
}
