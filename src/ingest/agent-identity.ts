/**
 * Who is calling the AlertService: the identity the TLS layer established for the
 * connection, and the per-call decision whether it is enough.
 *
 * The TLS layer asks every client for a certificate but lets a handshake without one (or
 * with one it could not verify) go through, because browsers on the same port have none.
 * So the AlertService checks each call: in `require` mode only a verified certificate
 * passes; in `optional` mode a call without a certificate passes too; a certificate that
 * was presented and failed verification never passes.
 */
import type { TLSSocket } from "node:tls";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextKey,
  createContextValues,
} from "@connectrpc/connect";

/**
 * The CN of the connection's verified client certificate, set by the transport when
 * TLS with client authentication is on. When present it is the agent's hostname.
 */
export const verifiedClientCn = createContextKey<string | undefined>(undefined, {
  description: "CN of the verified client certificate",
});

/**
 * Why the certificate the client presented was not accepted (OpenSSL's verification
 * error, e.g. CERT_HAS_EXPIRED), or undefined when it presented none or it was verified.
 */
export const rejectedClientCertificate = createContextKey<string | undefined>(undefined, {
  description: "verification error of the presented client certificate",
});

/**
 * Whether agents must authenticate with a client certificate: `off` (no client CA
 * configured: nobody is asked), `optional` or `require`.
 */
export type ClientAuthMode = "off" | "optional" | "require";

/** What the TLS layer knows about the peer of a request's socket. */
export type PeerIdentity =
  | { readonly kind: "none" }
  | { readonly kind: "verified"; readonly cn: string }
  | { readonly kind: "rejected"; readonly reason: string };

/**
 * Reads the peer's certificate status from the request's socket (a TLSSocket, or the
 * HTTP/2 compatibility proxy of one); cleartext sockets have none.
 */
export function peerIdentity(socket: Partial<TLSSocket> | null | undefined): PeerIdentity {
  if (socket?.encrypted !== true || typeof socket.getPeerCertificate !== "function") {
    return { kind: "none" };
  }
  const cert = socket.getPeerCertificate();
  // Without a certificate Node returns an empty object (and authorized is false).
  if (cert === null || Object.keys(cert).length === 0) return { kind: "none" };
  if (socket.authorized !== true) {
    const error = socket.authorizationError;
    return { kind: "rejected", reason: error === undefined ? "not verified" : String(error) };
  }
  const cn = cert.subject?.CN;
  // A CN can be repeated in a subject; Node then gives an array, which names no one host.
  if (typeof cn !== "string" || cn === "") {
    return { kind: "rejected", reason: "the certificate has no single subject CN" };
  }
  return { kind: "verified", cn };
}

/** The context values of a call on `socket`: the transport's side of the seam. */
export function peerContextValues(socket: Partial<TLSSocket> | null | undefined): ContextValues {
  const values = createContextValues();
  const peer = peerIdentity(socket);
  if (peer.kind === "verified") values.set(verifiedClientCn, peer.cn);
  if (peer.kind === "rejected") values.set(rejectedClientCertificate, peer.reason);
  return values;
}

/**
 * Decides whether a call may proceed: returns the verified CN (the agent's hostname), or
 * undefined for an anonymous call that `mode` allows; throws Unauthenticated otherwise.
 */
export function authenticateAgent(values: ContextValues, mode: ClientAuthMode): string | undefined {
  const cn = values.get(verifiedClientCn);
  if (cn !== undefined) return cn;
  if (mode === "off") return undefined;
  const rejected = values.get(rejectedClientCertificate);
  if (rejected !== undefined) {
    throw new ConnectError(
      `client certificate rejected (${rejected}): it must be issued by the agents' CA ` +
        "(TRIPWIRE_TLS_CLIENT_CA) and be valid now",
      Code.Unauthenticated,
    );
  }
  if (mode === "require") {
    throw new ConnectError(
      "a client certificate is required: connect over TLS with a certificate issued by the " +
        "agents' CA (TRIPWIRE_TLS_CLIENT_CA)",
      Code.Unauthenticated,
    );
  }
  return undefined;
}
