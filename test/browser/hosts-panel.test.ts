/**
 * The dashboard's hosts panel in real headless Chromium: loaded from GET /api/hosts, then
 * kept current by `host_status` messages as agents stream, stop and fall silent.
 */
/// <reference lib="dom" />
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import { makeEvent, register } from "../support/agent.js";
import { type OpenStream, openStream } from "../support/agent-stream.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { browserTargets, testChromiumPath } from "../support/services.js";

const waitMs = 20_000;

/** Resolves once the panel shows `hostname` with `status`. */
async function hostShows(page: Page, hostname: string, status: string): Promise<void> {
  await page
    .locator(`#hosts li.host[data-hostname="${hostname}"][data-status="${status}"]`)
    .waitFor({ state: "visible", timeout: waitMs });
}

/** Every status the panel showed for `hostname`, in order (recorded in the page). */
async function shownStatuses(page: Page, hostname: string): Promise<string[]> {
  return page.evaluate(
    (name) => (window as unknown as { seen: Record<string, string[]> }).seen[name] ?? [],
    hostname,
  );
}

/** Runs in the page before its scripts: records every status each host row takes. */
function statusRecorder(): void {
  const seen: Record<string, string[]> = {};
  (window as unknown as { seen: Record<string, string[]> }).seen = seen;
  new MutationObserver(() => {
    for (const li of document.querySelectorAll<HTMLElement>("#hosts li.host")) {
      const name = li.dataset.hostname ?? "";
      const status = li.dataset.status ?? "";
      const list = seen[name] ?? [];
      seen[name] = list;
      if (list.at(-1) !== status) list.push(status);
    }
  }).observe(document, { subtree: true, childList: true, attributes: true });
}

describe.each(browserTargets)("the hosts panel in headless Chromium [%s]", () => {
  let browser: Browser;

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: testChromiumPath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  describe.each(backends)("on %s", (kind) => {
    let database: TestDatabase | undefined;
    let context: BrowserContext | undefined;
    let server: RunningServer | undefined;
    const streams: OpenStream[] = [];

    async function setUp(overrides: Partial<Config>) {
      database = await createTestDatabase(kind);
      context = await browser.newContext({ locale: "en-GB", timezoneId: "UTC" });
      server = await startServer(database, {
        flushIntervalMs: 20,
        shutdownTimeoutMs: 1_000,
        ...overrides,
      });
      return { context, server };
    }

    async function openPage(ctx: BrowserContext, srv: RunningServer, query = ""): Promise<Page> {
      const page = await ctx.newPage();
      const errors: string[] = [];
      page.on("pageerror", (err) => errors.push(err.message));
      await page.addInitScript(statusRecorder);
      await page.goto(`${srv.baseUrl}/${query}`);
      await page.locator('#state[data-state="live"]').waitFor({ timeout: waitMs });
      expect(errors).toEqual([]);
      return page;
    }

    afterEach(async () => {
      await Promise.all(streams.splice(0).map((s) => s.end().catch(() => {})));
      await context?.close();
      context = undefined;
      await server?.close();
      server = undefined;
      await database?.dispose();
      database = undefined;
    });

    it("shows the hosts registered before the page opened, then a host going OFFLINE when its stream closes and ONLINE when it streams again", async () => {
      const { context, server } = await setUp({
        hostSeenFlushMs: 600_000,
        hostOfflineAfterMs: 1_200_000,
      });
      const agent = server.grpcClient();
      const before = await register(agent, "db-01");
      const page = await openPage(context, server);
      await hostShows(page, "db-01", "ONLINE");
      expect(await page.textContent("#hosts-summary")).toBe("1 online · 0 offline");
      expect(await page.isHidden("#hosts-empty")).toBe(true);
      expect(before).toMatch(/^[0-9a-f-]{36}$/);

      const hostId = await register(agent, "web-01");
      await hostShows(page, "web-01", "ONLINE");
      const first = openStream(agent);
      streams.push(first);
      expect((await first.send(makeEvent(hostId))).type).toBe("ACK");
      await first.end();
      await hostShows(page, "web-01", "OFFLINE");
      expect(await page.textContent("#hosts-summary")).toBe("1 online · 1 offline");

      const second = openStream(agent);
      streams.push(second);
      expect((await second.send(makeEvent(hostId))).type).toBe("ACK");
      await hostShows(page, "web-01", "ONLINE");
      expect(await shownStatuses(page, "web-01")).toEqual(["ONLINE", "OFFLINE", "ONLINE"]);
      // Sorted by hostname.
      expect(
        await page.$$eval("#hosts li.host", (lis) =>
          lis.map((li) => (li as HTMLElement).dataset.hostname),
        ),
      ).toEqual(["db-01", "web-01"]);
    });

    it("shows a registered host that stays silent going OFFLINE, with its token when the feed needs one", async () => {
      const { context, server } = await setUp({
        hostSeenFlushMs: 50,
        hostOfflineAfterMs: 300,
        wsTokens: ["s3cret"],
      });
      // Registered before the page opens: only GET /api/hosts (with the token) shows it.
      await register(server.grpcClient(), "early-01");
      const page = await openPage(context, server, "?token=s3cret");
      await page
        .locator('#hosts li.host[data-hostname="early-01"]')
        .waitFor({ state: "attached", timeout: waitMs });
      await register(server.grpcClient(), "silent-01");
      await hostShows(page, "silent-01", "OFFLINE");
      expect(await shownStatuses(page, "silent-01")).toEqual(["ONLINE", "OFFLINE"]);
      const silent = page.locator('#hosts li.host[data-hostname="silent-01"]');
      expect(await silent.locator(".status").textContent()).toBe("OFFLINE");
      expect(await silent.locator("time").textContent()).toMatch(/^last seen /);
    });
  });
});
