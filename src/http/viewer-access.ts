/**
 * Who may read alerts: the check shared by the WebSocket feed (/ws) and the JSON API
 * (/api/*). With tokens configured, a request must carry one (`Authorization: Bearer`,
 * or `?token=` for browsers, which cannot set headers on a WebSocket); with an Origin
 * allow-list, a browser request from another origin is refused.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";

/** The viewer settings: both come from TRIPWIRE_WS_TOKENS and TRIPWIRE_WS_ALLOWED_ORIGINS. */
export interface ViewerAccessSettings {
  /** Accepted tokens; empty: reading is open to anyone who can reach the port. */
  readonly tokens: readonly string[];
  /** Accepted Origin headers; empty: any. */
  readonly allowedOrigins: readonly string[];
}

/** The outcome of a check: admitted (with the token's key when tokens are on) or refused. */
export type ViewerAccess =
  | { readonly ok: true; readonly tokenKey: string | undefined }
  | { readonly ok: false; readonly status: 401 | 403; readonly error: string };

/** Checks one request against the settings. */
export type ViewerAccessCheck = (req: FastifyRequest) => ViewerAccess;

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

/** Builds the check once; tokens are compared by SHA-256 digest in constant time. */
export function createViewerAccessCheck(settings: ViewerAccessSettings): ViewerAccessCheck {
  const tokenDigests = settings.tokens.map(digest);
  return (req) => {
    const origin = req.headers.origin;
    if (
      settings.allowedOrigins.length > 0 &&
      origin !== undefined &&
      !settings.allowedOrigins.includes(origin)
    ) {
      return { ok: false, status: 403, error: `origin ${origin} is not allowed` };
    }
    if (tokenDigests.length === 0) return { ok: true, tokenKey: undefined };
    const fromQuery = (req.query as Record<string, unknown> | undefined)?.token;
    const header = req.headers.authorization;
    const token = header?.startsWith("Bearer ")
      ? header.slice(7).trim()
      : typeof fromQuery === "string"
        ? fromQuery
        : undefined;
    if (token === undefined) return { ok: false, status: 401, error: "a token is required" };
    const given = digest(token);
    if (!tokenDigests.some((d) => timingSafeEqual(d, given))) {
      return { ok: false, status: 401, error: "the token is not valid" };
    }
    return { ok: true, tokenKey: given.toString("hex") };
  };
}
