/**
 * The dashboard page (public/) in real headless Chromium, against the real server: agents
 * stream over gRPC with the simulator, the page speaks version 1 of /ws, and what it
 * shows is compared with what the database holds.
 */
// The functions given to page.evaluate and friends run in the page: type them with the DOM.
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
import { writeFile } from "node:fs/promises";
import { type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import {
  type Browser,
  type BrowserContext,
  chromium,
  type Page,
  type WebSocket as PageWebSocket,
} from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type AgentStats,
  makeRealisticEvent,
  type Rng,
  runSimulatedAgent,
  startSimulatedAgent,
} from "../../src/cli/simulated-agent.js";
import type { Config } from "../../src/config.js";
import type { Database } from "../../src/storage/database.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { browserTargets, testChromiumPath } from "../support/services.js";

const screenshotPath = new URL("../../docs/dashboard.png", import.meta.url);
/** Set to re-render docs/dashboard.png from the screenshot test. */
const updateScreenshot = process.env.TRIPWIRE_UPDATE_SCREENSHOT === "1";
const waitMs = 20_000;
const testMs = 60_000;

/** One alert as stored, read independently of the server's feed code. */
interface StoredRow {
  readonly seq: number;
  readonly alertId: string;
  readonly hostId: string;
  readonly hostname: string;
  readonly severity: string;
  readonly tripwireType: string;
  readonly ruleName: string;
  readonly timestampMs: number;
  readonly eventDetail: unknown;
}

/** Every stored alert, in seq order. */
async function storedAlerts(database: Database): Promise<StoredRow[]> {
  const rows = await database.rows<{
    seq: string;
    alert_id: string;
    host_id: string;
    hostname: string;
    severity: string;
    tripwire_type: string;
    rule_name: string;
    ts_ms: string;
    event_detail: string;
  }>(sql`
    select a.seq::text as seq, a.alert_id::text as alert_id, a.host_id::text as host_id,
      h.hostname, a.severity, a.tripwire_type, a.rule_name,
      floor(extract(epoch from a.timestamp) * 1000)::bigint::text as ts_ms,
      a.event_detail::text as event_detail
    from alerts a join hosts h on h.host_id = a.host_id
    order by a.seq`);
  return rows.map((r) => ({
    seq: Number(r.seq),
    alertId: r.alert_id,
    hostId: r.host_id,
    hostname: r.hostname,
    severity: r.severity,
    tripwireType: r.tripwire_type,
    ruleName: r.rule_name,
    timestampMs: Number(r.ts_ms),
    eventDetail: JSON.parse(r.event_detail) as unknown,
  }));
}

/** A seeded generator (mulberry32), so a mix of severities and types is the same every run. */
function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Runs one simulated agent over gRPC to the end and checks every event was stored. */
async function runAgent(
  server: RunningServer,
  hostname: string,
  count: number,
  seed: number,
): Promise<AgentStats> {
  const stats = await runSimulatedAgent({
    client: server.grpcClient(),
    hostname,
    rate: 0,
    durationMs: 0,
    count,
    rng: seededRng(seed),
  });
  expect(stats.failure).toBeUndefined();
  expect(stats.acked).toBe(count);
  return stats;
}

/** A WebSocket the page opened, with every frame it sent and received. */
interface PageSocket {
  readonly ws: PageWebSocket;
  readonly url: URL;
  readonly sent: string[];
  readonly received: string[];
}

/** What the page's observer recorded (see `recorder`). */
interface Recorded {
  /** Every value #state took, in order. */
  readonly states: string[];
  /** Every notice shown, in order. */
  readonly notices: { kind: string; text: string }[];
  /** Every alert row ever added to the table, in order. */
  readonly added: { seq: number; severity: string; type: string }[];
}

/**
 * Runs in the page before its scripts: records every state, notice and added row, so a
 * test sees transitions that a later look at the DOM would miss.
 */
function recorder(): void {
  const rec: Recorded = { states: [], notices: [], added: [] };
  (window as unknown as { rec: Recorded }).rec = rec;
  let lastNotice = "";
  new MutationObserver((records) => {
    for (const r of records) {
      const target = r.target as Element;
      if (r.type === "attributes" && target.id === "state") {
        rec.states.push(r.oldValue ?? "");
      } else if (r.type === "childList" && target.id === "alerts") {
        for (const node of r.addedNodes) {
          const el = node as HTMLElement;
          if (el.classList?.contains("alert")) {
            rec.added.push({
              seq: Number(el.dataset.seq),
              severity: el.dataset.severity ?? "",
              type: el.dataset.type ?? "",
            });
          }
        }
      }
    }
    const notice = document.getElementById("notice");
    if (notice !== null && !notice.hidden && notice.textContent !== lastNotice) {
      lastNotice = notice.textContent ?? "";
      rec.notices.push({ kind: notice.dataset.kind ?? "", text: lastNotice });
    }
  }).observe(document, {
    subtree: true,
    childList: true,
    characterData: true,
    attributes: true,
    attributeOldValue: true,
    attributeFilter: ["data-state", "data-kind", "hidden"],
  });
}

/** The dashboard open in a browser tab, and ways to look at it. */
interface Dashboard {
  readonly page: Page;
  readonly sockets: PageSocket[];
  /** Every GET /api/alerts the page made, in order. */
  readonly apiRequests: URL[];
  /** Uncaught errors and console errors (other than refused connections). */
  readonly errors: string[];
  /** data-seq of every alert row, top to bottom. */
  rowSeqs(): Promise<number[]>;
  /** data-seq of the rows a user can see, top to bottom. */
  visibleSeqs(): Promise<number[]>;
  /** What the recorder saw; states end with the current one. */
  recorded(): Promise<Recorded>;
  /** Resolves once the row of `seq` is in the table. */
  waitForRow(seq: number): Promise<void>;
  /** Resolves once #state is `state`. */
  waitForState(state: string): Promise<void>;
}

async function openDashboard(context: BrowserContext, server: RunningServer): Promise<Dashboard> {
  const page = await context.newPage();
  const sockets: PageSocket[] = [];
  const apiRequests: URL[] = [];
  const errors: string[] = [];
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.pathname === "/api/alerts") apiRequests.push(url);
  });
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => {
    // Chromium logs each refused WebSocket connection; the restart test causes those.
    if (msg.type() === "error" && !msg.text().includes("WebSocket connection to"))
      errors.push(msg.text());
  });
  page.on("websocket", (ws: PageWebSocket) => {
    const socket: PageSocket = { ws, url: new URL(ws.url()), sent: [], received: [] };
    sockets.push(socket);
    ws.on("framesent", (f) => socket.sent.push(String(f.payload)));
    ws.on("framereceived", (f) => socket.received.push(String(f.payload)));
  });
  await page.addInitScript(recorder);
  await page.goto(server.baseUrl);
  const dashboard: Dashboard = {
    page,
    sockets,
    apiRequests,
    errors,
    rowSeqs: () =>
      page.$$eval("#alerts tr.alert", (rows) =>
        rows.map((r) => Number((r as HTMLElement).dataset.seq)),
      ),
    visibleSeqs: () =>
      page.$$eval("#alerts tr.alert", (rows) =>
        rows.filter((r) => r.checkVisibility()).map((r) => Number((r as HTMLElement).dataset.seq)),
      ),
    recorded: () =>
      page.evaluate(() => {
        const rec = (window as unknown as { rec: Recorded }).rec;
        const state = document.getElementById("state")?.dataset.state ?? "";
        return { ...rec, states: [...rec.states, state] };
      }),
    waitForRow: (seq) =>
      page.locator(`#alerts tr.alert[data-seq="${seq}"]`).waitFor({
        state: "attached",
        timeout: waitMs,
      }),
    waitForState: (state) =>
      page.locator(`#state[data-state="${state}"]`).waitFor({ state: "attached", timeout: waitMs }),
  };
  await dashboard.waitForState("live");
  return dashboard;
}

/** Parsed JSON messages of a socket's received frames. */
function messages(socket: PageSocket | undefined): { type: string; [k: string]: unknown }[] {
  return (socket?.received ?? []).map((f) => JSON.parse(f) as { type: string });
}

/** Whether `values` (e.g. states) contains `sequence` as a subsequence. */
function hasInOrder(values: readonly string[], sequence: readonly string[]): boolean {
  let i = 0;
  for (const v of values) if (v === sequence[i]) i++;
  return i === sequence.length;
}

/**
 * A Database whose next feed replay read (of a connection resuming with `since`) can be
 * held: the test then commits alerts while that connection is still replaying, as a slow
 * or busy server would.
 */
function withHeldReplay(database: Database): {
  database: Database;
  holdNextReplay(): { reached: Promise<void>; release(): void };
} {
  const dialect = new PgDialect();
  let hold: { reached: () => void; released: Promise<void> } | undefined;
  const wrapped: Database = {
    kind: database.kind,
    db: database.db,
    ping: () => database.ping(),
    close: () => database.close(),
    session: (work) => database.session(work),
    async rows<T>(query: SQL): Promise<T[]> {
      const h = hold;
      if (h !== undefined && /order by a\.seq limit/i.test(dialect.sqlToQuery(query).sql)) {
        hold = undefined;
        h.reached();
        await h.released;
      }
      return database.rows<T>(query);
    },
  };
  return {
    database: wrapped,
    holdNextReplay() {
      let reached = (): void => {};
      let release = (): void => {};
      const reachedP = new Promise<void>((resolve) => {
        reached = resolve;
      });
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      hold = { reached, released };
      return { reached: reachedP, release };
    },
  };
}

// Chromium is only needed for the suites below; this one always runs.
describe.each(backends)("the dashboard over HTTP [%s]", (kind) => {
  let database: TestDatabase;
  let server: RunningServer | undefined;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("serves the page, its script and its stylesheet with their types, no-cache and a CSP that allows no inline code", async () => {
    server = await startServer(database);
    const expected: Record<string, string> = {
      "/": "text/html",
      "/app.js": "text/javascript",
      "/app.css": "text/css",
    };
    for (const [path, type] of Object.entries(expected)) {
      const res = await fetch(`${server.baseUrl}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(new RegExp(`^${type}`));
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      const csp = res.headers.get("content-security-policy") ?? "";
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain("unsafe-inline");
    }
    const html = await (await fetch(server.baseUrl)).text();
    expect(html).toContain('<script src="/app.js" type="module"></script>');
    expect(html).toContain('<link rel="stylesheet" href="/app.css">');
    // Offline: nothing is loaded from anywhere but this server.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
  });
});

describe.each(browserTargets)("the dashboard page in headless Chromium [%s]", () => {
  let browser: Browser;

  beforeAll(async () => {
    // launch() gives every run a fresh temporary profile (user data dir) and removes it.
    browser = await chromium.launch({
      executablePath: testChromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  describe.each(backends)("on %s", (kind) => {
    let database: TestDatabase | undefined;
    let context: BrowserContext | undefined;
    const servers: RunningServer[] = [];
    const stops: AbortController[] = [];

    async function setUp(overrides: Partial<Config> = {}, db?: Database) {
      database = await createTestDatabase(kind);
      context = await browser.newContext({
        viewport: { width: 1280, height: 800 },
        locale: "en-GB",
        timezoneId: "UTC",
      });
      const server = await startServer(db ?? database, {
        flushIntervalMs: 20,
        shutdownTimeoutMs: 2_000,
        ...overrides,
      });
      servers.push(server);
      return { database, context, server };
    }

    afterEach(async () => {
      for (const stop of stops.splice(0)) stop.abort();
      await context?.close();
      context = undefined;
      for (const server of servers.splice(0)) await server.close();
      await database?.dispose();
      database = undefined;
    });

    it(
      "shows exactly the stored alerts, newest first, with severity colours, host, type, rule and time, and expands a row's detail on click",
      async () => {
        const { database, context, server } = await setUp();
        const dash = await openDashboard(context, server);
        expect(await dash.rowSeqs()).toEqual([]);
        expect(await dash.page.textContent("#empty")).toBe("No alerts yet.");

        await Promise.all([
          runAgent(server, "web-01", 40, 1),
          runAgent(server, "db-01", 40, 2),
          runAgent(server, "bastion", 40, 3),
        ]);
        const stored = await storedAlerts(database);
        expect(stored).toHaveLength(120);
        await dash.waitForRow((stored.at(-1) as StoredRow).seq);

        const rows = await dash.page.$$eval("#alerts tr.alert", (trs) =>
          trs.map((tr) => {
            const cells = [...tr.querySelectorAll("td")].map((td) => td.textContent ?? "");
            const sev = tr.querySelector(".sev") as HTMLElement;
            return {
              seq: Number((tr as HTMLElement).dataset.seq),
              sevClass: sev.className,
              sevColour: getComputedStyle(sev).backgroundColor,
              cells,
              datetime: tr.querySelector("time")?.dateTime ?? "",
            };
          }),
        );
        const newestFirst = [...stored].reverse();
        expect(rows.map((r) => r.seq)).toEqual(newestFirst.map((a) => a.seq));
        for (const [i, row] of rows.entries()) {
          const a = newestFirst[i] as StoredRow;
          expect(row.sevClass).toBe(`sev sev-${a.severity}`);
          expect(row.cells[0]).toBe(a.severity);
          expect(row.cells[2]).toBe(a.hostname);
          expect(row.cells[3]).toBe(a.tripwireType);
          expect(row.cells[4]).toBe(a.ruleName);
          expect(row.cells[5]).toBe(String(a.seq));
          expect(Date.parse(row.datetime)).toBe(a.timestampMs);
          // Shown in the browser's zone (UTC here) and locale.
          expect(row.cells[1]).toContain(new Date(a.timestampMs).toISOString().slice(11, 19));
        }
        // One colour per severity, and CRITICAL in the palette's red.
        const colours = new Map(rows.map((r) => [r.cells[0], r.sevColour]));
        expect([...colours.keys()].sort()).toEqual(["CRITICAL", "INFO", "WARN"]);
        expect(new Set(colours.values()).size).toBe(3);
        expect(colours.get("CRITICAL")).toBe("rgb(239, 68, 68)");
        expect(await dash.page.textContent("#counts")).toBe("120 received · 120 shown");

        // Clicking a row opens its detail right below it; clicking again closes it.
        const target = newestFirst[4] as StoredRow;
        const row = dash.page.locator(`#alerts tr.alert[data-seq="${target.seq}"]`);
        await row.click();
        const detail = await dash.page.$eval(
          `#alerts tr.alert[data-seq="${target.seq}"] + tr.detail pre`,
          (pre) => pre.textContent ?? "",
        );
        expect(JSON.parse(detail)).toMatchObject({
          alert_id: target.alertId,
          host_id: target.hostId,
          event_detail: target.eventDetail,
        });
        await row.click();
        expect(await dash.page.locator("#alerts tr.detail").count()).toBe(0);

        const rec = await dash.recorded();
        expect(rec.states.at(-1)).toBe("live");
        expect(rec.states).not.toContain("reconnecting");
        expect(await dash.page.textContent("#state")).toBe("live");
        expect(rec.notices).toEqual([]);
        expect(dash.sockets).toHaveLength(1);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "reconnects by itself when the server restarts mid-stream and ends with every stored alert exactly once",
      async () => {
        const { database, context, server } = await setUp();
        const dash = await openDashboard(context, server);

        const stop = new AbortController();
        stops.push(stop);
        const first = startSimulatedAgent({
          client: server.grpcClient(),
          hostname: "web-01",
          rate: 200,
          durationMs: 0,
          signal: stop.signal,
          rng: seededRng(4),
        });
        // The page has seen part of the stream when the server goes away under it.
        await dash.page.locator("#alerts tr.alert").nth(19).waitFor({ timeout: waitMs });
        await server.close();
        servers.splice(servers.indexOf(server), 1);
        const firstStats = await first.done;
        expect(firstStats.acked).toBeGreaterThan(0);
        await dash.waitForState("reconnecting");

        const restarted = await startServer(database, {
          port: server.port,
          flushIntervalMs: 20,
          shutdownTimeoutMs: 2_000,
        });
        servers.push(restarted);
        await runAgent(restarted, "db-01", 60, 5);
        await dash.waitForState("live");

        const stored = await storedAlerts(database);
        expect(stored.length).toBeGreaterThanOrEqual(firstStats.acked + 60);
        await dash.waitForRow((stored.at(-1) as StoredRow).seq);
        const seqs = await dash.rowSeqs();
        expect(seqs).toEqual(stored.map((a) => a.seq).reverse());
        expect(new Set(seqs).size).toBe(seqs.length);

        const rec = await dash.recorded();
        // No row was ever added twice, not even for a moment.
        const added = rec.added.map((a) => a.seq);
        expect(new Set(added).size).toBe(added.length);
        expect(hasInOrder(rec.states, ["live", "reconnecting", "live"])).toBe(true);
        const resumed = rec.notices.find((n) => n.kind === "resumed");
        expect(resumed?.text).toMatch(/Reconnected: resumed from seq \d+/);
        // Every connection after the first resumed from what the page had.
        expect(dash.sockets.length).toBeGreaterThanOrEqual(2);
        // The first one followed the (empty) first page from the API.
        expect(dash.apiRequests).toHaveLength(1);
        expect(dash.sockets[0]?.url.searchParams.get("since")).toBe("0");
        for (const s of dash.sockets.slice(1)) expect(s.url.searchParams.has("since")).toBe(true);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "filters on the server after a filter change: hidden rows stay out of sight and no later non-matching alert reaches the page",
      async () => {
        const { database, context, server } = await setUp();
        const dash = await openDashboard(context, server);
        await runAgent(server, "web-01", 60, 6);
        const before = await storedAlerts(database);
        await dash.waitForRow((before.at(-1) as StoredRow).seq);

        const wanted = (a: { severity: string; tripwireType: string }) =>
          a.severity === "CRITICAL" && a.tripwireType !== "NETWORK";
        const socket = dash.sockets[0] as PageSocket;
        const answer = JSON.stringify({
          type: "filters",
          filters: {
            min_severity: "CRITICAL",
            host_ids: null,
            tripwire_types: ["FILE", "PROCESS"],
          },
        });
        const answered = socket.ws.waitForEvent("framereceived", {
          predicate: (f) => f.payload === answer,
          timeout: waitMs,
        });
        await dash.page.selectOption("#min-severity", "CRITICAL");
        await dash.page.uncheck('input[name="tripwire_type"][value="NETWORK"]');
        await answered;
        const sent = socket.sent.map((f) => JSON.parse(f) as Record<string, unknown>);
        expect(sent.at(-1)).toEqual({
          type: "set_filters",
          min_severity: "CRITICAL",
          host_ids: null,
          tripwire_types: ["FILE", "PROCESS"],
        });
        // What was already there: only matching rows remain visible.
        expect(await dash.visibleSeqs()).toEqual(
          before
            .filter(wanted)
            .map((a) => a.seq)
            .reverse(),
        );
        const addedBefore = (await dash.recorded()).added.length;
        const answeredAt = socket.received.indexOf(answer);
        expect(answeredAt).toBeGreaterThan(0);

        await runAgent(server, "db-01", 200, 7);
        // A matching alert after the mix: once its row is there, the mix has been sent.
        const client = server.grpcClient();
        const hostId = await register(client, "db-01");
        await streamAll(client, [
          makeEvent(hostId, { severity: "CRITICAL", tripwireType: "FILE" }),
        ]);
        const all = await storedAlerts(database);
        const mix = all.filter((a) => a.seq > (before.at(-1) as StoredRow).seq);
        expect(mix.some((a) => !wanted(a))).toBe(true);
        await dash.waitForRow((all.at(-1) as StoredRow).seq);

        const rec = await dash.recorded();
        const addedAfter = rec.added.slice(addedBefore);
        // (A batch is added newest first.)
        expect(addedAfter.map((a) => a.seq).sort((a, b) => a - b)).toEqual(
          mix.filter(wanted).map((a) => a.seq),
        );
        // The server filtered: no frame after its answer carried a non-matching alert.
        const later = messages(socket).slice(answeredAt + 1);
        const items = later
          .filter((m) => m.type === "alerts")
          .flatMap((m) => m.items as { severity: string; tripwire_type: string }[]);
        expect(items.length).toBe(mix.filter(wanted).length);
        for (const item of items) {
          expect(wanted({ severity: item.severity, tripwireType: item.tripwire_type })).toBe(true);
        }
        expect(await dash.visibleSeqs()).toEqual(
          all
            .filter(wanted)
            .map((a) => a.seq)
            .reverse(),
        );
        expect(dash.sockets).toHaveLength(1);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "shows that alerts were missed when the server drops them for the tab, then recovers them by resuming with since",
      async () => {
        database = await createTestDatabase(kind);
        const held = withHeldReplay(database);
        // One buffered batch per subscriber: a second batch during the replay is dropped.
        const { context, server } = await setUpWith(held.database, { subscriberBuffer: 1 });
        await runAgent(server, "web-01", 10, 8);

        // The first page reaches the tab late: three alerts commit after the server
        // answered it, so the tab's feed replays them from the page's latest_seq.
        let answered = (): void => {};
        const pageAnswered = new Promise<void>((resolve) => {
          answered = resolve;
        });
        let deliver = (): void => {};
        const delivered = new Promise<void>((resolve) => {
          deliver = resolve;
        });
        await context.route(
          "**/api/alerts?*",
          async (route) => {
            const response = await route.fetch();
            answered();
            await delivered;
            await route.fulfill({ response });
          },
          { times: 1 },
        );
        const opening = openDashboard(context, server);
        await pageAnswered;
        await runAgent(server, "web-01", 3, 13);
        const seeded = await storedAlerts(database);
        const hold = held.holdNextReplay();
        deliver();
        await hold.reached;
        // The tab's connection is subscribed and still replaying: two commits arrive.
        await runAgent(server, "db-01", 3, 9);
        await runAgent(server, "bastion", 3, 10);
        hold.release();
        const dash = await opening;

        const all = await storedAlerts(database);
        expect(all).toHaveLength(19);
        await dash.page
          .locator('#notice[data-kind="recovered"]')
          .waitFor({ state: "attached", timeout: waitMs });
        expect(server.broadcaster.drops.buffer_full).toBeGreaterThan(0);
        const rec = await dash.recorded();
        const dropped = rec.notices.find((n) => n.kind === "dropped");
        expect(dropped?.text).toMatch(/missed \d+ alert\(s\) \(seq \d+–\d+\); recovering them/);
        const droppedMsg = messages(dash.sockets[0]).find((m) => m.type === "dropped");
        expect(droppedMsg).toBeDefined();
        expect(rec.notices.at(-1)?.text).toMatch(/Recovered after falling behind/);

        // The first connection followed the page; the next resumed from the last alert it
        // had before the gap, and got all of them.
        expect(dash.sockets[0]?.url.searchParams.get("since")).toBe(String(seeded[9]?.seq));
        const lastSeeded = (seeded.at(-1) as StoredRow).seq;
        expect(dash.sockets[1]?.url.searchParams.get("since")).toBe(String(lastSeeded));
        await dash.waitForRow((all.at(-1) as StoredRow).seq);
        const seqs = await dash.rowSeqs();
        expect(seqs).toEqual(all.map((a) => a.seq).reverse());
        const added = rec.added.map((a) => a.seq);
        expect(new Set(added).size).toBe(added.length);
        expect(hasInOrder(rec.states, ["live", "reconnecting", "live"])).toBe(true);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "loads the newest alerts from /api/alerts, then follows the feed from that page's latest_seq with nothing replayed, missed or doubled",
      async () => {
        const { database, context, server } = await setUp();
        await runAgent(server, "web-01", 250, 14);
        const seeded = await storedAlerts(database);
        const dash = await openDashboard(context, server);
        const newest = (seeded.at(-1) as StoredRow).seq;

        expect(dash.apiRequests.map((u) => u.searchParams.toString())).toEqual(["limit=200"]);
        expect(await dash.rowSeqs()).toEqual(
          seeded
            .slice(-200)
            .map((a) => a.seq)
            .reverse(),
        );
        // The feed starts where the page ends: no replay, so no alerts before `live`.
        const socket = dash.sockets[0] as PageSocket;
        expect(socket.url.searchParams.get("since")).toBe(String(newest));
        expect(socket.url.searchParams.has("history")).toBe(false);
        const types = messages(socket).map((m) => m.type);
        expect(types.slice(0, 2)).toEqual(["hello", "live"]);

        await runAgent(server, "db-01", 30, 15);
        const all = await storedAlerts(database);
        await dash.waitForRow((all.at(-1) as StoredRow).seq);
        expect(await dash.rowSeqs()).toEqual(
          all
            .slice(-230)
            .map((a) => a.seq)
            .reverse(),
        );
        const added = (await dash.recorded()).added.map((a) => a.seq);
        expect(new Set(added).size).toBe(added.length);
        expect(await dash.page.textContent("#counts")).toBe("230 received · 230 shown");
        expect(await dash.page.isVisible("#older")).toBe(true);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "loads older pages with the Older alerts control back to the first alert, never holding more than 500 rows, then returns to the latest",
      async () => {
        const { database, context, server } = await setUp();
        await runAgent(server, "web-01", 650, 16);
        const seeded = await storedAlerts(database);
        const seqs = seeded.map((a) => a.seq);
        /** seqs of seeded[from..to) newest first, as rows show them. */
        const rowsOf = (from: number, to: number) => seqs.slice(from, to).reverse();
        const dash = await openDashboard(context, server);
        expect(await dash.rowSeqs()).toEqual(rowsOf(450, 650));

        const older = dash.page.locator("#older");
        const clickOlder = async (oldest: number) => {
          await older.click();
          await dash.waitForRow(seqs[oldest] as number);
          await dash.page
            .locator("#older:not([disabled])")
            .or(dash.page.locator("#older[hidden]"))
            .waitFor({ state: "attached", timeout: waitMs });
        };
        await clickOlder(350);
        expect(await dash.rowSeqs()).toEqual(rowsOf(350, 650));
        expect(dash.apiRequests.at(-1)?.searchParams.toString()).toBe(
          `before=${seqs[450]}&limit=100`,
        );
        await clickOlder(250);
        await clickOlder(150);
        expect(await dash.rowSeqs()).toEqual(rowsOf(150, 650));
        expect(await dash.page.isHidden("#latest")).toBe(true);
        // Past 500 rows the newest make room, and the way back to them appears.
        await clickOlder(50);
        expect(await dash.rowSeqs()).toEqual(rowsOf(50, 550));
        expect(await dash.page.isVisible("#latest")).toBe(true);
        await clickOlder(0);
        expect(await dash.rowSeqs()).toEqual(rowsOf(0, 500));
        expect(await dash.page.isHidden("#older")).toBe(true);
        expect(await dash.page.textContent("#older-status")).toBe("No older alerts.");

        // Live alerts meanwhile are counted, not shown among the old rows.
        await runAgent(server, "db-01", 5, 17);
        await dash.page
          .locator("#latest", { hasText: "Back to latest (5 newer)" })
          .waitFor({ timeout: waitMs });
        expect(await dash.rowSeqs()).toEqual(rowsOf(0, 500));

        await dash.page.click("#latest");
        const all = await storedAlerts(database);
        await dash.waitForRow((all.at(-1) as StoredRow).seq);
        await dash.waitForState("live");
        expect(await dash.rowSeqs()).toEqual(
          all
            .slice(-200)
            .map((a) => a.seq)
            .reverse(),
        );
        expect(await dash.page.isHidden("#latest")).toBe(true);
        expect(await dash.page.isVisible("#older")).toBe(true);
        expect(dash.apiRequests.at(-1)?.searchParams.toString()).toBe("limit=200");
        expect(dash.sockets.at(-1)?.url.searchParams.get("since")).toBe(
          String((all.at(-1) as StoredRow).seq),
        );
        const rec = await dash.recorded();
        expect(rec.notices).toEqual([]);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "keeps at most 500 rows, the newest, even when the oldest row is expanded",
      async () => {
        const { database, context, server } = await setUp();
        await runAgent(server, "web-01", 5, 11);
        const dash = await openDashboard(context, server);
        await dash.page.locator("#alerts tr.alert").nth(4).waitFor({ timeout: waitMs });
        await dash.page.locator("#alerts tr.alert").last().click();
        expect(await dash.page.locator("#alerts tr.detail").count()).toBe(1);

        await runAgent(server, "db-01", 700, 12);
        const stored = await storedAlerts(database);
        expect(stored).toHaveLength(705);
        await dash.waitForRow((stored.at(-1) as StoredRow).seq);
        const seqs = await dash.rowSeqs();
        expect(seqs).toEqual(
          stored
            .slice(-500)
            .map((a) => a.seq)
            .reverse(),
        );
        // The expanded oldest row went with its detail.
        expect(await dash.page.locator("#alerts tr.detail").count()).toBe(0);
        expect(await dash.page.textContent("#counts")).toBe("705 received · 500 shown");
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    it(
      "renders a realistic feed from three hosts legibly at 1280×800 with a row expanded",
      async () => {
        const { context, server } = await setUp();
        const client = server.grpcClient();
        const rng = seededRng(4);
        const now = Date.now();
        const hosts = ["web-01", "db-primary", "bastion"];
        const ids = await Promise.all(hosts.map((h) => register(client, h)));
        // Three dozen alerts over the last four minutes, oldest first.
        const events = Array.from({ length: 36 }, (_, i) => {
          const event = makeRealisticEvent(ids[i % 3] as string, rng);
          event.timestampUs = BigInt(now - (36 - i) * 6_500 - Math.floor(rng() * 3000)) * 1000n;
          return event;
        });
        for (const event of events) await streamAll(client, [event]);
        const dash = await openDashboard(context, server);
        await dash.page.locator("#alerts tr.alert").nth(35).waitFor({ timeout: waitMs });
        await dash.page.locator('#alerts tr.alert[data-severity="CRITICAL"]').first().click();

        const layout = await dash.page.evaluate(() => {
          const detail = document.querySelector("#alerts tr.detail") as HTMLElement;
          const box = detail.getBoundingClientRect();
          return {
            scrollWidth: document.documentElement.scrollWidth,
            detailVisible: box.top >= 0 && box.bottom <= window.innerHeight,
            hosts: [...(document.getElementById("host") as HTMLSelectElement).options].map(
              (o) => o.textContent,
            ),
          };
        });
        expect(layout.scrollWidth).toBeLessThanOrEqual(1280);
        expect(layout.detailVisible).toBe(true);
        expect(layout.hosts).toEqual(["all hosts", "bastion", "db-primary", "web-01"]);
        const png = await dash.page.screenshot({ type: "png" });
        expect(png.subarray(1, 4).toString()).toBe("PNG");
        if (updateScreenshot && kind === "pglite") await writeFile(screenshotPath, png);
        expect(dash.errors).toEqual([]);
      },
      testMs,
    );

    async function setUpWith(db: Database, overrides: Partial<Config>) {
      context = await browser.newContext({
        viewport: { width: 1280, height: 800 },
        locale: "en-GB",
        timezoneId: "UTC",
      });
      const server = await startServer(db, {
        flushIntervalMs: 20,
        shutdownTimeoutMs: 2_000,
        ...overrides,
      });
      servers.push(server);
      return { context, server };
    }
  });
});
