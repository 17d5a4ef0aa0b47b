/**
 * Which connection a call came on, so that a StreamAlerts stream can be tied to the host
 * its agent registered on the same connection before the stream names the host in an
 * event. A deployed agent registers, then opens its stream on the same HTTP/2
 * connection; a quiet host may send no event for a long time.
 */
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { createContextKey } from "@connectrpc/connect";

/** The call's connection: the HTTP/2 session, or the HTTP/1.1 socket. Compared by identity. */
export const agentConnection = createContextKey<object | undefined>(undefined, {
  description: "the connection (HTTP/2 session or socket) the call came on",
});

/** The connection of a request, for `agentConnection`. */
export function connectionOf(raw: IncomingMessage | Http2ServerRequest): object | undefined {
  if ("stream" in raw && raw.stream !== undefined) return raw.stream.session ?? undefined;
  return raw.socket ?? undefined;
}

/** A host registered on a connection. */
export interface ConnectionHost {
  readonly hostId: string;
  readonly hostname: string;
}

/**
 * The host registered on each connection. A connection on which more than one host
 * registered (a proxy, a simulator) names none: its streams are tied to hosts by their
 * events only. Entries go with their connection (a WeakMap).
 */
export class ConnectionHosts {
  readonly #hosts = new WeakMap<object, ConnectionHost | "several">();

  /** Records that `host` registered on `connection`. */
  registered(connection: object | undefined, host: ConnectionHost): void {
    if (connection === undefined) return;
    const known = this.#hosts.get(connection);
    if (known === undefined || (known !== "several" && known.hostId === host.hostId)) {
      this.#hosts.set(connection, host);
    } else {
      this.#hosts.set(connection, "several");
    }
  }

  /** The one host registered on `connection`, if exactly one did. */
  hostOf(connection: object | undefined): ConnectionHost | undefined {
    if (connection === undefined) return undefined;
    const known = this.#hosts.get(connection);
    return known === "several" ? undefined : known;
  }
}
