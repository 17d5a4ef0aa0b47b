/**
 * GET /: the live dashboard page (public/), served from memory. No build step and no
 * CDN: the page works offline.
 */
import { readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";

const publicDir = new URL("../../public/", import.meta.url);

const files: ReadonlyArray<{ route: string; file: string; type: string }> = [
  { route: "/", file: "index.html", type: "text/html; charset=utf-8" },
  { route: "/app.js", file: "app.js", type: "text/javascript; charset=utf-8" },
  { route: "/hosts.js", file: "hosts.js", type: "text/javascript; charset=utf-8" },
  { route: "/app.css", file: "app.css", type: "text/css; charset=utf-8" },
];

/** Registers the dashboard page's routes. */
export function registerDashboardRoutes(app: FastifyInstance): void {
  for (const { route, file, type } of files) {
    const body = readFileSync(new URL(file, publicDir));
    app.get(route, async (_req, reply) => {
      reply
        .type(type)
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header(
          "content-security-policy",
          "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; img-src 'self' data:",
        );
      return body;
    });
  }
}
