/**
 * GET /metrics: the server's metrics in the Prometheus text format (docs/metrics.md).
 */
import type { FastifyInstance } from "fastify";
import type { Registry } from "prom-client";
import { createViewerAccessCheck } from "./viewer-access.js";

/** Dependencies of the metrics route. */
export interface MetricsRouteDeps {
  readonly registry: Registry;
  /** Required as `Authorization: Bearer` or `?token=`; empty: /metrics is open. */
  readonly token: string;
}

/** Registers GET /metrics. Scrapes are logged at warn level only, so they do not flood the log. */
export function registerMetricsRoute(app: FastifyInstance, deps: MetricsRouteDeps): void {
  const { registry } = deps;
  // The same token rules as the feed (constant-time, header or query), with one token.
  const checkAccess = createViewerAccessCheck({
    tokens: deps.token === "" ? [] : [deps.token],
    allowedOrigins: [],
  });
  app.get("/metrics", { logLevel: "warn" }, async (req, reply) => {
    const access = checkAccess(req);
    if (!access.ok) {
      reply.code(access.status).header("www-authenticate", "Bearer");
      return {
        error: `${access.error}: expected the value of TRIPWIRE_METRICS_TOKEN as "Authorization: Bearer <token>" or ?token=<token>`,
      };
    }
    const text = await registry.metrics();
    reply.header("content-type", registry.contentType);
    return text;
  });
}
