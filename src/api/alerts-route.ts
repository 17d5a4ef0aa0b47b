/**
 * GET /api/alerts: pages of stored alerts as JSON (README, "History API"), behind the
 * same viewer access check as /ws. Alerts have the shape of the feed's alert object,
 * built by the same code, so a page and a live frame never disagree.
 */
import type { FastifyInstance } from "fastify";
import { createViewerAccessCheck, type ViewerAccessSettings } from "../http/viewer-access.js";
import { FeedParamError, type Query } from "../live/feed-params.js";
import type { Logger } from "../logger.js";
import type { HistoryPage, HistoryStore } from "../storage/history-store.js";
import { type PageLimits, parseAlertsQuery } from "./alerts-query.js";

/** Dependencies of the route. */
export interface AlertsRouteDeps {
  readonly store: HistoryStore;
  /** Pages stop at its watermark, so a feed resumed from `latest_seq` can follow on. */
  readonly feed: { readonly watermark: number };
  readonly access: ViewerAccessSettings;
  readonly limits: PageLimits;
  readonly log: Logger;
}

/** Registers GET /api/alerts. */
export function registerAlertsRoute(app: FastifyInstance, deps: AlertsRouteDeps): void {
  const checkAccess = createViewerAccessCheck(deps.access);
  app.get("/api/alerts", async (req, reply) => {
    reply.header("cache-control", "no-store").type("application/json; charset=utf-8");
    const access = checkAccess(req);
    if (!access.ok) return reply.code(access.status).send({ error: access.error });
    let query: ReturnType<typeof parseAlertsQuery>;
    try {
      query = parseAlertsQuery(req.query as Query, deps.limits);
    } catch (err) {
      if (!(err instanceof FeedParamError)) throw err;
      return reply.code(400).send({ error: err.message });
    }
    let page: HistoryPage;
    try {
      page = await deps.store.page({ ...query, uptoSeq: deps.feed.watermark });
    } catch (err) {
      deps.log.error({ err }, "reading alert history failed");
      return reply.code(503).send({ error: "the alert history cannot be read now; try again" });
    }
    return reply.send(pageJson(page, query.since !== undefined));
  });
}

/** The response body, joining each alert's prebuilt JSON rather than re-serializing it. */
function pageJson(page: HistoryPage, forward: boolean): string {
  let items = "";
  for (let i = 0; i < page.alerts.length; i++) {
    items += i === 0 ? page.alerts[i]?.dataJson : `,${page.alerts[i]?.dataJson}`;
  }
  const last = page.alerts[page.alerts.length - 1];
  const next = page.more && last !== undefined ? String(last.seq) : "null";
  return `{"alerts":[${items}],"${forward ? "next_since" : "next_before"}":${next},"latest_seq":${page.latestSeq}}`;
}
