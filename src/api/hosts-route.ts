/**
 * GET /api/hosts: every registered host with its liveness, as JSON, under the same
 * access rules as /ws (src/http/viewer-access.ts). A feed client reads it once on
 * connecting; `host_status` messages keep it current afterwards.
 */
import type { FastifyInstance } from "fastify";
import { formatMs, type HostLiveness } from "../hosts/host-liveness.js";
import type { HostStore } from "../hosts/host-store.js";
import type { ViewerAccessCheck } from "../http/viewer-access.js";
import { formatMicros } from "../storage/alert-types.js";

/** Dependencies of the route. */
export interface HostsRouteDeps {
  readonly store: HostStore;
  readonly liveness: HostLiveness;
  readonly checkAccess: ViewerAccessCheck;
}

/** Registers GET /api/hosts. */
export function registerHostsRoute(app: FastifyInstance, deps: HostsRouteDeps): void {
  const { store, liveness, checkAccess } = deps;
  app.get("/api/hosts", async (req, reply) => {
    reply.header("cache-control", "no-store");
    const access = checkAccess(req);
    if (!access.ok) {
      reply.code(access.status);
      return { error: access.error };
    }
    const rows = await store.listHosts();
    return {
      hosts: rows.map((row) => {
        const { status, lastSeenMs } = liveness.statusOf(
          row.hostId,
          Number(row.lastSeenUs / 1000n),
        );
        return {
          host_id: row.hostId,
          hostname: row.hostname,
          platform: row.platform,
          agent_version: row.agentVersion,
          registered_at: formatMicros(row.registeredAtUs),
          // The database's microseconds, unless this instance has seen the host since.
          last_seen:
            lastSeenMs > Number(row.lastSeenUs / 1000n)
              ? formatMs(lastSeenMs)
              : formatMicros(row.lastSeenUs),
          status,
        };
      }),
    };
  });
}
