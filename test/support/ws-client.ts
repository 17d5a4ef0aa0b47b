/**
 * A test client of GET /ws (docs/websocket.md) over the `ws` package: it connects with
 * an optional subprotocol, query, headers and Origin, keeps every message it receives
 * (parsed), and lets a test await the message it expects, a ping, or the close.
 */
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { type ClientOptions, WebSocket } from "ws";
import type { Broadcaster } from "../../src/broadcast/broadcaster.js";

/** The alert object of docs/websocket.md, as a client receives it. */
export interface FeedAlert {
  readonly seq: number;
  readonly alert_id: string;
  readonly host_id: string;
  readonly hostname: string;
  readonly severity: string;
  readonly tripwire_type: string;
  readonly [field: string]: unknown;
}

/** One message from the server, parsed; frames that are not JSON objects get type `unparsable`. */
export interface FeedMessage {
  readonly type: string;
  readonly [field: string]: unknown;
}

/** How the connection ended. */
export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/** How to connect. */
export interface ConnectOptions {
  /** Query parameters; an array repeats the parameter. */
  readonly query?: Readonly<Record<string, string | readonly string[]>>;
  /** Subprotocols to offer, e.g. ["tripwire.v1"]. */
  readonly protocols?: readonly string[];
  readonly headers?: Readonly<Record<string, string>>;
  /** The Origin header (none is sent when undefined). */
  readonly origin?: string;
  /** Whether to answer pings (ws answers them by default). */
  readonly autoPong?: boolean;
  /** Whether to offer permessage-deflate (ws offers it by default, as browsers do). */
  readonly perMessageDeflate?: boolean;
}

/** A refusal before the upgrade: the HTTP status and the parsed JSON body. */
export interface Refusal {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly body: unknown;
}

/** Thrown by `connectFeed` when the server answers with HTTP instead of upgrading. */
export class RefusedError extends Error {
  override readonly name = "RefusedError";
  constructor(readonly refusal: Refusal) {
    super(`refused with HTTP ${refusal.status}: ${JSON.stringify(refusal.body)}`);
  }
}

/** Awaiting a message or ping gives up after this long, with what was received so far. */
const defaultTimeoutMs = 20_000;

/** The URL of the feed with `query` appended. */
export function feedUrl(wsUrl: string, query: ConnectOptions["query"] = {}): string {
  const url = new URL(wsUrl);
  for (const [name, value] of Object.entries(query)) {
    for (const v of typeof value === "string" ? [value] : value) url.searchParams.append(name, v);
  }
  return url.toString();
}

/** The alerts a message carries: `data` of a version-0 frame, `items` of an `alerts` frame. */
export function alertsOf(message: FeedMessage): FeedAlert[] {
  if (message.type === "alert") return [message.data as FeedAlert];
  if (message.type === "alerts") return message.items as FeedAlert[];
  return [];
}

/**
 * An open connection to /ws that records what it receives. `host_status` messages, which
 * come whenever a host's liveness changes, are kept apart from the alert feed's messages,
 * as a feed client that does not show hosts would ignore them (docs/websocket.md).
 */
export class FeedClient {
  /** Every message received except `host_status`, in order. */
  readonly messages: FeedMessage[] = [];
  /** Every `host_status` message received, in order. */
  readonly hostStatuses: FeedMessage[] = [];
  /** Whether each message arrived as a binary frame (the server must never send one). */
  readonly binary: boolean[] = [];
  /** Pings received. */
  pings = 0;
  /** Resolves when the connection closes, with the code and reason the client saw. */
  readonly closed: Promise<CloseInfo>;
  #closeInfo: CloseInfo | undefined;
  readonly #listeners = new Set<() => void>();

  constructor(readonly socket: WebSocket) {
    socket.on("message", (data, isBinary) => {
      const text = String(data);
      let parsed: FeedMessage;
      try {
        const value = JSON.parse(text) as unknown;
        parsed =
          typeof value === "object" && value !== null && !Array.isArray(value)
            ? (value as FeedMessage)
            : { type: "unparsable", text };
      } catch {
        parsed = { type: "unparsable", text };
      }
      if (parsed.type === "host_status") this.hostStatuses.push(parsed);
      else this.messages.push(parsed);
      this.binary.push(isBinary);
      this.#notify();
    });
    socket.on("ping", () => {
      this.pings++;
      this.#notify();
    });
    // Errors end in a close event, which is what tests await.
    socket.on("error", () => {});
    this.closed = new Promise((resolve) => {
      socket.once("close", (code: number, reason: Buffer) => {
        this.#closeInfo = { code, reason: reason.toString() };
        resolve(this.#closeInfo);
        this.#notify();
      });
    });
  }

  /** Every alert received, in arrival order. */
  alerts(): FeedAlert[] {
    return this.messages.flatMap(alertsOf);
  }

  /** The seq of every alert received, in arrival order. */
  seqs(): number[] {
    return this.alerts().map((a) => a.seq);
  }

  /** The first message at index ≥ `from` that passes `predicate`; waits for it if needed. */
  next(predicate: (m: FeedMessage) => boolean, from = 0): Promise<FeedMessage> {
    return this.until(() => {
      for (let i = from; i < this.messages.length; i++) {
        const m = this.messages[i] as FeedMessage;
        if (predicate(m)) return m;
      }
      return undefined;
    }, "a matching message");
  }

  /** The first message of `type` at index ≥ `from`. */
  nextOfType(type: string, from = 0): Promise<FeedMessage> {
    return this.next((m) => m.type === type, from);
  }

  /** Resolves once an alert with `seq` (or higher) has arrived. */
  alertAtLeast(seq: number): Promise<FeedMessage> {
    return this.next((m) => alertsOf(m).some((a) => a.seq >= seq));
  }

  /** Resolves once `pings` reaches `count`. */
  pingCount(count: number): Promise<number> {
    return this.until(() => (this.pings >= count ? this.pings : undefined), `${count} pings`);
  }

  /**
   * Resolves with `test()`'s first non-undefined value, checked now and after every
   * message, ping and close. Rejects if the socket closes first or nothing comes in time.
   */
  until<T>(test: () => T | undefined, what: string, timeoutMs = defaultTimeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): void => {
        let hit: T | undefined;
        try {
          hit = test();
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (hit !== undefined) {
          finish();
          resolve(hit);
        } else if (this.#closeInfo !== undefined) {
          finish();
          reject(new Error(`closed (${this.#describe()}) before ${what}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no ${what} within ${timeoutMs} ms (${this.#describe()})`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.#listeners.delete(check);
      };
      this.#listeners.add(check);
      check();
    });
  }

  /** Sends a text (string) or binary (Buffer) message. */
  send(data: string | Buffer): void {
    this.socket.send(data, { binary: typeof data !== "string" });
  }

  /** Sends a JSON message. */
  sendJson(value: unknown): void {
    this.socket.send(JSON.stringify(value));
  }

  /** Stops reading from the TCP socket, as a browser tab that hangs would. */
  pauseReading(): void {
    rawSocket(this.socket).pause();
  }

  /** Reads again after `pauseReading`. */
  resumeReading(): void {
    rawSocket(this.socket).resume();
  }

  /** Closes the connection without a handshake. */
  terminate(): void {
    this.socket.terminate();
  }

  #notify(): void {
    for (const check of [...this.#listeners]) check();
  }

  #describe(): string {
    const close =
      this.#closeInfo === undefined
        ? "open"
        : `close ${this.#closeInfo.code} ${this.#closeInfo.reason}`;
    const types = this.messages.slice(-8).map((m) => {
      const items = alertsOf(m);
      return items.length > 0 ? `${m.type}[${items[0]?.seq}..${items.at(-1)?.seq}]` : m.type;
    });
    return `${close}; ${this.messages.length} messages, last: ${types.join(" ")}`;
  }
}

function rawSocket(socket: WebSocket): Socket {
  const raw = (socket as unknown as { _socket: Socket | null })._socket;
  if (raw === null) throw new Error("the WebSocket has no TCP socket");
  return raw;
}

function clientOptions(options: ConnectOptions): ClientOptions {
  return {
    headers: { ...options.headers },
    ...(options.origin === undefined ? {} : { origin: options.origin }),
    ...(options.autoPong === undefined ? {} : { autoPong: options.autoPong }),
    ...(options.perMessageDeflate === undefined
      ? {}
      : { perMessageDeflate: options.perMessageDeflate }),
  };
}

async function readRefusal(res: IncomingMessage): Promise<Refusal> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the test's assertion on the body shows the text.
  }
  return { status: res.statusCode ?? 0, contentType: res.headers["content-type"], body };
}

/**
 * Opens /ws and resolves once it is open (version 1: the `hello` may not have arrived yet).
 * Rejects with RefusedError when the server answers with plain HTTP.
 */
export function connectFeed(wsUrl: string, options: ConnectOptions = {}): Promise<FeedClient> {
  const socket = new WebSocket(
    feedUrl(wsUrl, options.query),
    [...(options.protocols ?? [])],
    clientOptions(options),
  );
  const client = new FeedClient(socket);
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve(client));
    socket.once("unexpected-response", (req, res) => {
      void readRefusal(res).then((refusal) => {
        req.destroy();
        reject(new RefusedError(refusal));
      }, reject);
    });
    void client.closed.then((info) =>
      reject(new Error(`closed before opening: ${info.code} ${info.reason}`)),
    );
  });
}

/** Opens /ws expecting a refusal before the upgrade; resolves with it. */
export async function refusal(wsUrl: string, options: ConnectOptions = {}): Promise<Refusal> {
  try {
    const client = await connectFeed(wsUrl, options);
    client.terminate();
  } catch (err) {
    if (err instanceof RefusedError) return err.refusal;
    throw err;
  }
  throw new Error("the server upgraded the connection instead of refusing it");
}

/** Opens a version-1 connection and waits for its `live` message. */
export async function connectLive(
  wsUrl: string,
  options: ConnectOptions = {},
): Promise<{ client: FeedClient; hello: FeedMessage; live: FeedMessage }> {
  const client = await connectFeed(wsUrl, {
    ...options,
    protocols: options.protocols ?? ["tripwire.v1"],
  });
  const hello = await client.nextOfType("hello");
  const live = await client.nextOfType("live");
  return { client, hello, live };
}

/**
 * Waits until `broadcaster` has at least `count` subscribers: a version-0 connection has
 * no message that says its route subscribed, so this is polled, with a deadline.
 */
export async function subscribers(broadcaster: Broadcaster, count: number): Promise<void> {
  const deadline = Date.now() + defaultTimeoutMs;
  while (broadcaster.size < count) {
    if (Date.now() > deadline) throw new Error(`never ${count} feed subscribers`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
