/**
 * Property-based tests of raw bytes on GET /ws of a real server: arbitrary upgrade
 * requests over raw TCP, arbitrary WebSocket frames after a valid upgrade (masked or
 * not, bad opcodes, reserved bits, oversized lengths, invalid UTF-8, fragmented control
 * frames, bad close frames), and arbitrary messages on a version-1 connection. An
 * independent model of RFC 6455 and docs/websocket.md predicts each outcome: the close
 * code (1002, 1007, 1009 or the echo of the client's close) and the `filters`/`error`
 * reply to every message. Meanwhile a well-behaved /ws client must receive every alert
 * an agent sends.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import * as net from "node:net";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { decodeReply, makeEvent, type Reply, register } from "../support/agent.js";
import { eventQueue } from "../support/agent-stream.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { connectFeed, connectLive, type FeedClient } from "../support/ws-client.js";

/** Small, so that messages over it are cheap to send. */
const maxMessageBytes = 1_024;
/** How long the server may take to answer before it counts as a hang. */
const answerWithinMs = 10_000;
/**
 * How long a connection may stay open after the client has sent its bytes and ended its
 * side: below the server's 10 s preface timeout, so that only closing on purpose counts.
 */
const closeWithinMs = 5_000;
const websocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// ---------------------------------------------------------------------------------------
// The model: RFC 6455 as a server must apply it, and the version-1 message rules
// ---------------------------------------------------------------------------------------

/** One frame as the test sends it. */
interface ClientFrame {
  readonly fin: boolean;
  /** RSV1..RSV3 as three bits (RSV1 = 4). No extension is negotiated, so any is wrong. */
  readonly rsv: number;
  readonly opcode: number;
  readonly masked: boolean;
  readonly payload: Uint8Array;
  /** A payload length to declare instead of the real one (only ever a huge one). */
  readonly declared?: bigint;
}

/** What the server must do with a sequence of frames. */
interface Expected {
  /** Replies to client messages (version 1), in order. */
  readonly replies: Array<"filters" | "error">;
  /** The code of the server's close frame; "empty" for one without a code; "open" if none. */
  readonly close: number | "empty" | "open";
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** docs/websocket.md: `set_filters` with optional (or null) valid filters; else `error`. */
function replyTo(text: string): "filters" | "error" {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return "error";
  }
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) return "error";
  const m = msg as Record<string, unknown>;
  if (m.type !== "set_filters") return "error";
  const absent = (v: unknown): boolean => v === undefined || v === null;
  const listOf = (v: unknown, ok: (x: unknown) => boolean): boolean =>
    absent(v) || (Array.isArray(v) && v.every(ok));
  const severity = m.min_severity;
  if (!absent(severity) && !["INFO", "WARN", "CRITICAL"].includes(severity as string)) {
    return "error";
  }
  if (!listOf(m.host_ids, (x) => typeof x === "string" && uuidPattern.test(x))) return "error";
  if (!listOf(m.tripwire_types, (x) => ["FILE", "NETWORK", "PROCESS"].includes(x as string))) {
    return "error";
  }
  return "filters";
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** RFC 6455 §7.4: the close codes an endpoint may send. */
function isSendableCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999)
  );
}

/** The outcome of `frames` on a fresh connection of `version`, by RFC 6455 §5 and §7. */
function expectedOutcome(frames: readonly ClientFrame[], version: 0 | 1): Expected {
  const replies: Array<"filters" | "error"> = [];
  const end = (close: Expected["close"]): Expected => ({ replies, close });
  let inProgress: 1 | 2 | undefined; // opcode of a fragmented message being received
  let parts: Uint8Array[] = [];
  let total = 0n;
  for (const f of frames) {
    const declared = f.declared ?? BigInt(f.payload.length);
    const control = f.opcode >= 8;
    // §5.2: no extension was negotiated, so every reserved bit must be 0.
    if (f.rsv !== 0) return end(1002);
    if (f.opcode === 0) {
      if (inProgress === undefined) return end(1002); // a continuation of nothing
    } else if (f.opcode === 1 || f.opcode === 2) {
      if (inProgress !== undefined) return end(1002); // a new message inside a fragmented one
    } else if (f.opcode >= 8 && f.opcode <= 10) {
      // §5.5: control frames are not fragmented and carry at most 125 bytes.
      if (!f.fin || declared > 125n) return end(1002);
      if (f.opcode === 8 && declared === 1n) return end(1002);
    } else {
      return end(1002); // a reserved opcode
    }
    if (!f.masked) return end(1002); // §5.1: a client masks every frame
    // §10.4: a message larger than the server takes is refused with 1009.
    if (declared > 2n ** 53n - 1n) return end(1009);
    if (!control) {
      total += declared;
      if (total > BigInt(maxMessageBytes)) return end(1009);
    }
    if (f.opcode === 8) {
      if (f.payload.length === 0) return end("empty");
      const code = (f.payload[0] as number) * 256 + (f.payload[1] as number);
      if (!isSendableCloseCode(code)) return end(1002);
      if (!isUtf8(f.payload.subarray(2))) return end(1007);
      return end(code); // the server echoes the client's close
    }
    if (control) continue; // ping and pong
    const opcode = f.opcode === 0 ? (inProgress as 1 | 2) : (f.opcode as 1 | 2);
    parts.push(f.payload);
    if (!f.fin) {
      inProgress = opcode;
      continue;
    }
    const message = Buffer.concat(parts);
    inProgress = undefined;
    parts = [];
    total = 0n;
    if (opcode === 1 && !isUtf8(message)) return end(1007);
    if (version === 1) replies.push(opcode === 2 ? "error" : replyTo(message.toString("utf8")));
  }
  return end("open");
}

// ---------------------------------------------------------------------------------------
// A raw client
// ---------------------------------------------------------------------------------------

function encodeFrame(f: ClientFrame): Buffer {
  const len = f.declared ?? BigInt(f.payload.length);
  const first = (f.fin ? 0x80 : 0) | (f.rsv << 4) | f.opcode;
  const maskBit = f.masked ? 0x80 : 0;
  let head: Buffer;
  if (len < 126n) {
    head = Buffer.from([first, maskBit | Number(len)]);
  } else if (len < 65_536n) {
    head = Buffer.alloc(4);
    head.writeUInt16BE(Number(len), 2);
    head[1] = maskBit | 126;
  } else {
    head = Buffer.alloc(10);
    head.writeBigUInt64BE(len, 2);
    head[1] = maskBit | 127;
  }
  head[0] = first;
  if (!f.masked) return Buffer.concat([head, f.payload]);
  const key = randomBytes(4);
  const body = Buffer.from(f.payload);
  for (let i = 0; i < body.length; i++) body[i] = (body[i] as number) ^ (key[i % 4] as number);
  return Buffer.concat([head, key, body]);
}

/** A frame from the server. */
interface ServerFrame {
  readonly opcode: number;
  readonly payload: Buffer;
}

/** Reads whole server frames off `buf`; returns them and the rest. */
function readFrames(buf: Buffer): { frames: ServerFrame[]; rest: Buffer } {
  const frames: ServerFrame[] = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b1 = buf[at + 1] as number;
    if ((b1 & 0x80) !== 0) throw new Error("the server sent a masked frame");
    let len = b1 & 0x7f;
    let off = at + 2;
    if (len === 126) {
      if (buf.length - at < 4) break;
      len = buf.readUInt16BE(at + 2);
      off = at + 4;
    } else if (len === 127) {
      if (buf.length - at < 10) break;
      len = Number(buf.readBigUInt64BE(at + 2));
      off = at + 10;
    }
    if (buf.length < off + len) break;
    frames.push({ opcode: (buf[at] as number) & 0x0f, payload: buf.subarray(off, off + len) });
    at = off + len;
  }
  return { frames, rest: buf.subarray(at) };
}

/** A WebSocket connection over a raw TCP socket, after a valid upgrade. */
class RawWebSocket {
  readonly frames: ServerFrame[] = [];
  /** The HTTP status line of the answer to the upgrade request. */
  status: string | undefined;
  #buffer: Buffer = Buffer.alloc(0);

  private constructor(readonly socket: net.Socket) {
    // One listener for the HTTP head and the frames after it, so that no byte is lost.
    socket.on("data", (chunk: Buffer) => {
      let buf = Buffer.concat([this.#buffer, chunk]);
      if (this.status === undefined) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) {
          this.#buffer = buf;
          return;
        }
        this.status = buf.subarray(0, end).toString("latin1").split("\r\n")[0] ?? "";
        buf = buf.subarray(end + 4);
      }
      const { frames, rest } = readFrames(buf);
      this.#buffer = rest;
      this.frames.push(...frames);
    });
  }

  /** Upgrades a new connection to /ws, speaking `version`. */
  static async open(port: number, version: 0 | 1): Promise<RawWebSocket> {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => {});
    const ws = new RawWebSocket(socket);
    const key = randomBytes(16).toString("base64");
    socket.write(
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        (version === 1 ? "Sec-WebSocket-Protocol: tripwire.v1\r\n" : "") +
        "\r\n",
    );
    await ws.until(() => ws.status !== undefined, "answer to the upgrade");
    if (ws.status !== "HTTP/1.1 101 Switching Protocols") {
      socket.destroy();
      throw new Error(`upgrade refused: ${ws.status}`);
    }
    // Version 1 greets first; waiting for it means the route is serving this connection.
    if (version === 1) await ws.until(() => ws.texts().some((t) => t.type === "hello"), "hello");
    return ws;
  }

  /** The JSON text messages received. */
  texts(): Array<{ type: string; [k: string]: unknown }> {
    return this.frames
      .filter((f) => f.opcode === 1)
      .map((f) => JSON.parse(f.payload.toString("utf8")) as { type: string });
  }

  /** The close frame received, if any. */
  closeFrame(): ServerFrame | undefined {
    return this.frames.find((f) => f.opcode === 8);
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Resolves once `test()` holds, checked on every chunk; rejects on a hang. */
  until(test: () => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!test()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${what} within ${answerWithinMs} ms`));
      }, answerWithinMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.socket.off("data", onData);
        this.socket.off("close", check);
      };
      // Registered after this class's own data listener, so the frames are parsed first.
      const onData = check;
      this.socket.on("data", onData);
      this.socket.on("close", check);
      check();
    });
  }
}

/** Sends raw bytes, half-closes, and returns what the server wrote until it closed. */
function exchange(port: number, bytes: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open for ${closeWithinMs} ms`));
    }, closeWithinMs);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    socket.end(bytes);
  });
}

// ---------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const utf8 = (s: string): Uint8Array => encoder.encode(s);

const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null | undefined> =>
  fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, fc.constant(null), {
    weight: 3,
    arbitrary: arb,
  });
const mixedCaseUuid = fc
  .tuple(fc.uuid(), fc.boolean())
  .map(([id, upper]) => (upper ? id.toUpperCase() : id));
/** `set_filters` messages, valid or nearly so. */
const setFilters = fc
  .record(
    {
      type: fc.oneof(
        { weight: 5, arbitrary: fc.constant("set_filters") },
        fc.constantFrom("SET_FILTERS", "filters", "", 7),
      ),
      min_severity: maybe(
        fc.oneof(fc.constantFrom("INFO", "WARN", "CRITICAL"), fc.constantFrom("info", "", 2, true)),
      ),
      host_ids: maybe(
        fc.oneof(
          { weight: 3, arbitrary: fc.array(mixedCaseUuid, { maxLength: 3 }) },
          fc.array(fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.constant(null)), {
            minLength: 1,
            maxLength: 2,
          }),
          fc.constantFrom("a-host", 5, {}),
        ),
      ),
      tripwire_types: maybe(
        fc.oneof(
          { weight: 3, arbitrary: fc.array(fc.constantFrom("FILE", "NETWORK", "PROCESS")) },
          fc.array(fc.constantFrom("file", "DISK", 3), { minLength: 1, maxLength: 2 }),
          fc.constantFrom("FILE", {}),
        ),
      ),
    },
    { requiredKeys: [] },
  )
  .map((m) => JSON.stringify(m));
/** Text a client might send: filters, any JSON, any string. */
const clientText = fc.oneof(
  { weight: 3, arbitrary: setFilters },
  fc.json({ maxDepth: 2 }),
  fc.string({ unit: "binary", maxLength: 30 }),
  fc.constantFrom("", "null", "[]", '"set_filters"', '{"type":"set_filters"', "{}"),
);

/** Invalid UTF-8: a lone continuation byte, a truncated sequence, an encoded surrogate … */
const badUtf8 = fc
  .tuple(
    fc.string({ maxLength: 6 }),
    fc.constantFrom(
      [0x80],
      [0xc3],
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xff],
      [0xf4, 0x90, 0x80, 0x80],
    ),
  )
  .map(([s, bad]) => new Uint8Array(Buffer.concat([Buffer.from(s), Buffer.from(bad)])));

const payload = fc.oneof(
  { weight: 4, arbitrary: clientText.map(utf8) },
  badUtf8,
  fc.uint8Array({ maxLength: 40 }),
  fc
    .integer({ min: maxMessageBytes - 2, max: maxMessageBytes + 2 })
    .map((n) => new Uint8Array(n).fill(0x20)),
);

const dataFrame = (opcode: number, fin: boolean, bytes: Uint8Array): ClientFrame => ({
  fin,
  rsv: 0,
  opcode,
  masked: true,
  payload: bytes,
});

/** A whole message, in one frame or split in up to three. */
const message: fc.Arbitrary<ClientFrame[]> = fc
  .tuple(fc.constantFrom(1, 1, 1, 2), payload, fc.array(fc.nat(), { maxLength: 2 }))
  .map(([opcode, bytes, cuts]) => {
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const pieces: Uint8Array[] = [];
    let from = 0;
    for (const p of points) {
      pieces.push(bytes.subarray(from, p));
      from = p;
    }
    pieces.push(bytes.subarray(from));
    return pieces.map((piece, i) =>
      dataFrame(i === 0 ? opcode : 0, i === pieces.length - 1, piece),
    );
  });

const closePayload = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.constant(new Uint8Array([0x03])),
  fc
    .tuple(
      fc.oneof(
        fc.constantFrom(
          1000,
          1001,
          1003,
          1004,
          1005,
          1006,
          1007,
          1011,
          1012,
          1014,
          1015,
          2999,
          3000,
          4999,
          5000,
        ),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      fc.oneof(fc.string({ maxLength: 20 }).map(utf8), badUtf8),
    )
    .map(([code, reason]) => {
      const b = Buffer.alloc(2 + reason.length);
      b.writeUInt16BE(code);
      b.set(reason.subarray(0, 123), 2);
      return new Uint8Array(b.subarray(0, Math.min(b.length, 125)));
    }),
);
const controlFrame: fc.Arbitrary<ClientFrame[]> = fc
  .oneof(
    fc.record({ opcode: fc.constantFrom(9, 10), payload: fc.uint8Array({ maxLength: 130 }) }),
    fc.record({ opcode: fc.constant(8), payload: closePayload }),
  )
  .map(({ opcode, payload: bytes }) => [dataFrame(opcode, true, bytes)]);

/** Any header bits at all, and now and then a declared length far past the limit. */
const wildFrame: fc.Arbitrary<ClientFrame[]> = fc
  .record({
    fin: fc.boolean(),
    rsv: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 7 })),
    opcode: fc.integer({ min: 0, max: 15 }),
    masked: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, fc.constant(false)),
    payload: fc.uint8Array({ maxLength: 20 }),
    declared: fc.option(
      fc.oneof(
        fc.bigInt({ min: BigInt(maxMessageBytes) + 1n, max: 2n ** 53n - 1n }),
        fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n }),
      ),
      { nil: undefined },
    ),
  })
  .map((f) => [f.declared === undefined ? { ...f, declared: undefined } : f]);

const frameSequence = fc
  .array(
    fc.oneof({ weight: 5, arbitrary: message }, { weight: 2, arbitrary: controlFrame }, wildFrame),
    { minLength: 1, maxLength: 5 },
  )
  .map((groups) => groups.flat());

// Upgrade requests: mostly well-formed, with one or more parts bent.
const header = (name: string, values: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 6, arbitrary: values.map((v) => `${name}: ${v}\r\n`) },
    fc.constant(""),
    fc.string({ unit: "binary-ascii", maxLength: 20 }).map((v) => `${name}: ${v}\r\n`),
  );
const validQuery = fc.constantFrom(
  "",
  "?v=1",
  "?since=0",
  "?history=3",
  "?min_severity=WARN",
  "?tripwire_type=FILE,NETWORK",
);
const badQuery = fc.constantFrom(
  "?v=2",
  "?since=-1",
  "?since=abc",
  "?history=99999999",
  "?min_severity=LOUD",
  "?host_id=not-a-uuid",
  "?tripwire_type=DISK",
  "?since=1e3",
);
const upgradeRequest = fc
  .record({
    method: fc.oneof(
      { weight: 8, arbitrary: fc.constant("GET") },
      fc.constantFrom("POST", "PUT", "HEAD", "GE T", ""),
    ),
    path: fc.oneof(
      { weight: 6, arbitrary: validQuery.map((q) => ({ path: `/ws${q}`, valid: true })) },
      { weight: 2, arbitrary: badQuery.map((q) => ({ path: `/ws${q}`, valid: false })) },
      fc
        .oneof(
          fc.constantFrom("/ws/", "/WS", "/", "*", "/ws?%zz", "/ws#x"),
          fc
            .string({ unit: "binary-ascii", maxLength: 20 })
            .map((s) => `/ws?${encodeURIComponent(s)}`),
        )
        .map((path) => ({ path, valid: false })),
    ),
    version: fc.oneof(
      { weight: 8, arbitrary: fc.constant("HTTP/1.1") },
      fc.constantFrom("HTTP/1.0", "HTTP/2.0", "HTTP/9", ""),
    ),
    upgrade: header("Upgrade", fc.constantFrom("websocket", "WebSocket", "h2c", "websocket, h2c")),
    connection: header("Connection", fc.constantFrom("Upgrade", "keep-alive, Upgrade", "close")),
    key: header(
      "Sec-WebSocket-Key",
      fc.oneof(
        { weight: 4, arbitrary: fc.constant("") },
        fc.constantFrom("short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!=="),
      ),
    ),
    wsVersion: header("Sec-WebSocket-Version", fc.constantFrom("13", "8", "13, 8")),
    protocol: fc.oneof(
      fc.constant(""),
      header(
        "Sec-WebSocket-Protocol",
        fc.constantFrom("tripwire.v1", "chat", "tripwire.v1, chat", ""),
      ),
    ),
    extra: fc.oneof(
      { weight: 4, arbitrary: fc.constant("") },
      fc.constantFrom(
        "Content-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "X: \u0000\r\n",
        "Bad Header\r\n",
        " folded\r\n",
      ),
    ),
    ending: fc.oneof(
      { weight: 8, arbitrary: fc.constant("\r\n") },
      fc.constantFrom("\n", "", "\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    ),
    cut: fc.option(fc.nat(), { nil: undefined, freq: 6 }),
  })
  .map((r) => {
    // An empty key stands for a fresh valid one, so most requests carry a valid key.
    const key = randomBytes(16).toString("base64");
    const text =
      `${r.method} ${r.path.path} ${r.version}\r\nHost: 127.0.0.1\r\n${r.upgrade}${r.connection}` +
      `${r.key === "Sec-WebSocket-Key: \r\n" ? `Sec-WebSocket-Key: ${key}\r\n` : r.key}` +
      `${r.wsVersion}${r.protocol}${r.extra}${r.ending}`;
    const bytes = Buffer.from(text, "latin1");
    return {
      request: r,
      bytes: r.cut === undefined ? bytes : bytes.subarray(0, r.cut % (bytes.length + 1)),
    };
  });

// ---------------------------------------------------------------------------------------
// A well-behaved agent and browser during the whole run
// ---------------------------------------------------------------------------------------

interface Bystanders {
  /** Sends one more alert from the agent. */
  tick(): void;
  /** Ends the agent's stream; checks it was ACKed throughout and the browser got every alert. */
  finish(): Promise<void>;
}

async function startBystanders(server: RunningServer): Promise<Bystanders> {
  const { client: browser } = await connectLive(server.wsUrl);
  const grpc = server.grpcClient();
  const hostId = await register(grpc, `ws-bystander-${randomUUID().slice(0, 8)}`);
  const queue = eventQueue();
  const sent: string[] = [];
  const replies: Reply[] = [];
  const done = (async () => {
    for await (const cmd of grpc.streamAlerts(queue.events)) replies.push(decodeReply(cmd));
  })();
  return {
    tick() {
      const ev = makeEvent(hostId);
      sent.push(ev.alertId);
      queue.push(ev);
    },
    async finish() {
      queue.close();
      await done;
      expect(replies.filter((r) => r.type !== "ACK")).toEqual([]);
      expect(replies).toHaveLength(sent.length);
      const want = new Set(sent);
      await browser.until(
        () =>
          browser.alerts().filter((a) => want.has(a.alert_id)).length === want.size
            ? true
            : undefined,
        `all ${want.size} alerts`,
      );
      browser.terminate();
    },
  };
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

describe.each(backends)("raw bytes on /ws [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;
  let bystanders: Bystanders;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    server = await startServer(database, {
      flushIntervalMs: 20,
      wsMaxMessageBytes: maxMessageBytes,
    });
  });
  beforeEach(async () => {
    bystanders = await startBystanders(server);
  });
  afterEach(async () => {
    await bystanders.finish();
    const health = await fetch(`${server.baseUrl}/healthz`);
    expect(health.status).toBe(200);
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("answers any upgrade request without a 5xx, and upgrades exactly the valid ones it must", async () => {
    await fc.assert(
      fc.asyncProperty(upgradeRequest, async ({ request: r, bytes }) => {
        const answer = (await exchange(server.port, bytes)).toString("latin1");
        bystanders.tick();
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1];
        const why = `request ${JSON.stringify(Buffer.from(bytes).toString("latin1"))} → ${JSON.stringify(answer.slice(0, 200))}`;
        if (status === undefined) {
          // Only bytes that are not a whole request may go unanswered.
          expect(answer, why).toBe("");
          expect(r.cut !== undefined || r.ending !== "\r\n", why).toBe(true);
          return;
        }
        // Other paths may serve a page; nothing may fail on the server's side.
        expect(Number(status), why).toBeLessThan(500);
        // RFC 6455 §4.2.1 and docs/websocket.md: what a server must upgrade.
        const valid =
          r.cut === undefined &&
          r.method === "GET" &&
          r.version === "HTTP/1.1" &&
          r.path.valid &&
          /^Upgrade: (websocket|WebSocket)\r\n$/.test(r.upgrade) &&
          /^Connection: (keep-alive, )?Upgrade\r\n$/.test(r.connection) &&
          r.key === "Sec-WebSocket-Key: \r\n" &&
          r.wsVersion === "Sec-WebSocket-Version: 13\r\n" &&
          /^(|Sec-WebSocket-Protocol: (tripwire\.v1|chat|tripwire\.v1, chat)\r\n)$/.test(
            r.protocol,
          ) &&
          r.extra === "" &&
          r.ending === "\r\n";
        if (valid) expect(status, why).toBe("101");
        if (status === "101") {
          // @fastify/websocket upgrades a request for another GET route (the page at "/")
          // only to close it at once with a close frame.
          const afterHead = answer.slice(answer.indexOf("\r\n\r\n") + 4);
          if (!/^\/ws([?#]|$)/.test(r.path.path)) expect(afterHead.charCodeAt(0), why).toBe(0x88);
          const key =
            /Sec-WebSocket-Key: (.*)\r\n/.exec(Buffer.from(bytes).toString("latin1"))?.[1] ?? "";
          const accept = createHash("sha1")
            .update(key + websocketGuid)
            .digest("base64");
          expect(answer, why).toContain(`Sec-WebSocket-Accept: ${accept}\r\n`);
        }
      }),
      { numRuns: 200 },
    );
  });

  it.each([0, 1] as const)(
    "closes a version-%i connection on a bad frame with the code RFC 6455 gives, and answers every message it should",
    async (version) => {
      await fc.assert(
        fc.asyncProperty(frameSequence, async (frames) => {
          const expected = expectedOutcome(frames, version);
          const ws = await RawWebSocket.open(server.port, version);
          try {
            for (const f of frames) ws.send(encodeFrame(f));
            if (expected.close === "open") {
              ws.send(encodeFrame(dataFrame(8, true, new Uint8Array([0x03, 0xe8]))));
            }
            await ws.until(() => ws.closeFrame() !== undefined, "close frame");
          } finally {
            ws.socket.destroy();
          }
          bystanders.tick();
          const close = ws.closeFrame() as ServerFrame;
          const code = close.payload.length >= 2 ? close.payload.readUInt16BE(0) : "empty";
          const replies = ws
            .texts()
            .filter((t) => t.type === "filters" || t.type === "error")
            .map((t) => t.type);
          const got = { replies, close: code };
          const want = { ...expected, close: expected.close === "open" ? 1000 : expected.close };
          expect(
            got,
            JSON.stringify(frames, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)),
          ).toEqual(want);
        }),
        { numRuns: 150 },
      );
    },
  );

  it("answers every text or binary message on a version-1 connection with `filters` or `error`, as the protocol says", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            { weight: 5, arbitrary: clientText },
            fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b)),
          ),
          {
            minLength: 1,
            maxLength: 6,
          },
        ),
        async (messages) => {
          const client: FeedClient = await connectFeed(server.wsUrl, {
            protocols: ["tripwire.v1"],
          });
          try {
            await client.nextOfType("hello");
            for (const m of messages) client.send(m);
            const answers = (): string[] =>
              client.messages
                .filter((m) => m.type === "filters" || m.type === "error")
                .map((m) => m.type);
            await client.until(
              () => (answers().length >= messages.length ? true : undefined),
              "replies",
            );
            const want = messages.map((m) => (typeof m === "string" ? replyTo(m) : "error"));
            expect(answers(), JSON.stringify(messages)).toEqual(want);
            for (const m of client.messages.filter((x) => x.type === "error")) {
              expect(typeof m.error === "string" && m.error !== "").toBe(true);
            }
          } finally {
            client.terminate();
          }
          bystanders.tick();
        },
      ),
      { numRuns: 100 },
    );
  });
});
