/**
 * Property-based tests of raw bytes on the RPC routes of a real server: gRPC framing
 * over HTTP/2 (h2c) and HTTP/1.1, Connect unary and streaming, gRPC-Web, wrong content
 * types and arbitrary paths. The server must answer every request with a clear error
 * (or, when the bytes happen to form a valid request, a correct answer), never with an
 * unexplained 5xx or INTERNAL, never hang, and never disturb a well-behaved agent that
 * streams on the same server throughout.
 */
import { randomUUID } from "node:crypto";
import * as http from "node:http";
import * as http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { create, fromBinary, fromJsonString, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type AgentEvent,
  AgentEventSchema,
  RegisterRequestSchema,
  RegisterResponseSchema,
  type ServerCommand,
  ServerCommandSchema,
} from "../../src/gen/alert/alert_pb.js";
import { decodeReply, makeEvent, type Reply, register } from "../support/agent.js";
import { eventQueue } from "../support/agent-stream.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

const streamPath = "/alert.AlertService/StreamAlerts";
const registerPath = "/alert.AlertService/RegisterAgent";
const rpcPaths = new Set([streamPath, registerPath]);
/** Small, so that declared lengths above it are cheap to send. */
const maxMessageBytes = 4_096;
/** How long the server may take to answer one request before it counts as a hang. */
const answerWithinMs = 10_000;

// ---------------------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------------------

/** One request as sent, for the judge and for failure messages. */
interface RawRequest {
  readonly transport: "h2" | "h1";
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

/** What came back. */
interface RawResponse {
  readonly status: number;
  /**
   * False when the stream was reset after the headers: a server that answers before
   * reading the body (404, 415 …) resets the rest, and the client may drop the body.
   */
  readonly complete: boolean;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly trailers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
}

function describeRequest(req: RawRequest): string {
  const body = Buffer.from(req.body);
  return (
    `${req.transport} ${req.method} ${req.path} ${JSON.stringify(req.headers)} ` +
    `body(${body.length})=${body.subarray(0, 80).toString("hex")}`
  );
}

function headerText(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Sends `req` on an HTTP/2 session; resolves with the whole response. */
function h2Send(session: http2.ClientHttp2Session, req: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const stream = session.request(
      { ":method": req.method, ":path": req.path, ...req.headers },
      { endStream: req.body.length === 0 },
    );
    let head: http2.IncomingHttpHeaders | undefined;
    let complete = false;
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`no answer within ${answerWithinMs} ms: ${describeRequest(req)}`));
    }, answerWithinMs);
    stream.on("response", (h) => {
      head = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      complete = true;
    });
    // A write after the server already answered fails; the answer is what counts.
    stream.on("error", () => {});
    stream.on("close", () => {
      clearTimeout(timer);
      if (head === undefined) {
        reject(
          new Error(`stream reset (${stream.rstCode}) without an answer: ${describeRequest(req)}`),
        );
        return;
      }
      resolve({
        status: Number(head[":status"]),
        complete,
        headers: head,
        trailers,
        body: Buffer.concat(chunks),
      });
    });
    if (req.body.length > 0) stream.end(req.body);
  });
}

/** Sends `req` over HTTP/1.1; resolves with the whole response. */
function h1Send(baseUrl: string, req: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const r = http.request(
      `${baseUrl}${req.path}`,
      // A connection per request: no keep-alive race with a server that closes after a 4xx.
      {
        method: req.method,
        // Node sends no framing for a DELETE body unless told; the server would read the
        // body as the next request.
        headers: { ...req.headers, "content-length": String(req.body.length) },
        agent: false,
        timeout: answerWithinMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            complete: res.complete,
            headers: res.headers,
            trailers: res.trailers,
            body: Buffer.concat(chunks),
          }),
        );
      },
    );
    r.on("timeout", () => {
      r.destroy(new Error(`no answer within ${answerWithinMs} ms: ${describeRequest(req)}`));
    });
    r.on("error", (err) => reject(new Error(`${err.message}: ${describeRequest(req)}`)));
    r.end(req.body);
  });
}

// ---------------------------------------------------------------------------------------
// Reading responses
// ---------------------------------------------------------------------------------------

interface Envelope {
  readonly flags: number;
  readonly data: Buffer;
}

/** Splits a response body into envelopes; throws if it is not a sequence of whole ones. */
function envelopes(body: Buffer): Envelope[] {
  const out: Envelope[] = [];
  let at = 0;
  while (at < body.length) {
    if (body.length - at < 5) throw new Error("response ends inside an envelope prefix");
    const len = body.readUInt32BE(at + 1);
    if (body.length - at - 5 < len) throw new Error("response ends inside an envelope");
    out.push({ flags: body[at] as number, data: body.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
  return out;
}

/** The outcome of one RPC, as the protocol stated it. */
interface RpcOutcome {
  /** gRPC status number, or Connect code string; "ok" when it succeeded. */
  readonly code: string;
  readonly message: string;
  /** Response messages (binary), for successful calls. */
  readonly messages: Uint8Array[];
  readonly json: boolean;
}

const grpcCodeNames: Readonly<Record<string, string>> = {
  "0": "ok",
  "1": "canceled",
  "2": "unknown",
  "3": "invalid_argument",
  "4": "deadline_exceeded",
  "5": "not_found",
  "6": "already_exists",
  "7": "permission_denied",
  "8": "resource_exhausted",
  "9": "failed_precondition",
  "10": "aborted",
  "11": "out_of_range",
  "12": "unimplemented",
  "13": "internal",
  "14": "unavailable",
  "15": "data_loss",
  "16": "unauthenticated",
};

function grpcOutcome(
  status: string | undefined,
  message: string | undefined,
  messages: Envelope[],
  json: boolean,
): RpcOutcome {
  const code = status === undefined ? undefined : grpcCodeNames[status];
  if (code === undefined) throw new Error(`no valid grpc-status (got ${status})`);
  return {
    code,
    message: decodeURIComponent(message ?? ""),
    messages: messages.map((e) => e.data),
    json,
  };
}

/** Reads the RPC outcome of `res`, by the protocol its content type names. */
function rpcOutcome(res: RawResponse): RpcOutcome | undefined {
  const type = headerText(res.headers["content-type"]) ?? "";
  if (type.startsWith("application/grpc-web")) {
    const envs = envelopes(res.body);
    const trailer = envs.find((e) => (e.flags & 0x80) === 0x80);
    const fields = new Map<string, string>();
    for (const line of trailer?.data.toString("latin1").split("\r\n") ?? []) {
      const colon = line.indexOf(":");
      if (colon > 0)
        fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    return grpcOutcome(
      headerText(res.headers["grpc-status"]) ?? fields.get("grpc-status"),
      headerText(res.headers["grpc-message"]) ?? fields.get("grpc-message"),
      envs.filter((e) => e.flags === 0),
      type.includes("json"),
    );
  }
  if (type.startsWith("application/grpc")) {
    return grpcOutcome(
      headerText(res.headers["grpc-status"]) ?? headerText(res.trailers["grpc-status"]),
      headerText(res.headers["grpc-message"]) ?? headerText(res.trailers["grpc-message"]),
      envelopes(res.body),
      type.includes("json"),
    );
  }
  if (type.startsWith("application/connect+")) {
    const envs = envelopes(res.body);
    const end = envs[envs.length - 1];
    if (end === undefined || end.flags !== 0x02) throw new Error("no Connect end-stream message");
    const parsed = JSON.parse(end.data.toString("utf8")) as {
      error?: { code?: unknown; message?: unknown };
    };
    const error = parsed.error;
    if (error !== undefined && typeof error.code !== "string") {
      throw new Error("Connect end-stream error without a code");
    }
    return {
      code: error === undefined ? "ok" : String(error.code),
      message: String(error?.message ?? ""),
      messages: envs.slice(0, -1).map((e) => e.data),
      json: type.includes("json"),
    };
  }
  if (type.startsWith("application/json") || type.startsWith("application/proto")) {
    if (res.status === 200) {
      return { code: "ok", message: "", messages: [res.body], json: type.includes("json") };
    }
    const parsed = JSON.parse(res.body.toString("utf8")) as { code?: unknown; message?: unknown };
    // Fastify's own errors (404, 415, …) are JSON too, with a numeric statusCode and no code.
    if (typeof parsed.code !== "string" || !/^[a-z_]+$/.test(parsed.code)) return undefined;
    return { code: parsed.code, message: String(parsed.message ?? ""), messages: [], json: true };
  }
  return undefined;
}

/**
 * INTERNAL answers to client garbage that connect-es 2.1.2 gives and the server cannot
 * change: binary parse failures (`createBinarySerialization` maps them to Code.Internal,
 * where its JSON parser says InvalidArgument), the compressed flag without an encoding
 * (`envelopeDecompress`), and brotli data that does not decompress (connect-node maps
 * only zlib's error codes to InvalidArgument). For Connect unary calls they are HTTP 500.
 */
const knownLibraryInternals = [
  /^parse binary: /,
  /^received compressed envelope, but do not know how to decompress$/,
  /^decompression failed$/,
];

/**
 * The Connect protocol answers an unknown Content-Encoding with `unimplemented`, which
 * is HTTP 501 for unary calls: a 5xx by the protocol's own rule, not a server fault.
 */
function unsupportedCompression(outcome: RpcOutcome): boolean {
  return outcome.code === "unimplemented" && /^unknown compression "/.test(outcome.message);
}

function checkInternal(message: string): void {
  if (!knownLibraryInternals.some((re) => re.test(message))) {
    throw new Error(`INTERNAL for client bytes, not a known library mapping: ${message}`);
  }
}

/** Decodes ServerCommands of a StreamAlerts answer. */
function commands(outcome: RpcOutcome): ServerCommand[] {
  return outcome.messages.map((m) =>
    outcome.json
      ? fromJsonString(ServerCommandSchema, Buffer.from(m).toString("utf8"))
      : fromBinary(ServerCommandSchema, m),
  );
}

/**
 * Checks that `res` is a clear answer to `req`: a 4xx, or an RPC error with a code, or a
 * correct answer to bytes that happened to form a valid request. Throws otherwise.
 */
function judge(req: RawRequest, res: RawResponse): void {
  const pathname = req.path.split("?")[0] ?? "";
  const isRpc = rpcPaths.has(pathname);
  if (!isRpc) {
    // Not an RPC: any page or refusal, but no server error.
    if (res.status >= 500) throw new Error(`HTTP ${res.status} for a non-RPC path`);
    return;
  }
  if (res.status === 505 && req.transport === "h1" && pathname === streamPath) {
    // Bidirectional streaming needs HTTP/2: "HTTP Version Not Supported" says so.
    return;
  }
  if (!res.complete) {
    // Cut off after the headers: only an early refusal may be, never an RPC answer.
    if (res.status < 400 || res.status >= 500) throw new Error(`HTTP ${res.status} cut off`);
    return;
  }
  const outcome = rpcOutcome(res);
  if (outcome === undefined) {
    // A refusal before the RPC layer (404, 405, 415 …): it must be a client error.
    if (res.status < 400 || res.status >= 500) {
      throw new Error(`HTTP ${res.status} without an RPC status`);
    }
    return;
  }
  if (outcome.code === "internal") checkInternal(outcome.message);
  else if (res.status >= 500 && !unsupportedCompression(outcome)) {
    throw new Error(`HTTP ${res.status} (${outcome.code})`);
  }
  if (outcome.code === "unknown") throw new Error(`code unknown: ${outcome.message}`);
  if (outcome.code !== "ok" && outcome.message.trim() === "") {
    throw new Error(`code ${outcome.code} without a message`);
  }
  if (pathname === streamPath) {
    // Random bytes never name a registered host: whatever events they decode to are
    // refused, also on a stream that then ends with an error.
    for (const cmd of commands(outcome)) {
      const reply = decodeReply(cmd);
      if (reply.type !== "ERROR" || reply.error === undefined || reply.error === "") {
        throw new Error(`garbage event answered with ${JSON.stringify(reply)}`);
      }
    }
    return;
  }
  if (outcome.code !== "ok") {
    if (outcome.messages.length > 0)
      throw new Error("RegisterAgent failed with a response message");
    return;
  }
  // RegisterAgent succeeded: the bytes were a valid request, and the answer is a real one.
  const [message] = outcome.messages;
  if (message === undefined || outcome.messages.length !== 1) {
    throw new Error("RegisterAgent succeeded without exactly one response message");
  }
  const answer = outcome.json
    ? fromJsonString(RegisterResponseSchema, Buffer.from(message).toString("utf8"))
    : fromBinary(RegisterResponseSchema, message);
  expect(answer.hostId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
}

// ---------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------

const encoder = new TextEncoder();
/** Mostly `valid`, now and then `invalid`. */
function mostly<T>(valid: fc.Arbitrary<T>, invalid: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: invalid });
}
const uuidish = mostly(fc.uuid(), fc.oneof(fc.constant(""), fc.string({ maxLength: 40 })));
/** Events that mostly pass validation, so that they reach the host check and beyond. */
const randomEvent: fc.Arbitrary<AgentEvent> = fc
  .record({
    alertId: uuidish,
    hostId: uuidish,
    timestampUs: mostly(
      fc.integer({ min: 0, max: 200_000 }).map((ms) => BigInt(Date.now() - ms) * 1000n),
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    ),
    tripwireType: mostly(fc.constantFrom("FILE", "NETWORK", "PROCESS"), fc.constantFrom("", "x")),
    ruleName: mostly(fc.string({ minLength: 1, maxLength: 20 }), fc.constant("")),
    severity: mostly(fc.constantFrom("INFO", "WARN", "CRITICAL"), fc.constantFrom("", "x")),
    eventDetailJson: mostly(
      fc.json().map((j) => encoder.encode(j)),
      fc.uint8Array({ maxLength: 20 }),
    ),
  })
  .map((f) => create(AgentEventSchema, f));
/** Any UTF-16 unit, unpaired surrogates included. */
const anyUnit = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
);
/**
 * JSON that the JSON codecs refuse with messages quoting the input: text cut short
 * (V8 quotes it, maybe halving a surrogate pair) and bad int64 strings (protobuf-es
 * quotes them).
 */
const badJson = fc.oneof(
  fc
    .tuple(fc.json({ stringUnit: anyUnit, maxDepth: 2 }), fc.nat())
    .map(([j, cut]) => j.slice(0, cut % (j.length + 1))),
  fc
    .tuple(fc.constantFrom("x", "[1,", '{"a":1}}'), fc.string({ unit: "binary", maxLength: 12 }))
    .map(([head, tail]) => head + tail),
  fc
    .record({
      timestampUs: fc.oneof(fc.string({ unit: anyUnit, maxLength: 6 }), fc.double()),
      alertId: fc.oneof(fc.string({ unit: anyUnit, maxLength: 6 }), fc.integer()),
      hostname: fc.string({ unit: anyUnit, maxLength: 6 }),
    })
    .map((o) => JSON.stringify(o)),
);
const randomRegister = fc
  .record({
    hostname: fc.string({ unit: "binary", maxLength: 300 }),
    platform: fc.string({ maxLength: 10 }),
    agentVersion: fc.string({ maxLength: 10 }),
  })
  .map((f) => create(RegisterRequestSchema, f));

/** Message bytes: random, a real message of either method, or JSON. */
const messageBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  { weight: 3, arbitrary: randomEvent.map((e) => toBinary(AgentEventSchema, e)) },
  randomRegister.map((r) => toBinary(RegisterRequestSchema, r)),
  fc.json({ maxDepth: 2 }).map((j) => encoder.encode(j)),
  badJson.map((j) => encoder.encode(j)),
  fc
    .record({ hostname: fc.anything(), alertId: fc.anything(), eventDetailJson: fc.anything() })
    .map((o) =>
      encoder.encode(
        JSON.stringify(o, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)) ?? "",
      ),
    ),
);

/** One length-prefixed frame, its declared length right or wrong. */
const frame = fc.record({
  flags: fc.oneof(
    { weight: 6, arbitrary: fc.constant(0) },
    fc.constantFrom(1, 2, 0x80, 0x81),
    fc.integer({ min: 0, max: 255 }),
  ),
  payload: messageBytes,
  declared: fc.oneof(
    { weight: 6, arbitrary: fc.constant<"exact">("exact") },
    fc.integer({ min: 0, max: 80 }),
    fc.integer({ min: maxMessageBytes + 1, max: 0xffff_ffff }),
  ),
});
type Frame = typeof frame extends fc.Arbitrary<infer F> ? F : never;

function encodeFrames(
  frames: readonly Frame[],
  cut: number | undefined,
  junk: Uint8Array,
): Uint8Array {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const prefix = Buffer.alloc(5);
    prefix[0] = f.flags;
    prefix.writeUInt32BE(f.declared === "exact" ? f.payload.length : f.declared, 1);
    parts.push(prefix, Buffer.from(f.payload));
  }
  parts.push(Buffer.from(junk));
  const all = Buffer.concat(parts);
  return cut === undefined ? all : all.subarray(0, cut % (all.length + 1));
}

/** A framed body: frames, maybe cut short, maybe with junk after them. */
const framedBody = fc
  .record({
    frames: fc.array(frame, { maxLength: 3 }),
    cut: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, fc.nat()),
    junk: fc.oneof(
      { weight: 4, arbitrary: fc.constant(new Uint8Array(0)) },
      fc.uint8Array({ maxLength: 8 }),
    ),
  })
  .map(({ frames, cut, junk }) => encodeFrames(frames, cut, junk));

/** Optional headers: each name maps to a value, or is left out. */
function optionalHeaders(
  choices: Readonly<Record<string, readonly string[]>>,
): fc.Arbitrary<Record<string, string>> {
  const entries = Object.entries(choices).map(([name, values]) =>
    fc
      .oneof(
        { weight: 3, arbitrary: fc.constant(undefined) },
        fc.constantFrom<string | undefined>(...values),
      )
      .map((v) => [name, v] as const),
  );
  return fc.tuple(...entries).map((pairs) => {
    const out: Record<string, string> = {};
    for (const [name, value] of pairs) if (value !== undefined) out[name] = value;
    return out;
  });
}

const rpcPath = fc.constantFrom(streamPath, registerPath);

const grpcRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h2", "h2", "h1"),
    path: rpcPath,
    contentType: fc.constantFrom(
      "application/grpc",
      "application/grpc+proto",
      "application/grpc+json",
      "application/grpc+xml",
      "application/grpc; charset=utf-8",
    ),
    extra: optionalHeaders({
      te: ["trailers"],
      "grpc-encoding": ["identity", "gzip", "br", "zstd", "garbage"],
      "grpc-accept-encoding": ["gzip", "nonsense"],
      "grpc-timeout": ["1n", "5S", "99999999H", "-1S", "x"],
    }),
    body: framedBody,
  })
  .map(({ transport, path, contentType, extra, body }) => ({
    transport,
    method: "POST",
    path,
    headers: { "content-type": contentType, ...extra },
    body,
  }));

const grpcWebRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h1", "h1", "h2"),
    path: rpcPath,
    contentType: fc.constantFrom(
      "application/grpc-web",
      "application/grpc-web+proto",
      "application/grpc-web+json",
      "application/grpc-web-text",
      "application/grpc-web-text+proto",
    ),
    extra: optionalHeaders({
      "x-grpc-web": ["1"],
      "grpc-encoding": ["identity", "gzip", "zstd"],
      "grpc-timeout": ["1n", "5S", "bogus"],
    }),
    body: fc.oneof(framedBody, fc.uint8Array({ maxLength: 40 })),
  })
  .map(({ transport, path, contentType, extra, body }) => ({
    transport,
    method: "POST",
    path,
    headers: { "content-type": contentType, ...extra },
    body,
  }));

const connectUnaryRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h2", "h1"),
    path: rpcPath,
    contentType: fc.constantFrom(
      "application/json",
      "application/proto",
      "application/json; charset=utf-8",
      "application/json; charset=latin1",
      "application/proto; charset=utf-8",
    ),
    extra: optionalHeaders({
      "connect-protocol-version": ["1", "2", ""],
      "content-encoding": ["identity", "gzip", "br", "zstd"],
      "connect-timeout-ms": ["0", "1", "-5", "99999999999", "abc"],
    }),
    body: fc.oneof(
      messageBytes,
      fc.json().map((j) => encoder.encode(j)),
      messageBytes.map((b) => new Uint8Array(gzipSync(b))),
      fc
        .integer({ min: maxMessageBytes - 2, max: maxMessageBytes + 2 })
        .map((n) => encoder.encode(`{"hostname":"${"h".repeat(Math.max(0, n - 15))}"}`)),
    ),
  })
  .map(({ transport, path, contentType, extra, body }) => ({
    transport,
    method: "POST",
    path,
    headers: { "content-type": contentType, ...extra },
    body,
  }));

const connectStreamRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h2", "h2", "h1"),
    path: rpcPath,
    contentType: fc.constantFrom(
      "application/connect+proto",
      "application/connect+json",
      "application/connect+xml",
    ),
    extra: optionalHeaders({
      "connect-protocol-version": ["1", "7"],
      "connect-content-encoding": ["identity", "gzip", "zstd"],
      "connect-timeout-ms": ["0", "1", "abc"],
    }),
    body: framedBody,
  })
  .map(({ transport, path, contentType, extra, body }) => ({
    transport,
    method: "POST",
    path,
    headers: { "content-type": contentType, ...extra },
    body,
  }));

/** JSON the codecs refuse, on every protocol that has a JSON codec. */
const jsonCodecRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h2", "h1"),
    path: rpcPath,
    contentType: fc.constantFrom(
      "application/grpc+json",
      "application/grpc-web+json",
      "application/connect+json",
      "application/json",
    ),
    json: badJson,
  })
  .map(({ transport, path, contentType, json }): RawRequest => {
    const bytes = encoder.encode(json);
    const enveloped = contentType !== "application/json";
    return {
      transport,
      method: "POST",
      path,
      headers: { "content-type": contentType },
      body: enveloped
        ? encodeFrames(
            [{ flags: 0, payload: bytes, declared: "exact" }],
            undefined,
            new Uint8Array(0),
          )
        : bytes,
    };
  });

const printable = fc.string({ unit: "grapheme-ascii", maxLength: 40 });
const anyRequest: fc.Arbitrary<RawRequest> = fc
  .record({
    transport: fc.constantFrom<"h2" | "h1">("h2", "h1"),
    method: fc.constantFrom("POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"),
    path: fc.oneof(
      rpcPath,
      fc
        .string({ unit: "binary", maxLength: 30 })
        .map((s) => `/alert.AlertService/${encodeURIComponent(s)}`),
      fc.webPath().map((p) => (p.startsWith("/") ? p : `/${p}`)),
      fc.tuple(rpcPath, fc.webQueryParameters()).map(([p, q]) => `${p}?${q}`),
      fc.string({ unit: "binary", maxLength: 30 }).map((s) => `/${encodeURIComponent(s)}`),
    ),
    contentType: fc.option(
      fc.oneof(
        fc.constantFrom(
          "text/plain",
          "application/x-www-form-urlencoded",
          "multipart/form-data",
          "application/grpc",
        ),
        printable.map((s) => s.replace(/[^\x20-\x7e]/g, "")),
      ),
      { nil: undefined },
    ),
    body: fc.oneof(fc.uint8Array({ maxLength: 64 }), framedBody),
  })
  .map(
    ({ transport, method, path, contentType, body }): RawRequest => ({
      transport,
      method,
      path: path === "" ? "/" : path,
      headers: contentType === undefined ? {} : { "content-type": contentType },
      // GET and OPTIONS requests carry no body here, so that HTTP/1.1 framing stays simple.
      body: method === "GET" || method === "OPTIONS" ? new Uint8Array(0) : body,
    }),
  );

// ---------------------------------------------------------------------------------------
// A well-behaved agent streaming alongside the garbage
// ---------------------------------------------------------------------------------------

/** One pipelined StreamAlerts stream that sends an event on every `tick()`. */
interface BystanderAgent {
  tick(): void;
  /** Ends the stream and resolves with every reply once the server has ended it. */
  finish(): Promise<{ sent: string[]; replies: Reply[] }>;
}

async function startBystander(server: RunningServer): Promise<BystanderAgent> {
  const client = server.grpcClient();
  const hostId = await register(client, `bystander-${randomUUID().slice(0, 8)}`);
  const queue = eventQueue();
  const sent: string[] = [];
  const replies: Reply[] = [];
  const done = (async () => {
    for await (const cmd of client.streamAlerts(queue.events)) replies.push(decodeReply(cmd));
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
      return { sent, replies };
    },
  };
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

describe.each(backends)("raw bytes on the RPC routes [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer;
  let session: http2.ClientHttp2Session | undefined;
  let bystander: BystanderAgent;

  /** The h2c session for garbage, reopened if the server ever closes it. */
  function h2(): http2.ClientHttp2Session {
    if (session === undefined || session.closed || session.destroyed) {
      session = http2.connect(server.baseUrl);
      session.on("error", () => {});
    }
    return session;
  }

  async function send(req: RawRequest): Promise<RawResponse> {
    const res =
      req.transport === "h2" ? await h2Send(h2(), req) : await h1Send(server.baseUrl, req);
    bystander.tick();
    return res;
  }

  /** Runs `numRuns` requests from `requests`, judging every answer. */
  async function fuzz(requests: fc.Arbitrary<RawRequest>, numRuns: number): Promise<void> {
    await fc.assert(
      fc.asyncProperty(requests, async (req) => {
        const res = await send(req);
        try {
          judge(req, res);
        } catch (err) {
          const body = res.body.subarray(0, 300).toString("latin1");
          throw new Error(
            `${(err as Error).message}\n  request: ${describeRequest(req)}\n  answer: HTTP ${res.status} ` +
              `${JSON.stringify(res.headers)} ${JSON.stringify(res.trailers)} ${JSON.stringify(body)}`,
          );
        }
      }),
      { numRuns },
    );
  }

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    server = await startServer(database, { flushIntervalMs: 20, maxMessageBytes });
  });
  beforeEach(async () => {
    bystander = await startBystander(server);
  });
  afterEach(async () => {
    // The server still answers, and the agent that streamed all along lost nothing.
    const { sent, replies } = await bystander.finish();
    expect(replies.filter((r) => r.type !== "ACK")).toEqual([]);
    expect(replies).toHaveLength(sent.length);
    expect(new Set(replies.map((r) => r.alertId))).toEqual(new Set(sent));
    const health = await fetch(`${server.baseUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await register(server.grpcClient())).toMatch(/^[0-9a-f-]{36}$/);
  });
  afterAll(async () => {
    session?.destroy();
    await server?.close();
    await database?.dispose();
  });

  it("answers gRPC framing garbage (wrong lengths, flags, truncation, huge lengths) with a gRPC status", async () => {
    await fuzz(grpcRequest, 250);
  });

  it("answers Connect unary garbage with a Connect error carrying a code", async () => {
    await fuzz(connectUnaryRequest, 200);
  });

  it("answers garbage Connect streaming envelopes with an end-stream error carrying a code", async () => {
    await fuzz(connectStreamRequest, 150);
  });

  it("answers gRPC-Web framing garbage with a gRPC status in the trailer frame", async () => {
    await fuzz(grpcWebRequest, 150);
  });

  it("answers malformed JSON on every JSON codec with a coded error, whatever the message quotes", async () => {
    await fuzz(jsonCodecRequest, 150);
  });

  it("answers arbitrary paths, methods and content types with a client error, never a 5xx", async () => {
    await fuzz(anyRequest, 200);
  });

  it("honours any grpc-timeout a timer can hold and refuses longer ones with invalid_argument", async () => {
    const hostId = await register(server.grpcClient(), `timeouts-${randomUUID().slice(0, 8)}`);
    const unitMs = { H: 3_600_000, M: 60_000, S: 1_000 } as const;
    const longestTimer = 2 ** 31 - 1;
    const timeout = fc.oneof(
      fc.tuple(fc.integer({ min: 10, max: 99_999_999 }), fc.constantFrom("H", "M", "S" as const)),
      // Either side of the longest timer Node can set.
      fc.constantFrom(
        [596, "H"] as const,
        [597, "H"] as const,
        [35_791, "M"] as const,
        [35_792, "M"] as const,
        [2_147_483, "S"] as const,
        [2_147_484, "S"] as const,
      ),
    );
    await fc.assert(
      fc.asyncProperty(timeout, async ([n, unit]) => {
        const ev = makeEvent(hostId);
        const message = toBinary(AgentEventSchema, ev);
        const body = encodeFrames(
          [{ flags: 0, payload: message, declared: "exact" }],
          undefined,
          new Uint8Array(0),
        );
        const req: RawRequest = {
          transport: "h2",
          method: "POST",
          path: streamPath,
          headers: {
            "content-type": "application/grpc",
            te: "trailers",
            "grpc-timeout": `${n}${unit}`,
          },
          body,
        };
        const res = await send(req);
        const outcome = rpcOutcome(res);
        if (n * unitMs[unit] > longestTimer) {
          expect(outcome?.code, describeRequest(req)).toBe("invalid_argument");
          expect(outcome?.message).toMatch(/timeout/);
        } else {
          expect(outcome?.code, describeRequest(req)).toBe("ok");
          expect(outcome && commands(outcome).map(decodeReply)).toEqual([
            { type: "ACK", alertId: ev.alertId },
          ]);
        }
      }),
      { numRuns: 40 },
    );
  });
});
