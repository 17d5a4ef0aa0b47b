/**
 * The /ws protocol of docs/websocket.md against the real server: versions, replay with
 * `since` and `history`, `reset`, filters and `set_filters`, client message errors and
 * refused query parameters. Alerts come from real gRPC agents and are checked against
 * the database, on every backend.
 */
import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import type { AgentEvent } from "../../src/gen/alert/alert_pb.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import {
  alertsOf,
  type ConnectOptions,
  connectFeed,
  connectLive,
  type FeedAlert,
  type FeedClient,
  type FeedMessage,
  refusal,
  subscribers,
} from "../support/ws-client.js";

/** One stored alert, as the database has it. */
interface Row {
  readonly seq: number;
  readonly alertId: string;
  readonly hostId: string;
  readonly severity: string;
  readonly tripwireType: string;
}

const severityRank: Record<string, number> = { INFO: 0, WARN: 1, CRITICAL: 2 };
const openFilters = { min_severity: null, host_ids: null, tripwire_types: null };

/** The message types a version-1 client may receive. */
const v1Types = new Set([
  "hello",
  "alerts",
  "live",
  "dropped",
  "reset",
  "heartbeat",
  "filters",
  "error",
]);

describe.each(backends)("/ws protocol [%s]", (kind) => {
  let database: TestDatabase | undefined;
  let server: RunningServer | undefined;
  const clients: FeedClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await server?.close();
    server = undefined;
    await database?.dispose();
    database = undefined;
  });

  /** A fresh database and a server over it. */
  async function start(overrides: Partial<Config> = {}): Promise<RunningServer> {
    database = await createTestDatabase(kind);
    server = await startServer(database, { flushIntervalMs: 10, ...overrides });
    return server;
  }

  function running(): RunningServer {
    if (server === undefined) throw new Error("no server");
    return server;
  }

  async function open(options: ConnectOptions = {}): Promise<FeedClient> {
    const client = await connectFeed(running().wsUrl, options);
    clients.push(client);
    return client;
  }

  async function openLive(
    options: ConnectOptions = {},
  ): Promise<{ client: FeedClient; hello: FeedMessage; live: FeedMessage }> {
    const opened = await connectLive(running().wsUrl, options);
    clients.push(opened.client);
    return opened;
  }

  /** Streams `events` from one agent; every one must be ACKed. */
  async function commit(events: readonly AgentEvent[]): Promise<void> {
    const replies = await streamAll(running().grpcClient(), events);
    expect(replies.map((r) => r.type)).toEqual(events.map(() => "ACK"));
  }

  async function stored(): Promise<Row[]> {
    if (database === undefined) throw new Error("no database");
    const rows = await database.rows<{
      seq: string;
      alert_id: string;
      host_id: string;
      severity: string;
      tripwire_type: string;
    }>(
      sql`select seq::text as seq, alert_id::text as alert_id, host_id::text as host_id,
        severity, tripwire_type from alerts order by alerts.seq`,
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      alertId: r.alert_id,
      hostId: r.host_id,
      severity: r.severity,
      tripwireType: r.tripwire_type,
    }));
  }

  /** The newest seq the database has handed out. */
  async function newestSeq(): Promise<number> {
    const rows = await stored();
    return rows.at(-1)?.seq ?? 0;
  }

  /** Messages from index `from` on, as `type` or `type[seq,…]`. */
  function shape(client: FeedClient, from = 0): string[] {
    return client.messages.slice(from).map((m) => {
      if (m.type === "alerts") return `alerts[${(m.items as FeedAlert[]).map((a) => a.seq)}]`;
      if (m.type === "live") return `live:${String(m.seq)}`;
      return m.type;
    });
  }

  /** Events of every host × type × severity, in that order. */
  function grid(hostIds: readonly string[]): AgentEvent[] {
    const events: AgentEvent[] = [];
    for (const hostId of hostIds) {
      for (const tripwireType of ["FILE", "NETWORK", "PROCESS"]) {
        for (const severity of ["INFO", "WARN", "CRITICAL"]) {
          events.push(makeEvent(hostId, { tripwireType, severity }));
        }
      }
    }
    return events;
  }

  it("a version-0 client receives exactly one alert frame with a seq per alert, nothing else, and its own messages are ignored", async () => {
    const srv = await start();
    const hostId = await register(srv.grpcClient());
    const client = await open();
    await subscribers(srv.broadcaster, 1);
    expect(client.socket.protocol).toBe("");
    // None of these may be answered or change what the client receives.
    client.sendJson({ type: "set_filters", min_severity: "CRITICAL" });
    client.send("not json");
    client.send(Buffer.from([1, 2, 3]));

    const events = ["INFO", "WARN", "CRITICAL"].map((severity) => makeEvent(hostId, { severity }));
    await commit(events);
    await client.alertAtLeast(3);
    // A later alert: once it is here, anything the server sent before it is here too.
    const marker = makeEvent(hostId, { severity: "INFO" });
    await commit([marker]);
    await client.alertAtLeast(4);

    expect(client.messages.every((m) => m.type === "alert")).toBe(true);
    expect(client.binary.every((b) => !b)).toBe(true);
    for (const m of client.messages) expect(Object.keys(m).sort()).toEqual(["data", "type"]);
    const rows = await stored();
    expect(client.alerts().map((a) => [a.seq, a.alert_id])).toEqual(
      rows.map((r) => [r.seq, r.alertId]),
    );
    expect(client.alerts().map((a) => a.alert_id)).toEqual(
      [...events, marker].map((e) => e.alertId),
    );
  });

  it.each([
    ["the tripwire.v1 subprotocol", { protocols: ["tripwire.v1"] }, "tripwire.v1"],
    ["the query v=1", { query: { v: "1" } }, ""],
  ] as const)(
    "a version-1 client (chosen by %s) gets hello with the newest committed seq, live, then alerts frames in seq order",
    async (_how, options, protocol) => {
      const srv = await start();
      const hostId = await register(srv.grpcClient());
      await commit([makeEvent(hostId), makeEvent(hostId), makeEvent(hostId)]);
      const newest = await newestSeq();
      expect(newest).toBe(3);

      const client = await open(options);
      expect(client.socket.protocol).toBe(protocol);
      await client.nextOfType("live");
      const hello = client.messages[0] as FeedMessage;
      expect(hello.type).toBe("hello");
      expect(hello.protocol).toBe(1);
      expect(hello.seq).toBe(newest);
      expect(hello.filters).toEqual(openFilters);
      expect(Number.isNaN(Date.parse(String(hello.server_time)))).toBe(false);
      // No replay was asked for: live comes straight after hello, at the same seq.
      expect(shape(client)).toEqual(["hello", `live:${newest}`]);

      const more = Array.from({ length: 5 }, () => makeEvent(hostId));
      await commit(more);
      await client.alertAtLeast(8);
      const liveFrames = client.messages.slice(2);
      expect(liveFrames.every((m) => m.type === "alerts")).toBe(true);
      expect(client.seqs()).toEqual([4, 5, 6, 7, 8]);
      expect(client.alerts().map((a) => a.alert_id)).toEqual(more.map((e) => e.alertId));
    },
  );

  it("since=<seq> replays exactly the stored alerts after it that match the filters, in order, then live, then new alerts (both versions)", async () => {
    const srv = await start();
    const grpc = srv.grpcClient();
    const hostA = await register(grpc);
    const hostB = await register(grpc);
    await commit(grid([hostA, hostB]));
    const rows = await stored();
    expect(rows).toHaveLength(18);

    const all = await openLive({ query: { since: "4" } });
    const warn = await openLive({ query: { since: "4", min_severity: "WARN" } });
    const v0 = await open({ query: { since: "4" } });
    await v0.alertAtLeast(18);

    const after4 = rows.filter((r) => r.seq > 4);
    const after4Warn = after4.filter((r) => r.severity !== "INFO");
    expect(all.hello.seq).toBe(18);
    expect(all.live.seq).toBe(18);
    expect(all.client.seqs()).toEqual(after4.map((r) => r.seq));
    const allShape = shape(all.client);
    expect(allShape[0]).toBe("hello");
    expect(allShape.at(-1)).toBe("live:18");
    expect(allShape.slice(1, -1).every((s) => s.startsWith("alerts["))).toBe(true);
    expect(warn.client.seqs()).toEqual(after4Warn.map((r) => r.seq));
    expect(warn.hello.filters).toEqual({ ...openFilters, min_severity: "WARN" });
    expect(v0.seqs()).toEqual(after4.map((r) => r.seq));

    // Then live: new alerts follow the replay, filtered the same way.
    const replayed = [all, warn].map((c) => c.client.messages.length);
    await commit([makeEvent(hostA, { severity: "INFO" }), makeEvent(hostB, { severity: "WARN" })]);
    await all.client.alertAtLeast(20);
    await warn.client.alertAtLeast(20);
    await v0.alertAtLeast(20);
    const allLive = all.client.messages.slice(replayed[0]);
    expect(allLive.every((m) => m.type === "alerts")).toBe(true);
    expect(allLive.flatMap(alertsOf).map((a) => a.seq)).toEqual([19, 20]);
    expect(shape(warn.client, replayed[1])).toEqual(["alerts[20]"]);
    expect(v0.seqs()).toEqual([...after4.map((r) => r.seq), 19, 20]);
  });

  it("since=<seq> while an agent streams: replay and live together hold every seq above it in the database exactly once, in order", async () => {
    // Small, frequent batches (overlapping commits on PostgreSQL), so alerts commit while
    // each client replays and switches to live; buffers large enough that no client drops.
    const srv = await start({ flushIntervalMs: 2, batchSize: 7, subscriberBuffer: 100_000 });
    const grpc = srv.grpcClient();
    const hostId = await register(grpc);
    let stop = false;
    let sent = 0;
    async function* agent(): AsyncGenerator<AgentEvent> {
      while (!stop) {
        yield makeEvent(hostId);
        sent++;
        // Lets the event loop breathe between bursts; not a wait for a result.
        if (sent % 16 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    }
    const acks = (async () => {
      const types: string[] = [];
      for await (const cmd of grpc.streamAlerts(agent())) types.push(cmd.type);
      return types;
    })();

    const monitor = await openLive();
    await monitor.client.alertAtLeast(40);
    const resumed: Array<{ client: FeedClient; since: number; live: number }> = [];
    const v0: Array<{ client: FeedClient; since: number }> = [];
    for (let i = 0; i < 10; i++) {
      const since = Math.max(0, (monitor.client.seqs().at(-1) ?? 0) - 25);
      const opened = await openLive({ query: { since: String(since) } });
      resumed.push({ client: opened.client, since, live: Number(opened.live.seq) });
      v0.push({ client: await open({ query: { since: String(since) } }), since });
      // Let some alerts commit between one connection and the next.
      await monitor.client.alertAtLeast((monitor.client.seqs().at(-1) ?? 0) + 8);
    }
    const lastLive = Math.max(...resumed.map((r) => r.live));
    await monitor.client.alertAtLeast(lastLive + 30);
    stop = true;
    const types = await acks;
    expect(types.length).toBe(sent);
    expect(types.every((t) => t === "ACK")).toBe(true);

    const rows = await stored();
    const newest = rows.at(-1)?.seq ?? 0;
    for (const r of [...resumed, ...v0]) await r.client.alertAtLeast(newest);
    for (const r of resumed) {
      const expected = rows.filter((row) => row.seq > r.since).map((row) => row.seq);
      expect(r.client.seqs()).toEqual(expected);
      // The switch happened mid-stream: some alerts came from the replay, some live.
      const liveAt = r.client.messages.findIndex((m) => m.type === "live");
      const replayed = r.client.messages.slice(0, liveAt).flatMap(alertsOf);
      expect(replayed.length).toBeGreaterThan(0);
      expect(replayed.length).toBeLessThan(expected.length);
      expect(r.client.messages.every((m) => m.type !== "reset" && m.type !== "dropped")).toBe(true);
    }
    for (const r of v0) {
      expect(r.client.seqs()).toEqual(rows.filter((row) => row.seq > r.since).map((x) => x.seq));
    }
  });

  it("history=N sends the newest N stored alerts matching the filters, then live", async () => {
    const srv = await start();
    const hostId = await register(srv.grpcClient());
    await commit(grid([hostId]));
    const rows = await stored();

    const newest3 = await openLive({ query: { history: "3" } });
    const critical2 = await openLive({ query: { history: "2", min_severity: "CRITICAL" } });
    const more = await openLive({ query: { history: "50" } });
    const v0 = await open({ query: { history: "3" } });
    await v0.alertAtLeast(9);

    expect(shape(newest3.client)).toEqual(["hello", "alerts[7,8,9]", "live:9"]);
    const critical = rows.filter((r) => r.severity === "CRITICAL").map((r) => r.seq);
    expect(critical2.client.seqs()).toEqual(critical.slice(-2));
    expect(more.client.seqs()).toEqual(rows.map((r) => r.seq));
    expect(v0.seqs()).toEqual([7, 8, 9]);
  });

  it("since further behind than the replay limit gets reset replay_limit (version 0: close 4008); since ahead of the feed gets reset cursor_ahead", async () => {
    const srv = await start({ wsReplayLimit: 5 });
    const hostId = await register(srv.grpcClient());
    await commit(Array.from({ length: 10 }, () => makeEvent(hostId)));

    const behind = await openLive({ query: { since: "4" } });
    expect(shape(behind.client)).toEqual(["hello", "reset", "live:10"]);
    expect(behind.client.messages[1]).toEqual({
      type: "reset",
      reason: "replay_limit",
      missed_from_seq: 5,
      seq: 10,
    });
    // Exactly at the limit is still replayed.
    const atLimit = await openLive({ query: { since: "5" } });
    expect(atLimit.client.seqs()).toEqual([6, 7, 8, 9, 10]);
    const ahead = await openLive({ query: { since: "11" } });
    expect(ahead.client.messages[1]).toMatchObject({ type: "reset", reason: "cursor_ahead" });
    expect(ahead.client.seqs()).toEqual([]);

    const v0 = await open({ query: { since: "4" } });
    expect(await v0.closed).toMatchObject({ code: 4008 });
    expect(v0.messages).toEqual([]);

    // After a reset the connection is live like any other.
    await commit([makeEvent(hostId)]);
    await behind.client.alertAtLeast(11);
    await ahead.client.alertAtLeast(11);
    expect(behind.client.seqs()).toEqual([11]);
    expect(ahead.client.seqs()).toEqual([11]);
  });

  it("filters given at connect (min_severity, host_id repeated and comma-separated, tripwire_type) apply to replayed and live alerts", async () => {
    const srv = await start();
    const grpc = srv.grpcClient();
    const hosts = [await register(grpc), await register(grpc), await register(grpc)];
    const [a, b, c] = hosts as [string, string, string];
    await register(grpc); // a host that sends nothing
    const cases: Array<{ query: Record<string, string | string[]>; keep: (r: Row) => boolean }> = [
      { query: { min_severity: "WARN" }, keep: (r) => severityRank[r.severity] !== 0 },
      { query: { min_severity: "INFO" }, keep: () => true },
      // Repeated and comma-separated, upper case allowed (a UUID is case-insensitive).
      { query: { host_id: [a, `${b.toUpperCase()}`] }, keep: (r) => r.hostId !== c },
      { query: { host_id: `${a},${c}` }, keep: (r) => r.hostId !== b },
      {
        query: { tripwire_type: ["NETWORK", "PROCESS"] },
        keep: (r) => r.tripwireType !== "FILE",
      },
      {
        query: { tripwire_type: "FILE,PROCESS", min_severity: "CRITICAL", host_id: b },
        keep: (r) => r.tripwireType !== "NETWORK" && r.severity === "CRITICAL" && r.hostId === b,
      },
    ];

    // Live: connected before the alerts exist.
    const live = [];
    for (const k of cases) live.push(await openLive({ query: k.query }));
    expect(live[0]?.hello.filters).toEqual({ ...openFilters, min_severity: "WARN" });
    expect(live[2]?.hello.filters).toEqual({ ...openFilters, host_ids: [a, b] });
    expect(live[4]?.hello.filters).toEqual({
      ...openFilters,
      tripwire_types: ["NETWORK", "PROCESS"],
    });
    await commit(grid(hosts));
    const rows = await stored();
    expect(rows).toHaveLength(27);
    // Replayed: the same filters on the database.
    const replayed = [];
    for (const k of cases) replayed.push(await openLive({ query: { ...k.query, since: "0" } }));

    for (const [i, k] of cases.entries()) {
      const expected = rows.filter(k.keep).map((r) => r.seq);
      const l = live[i]?.client as FeedClient;
      await l.alertAtLeast(expected.at(-1) ?? 0);
      expect(l.seqs(), `live ${JSON.stringify(k.query)}`).toEqual(expected);
      expect(replayed[i]?.client.seqs(), `replayed ${JSON.stringify(k.query)}`).toEqual(expected);
    }
  });

  it("set_filters is answered with filters, and every alert after the answer follows the new filter", async () => {
    const srv = await start();
    const grpc = srv.grpcClient();
    const hostA = await register(grpc);
    const hostB = await register(grpc);
    const { client } = await openLive();

    const warn1 = makeEvent(hostA, { severity: "WARN" });
    await commit([warn1]);
    await client.next((m) => m.type === "alerts");

    client.sendJson({ type: "set_filters", min_severity: "CRITICAL" });
    const answer1 = await client.nextOfType("filters");
    expect(answer1.filters).toEqual({ ...openFilters, min_severity: "CRITICAL" });
    const from1 = client.messages.indexOf(answer1);
    const warn2 = makeEvent(hostA, { severity: "WARN" });
    const crit2 = makeEvent(hostA, { severity: "CRITICAL" });
    await commit([warn2, crit2]);
    // In seq order: once the CRITICAL one is here, the WARN one before it had its chance.
    await client.next((m) => alertsOf(m).some((a) => a.alert_id === crit2.alertId), from1);

    // Omitted fields clear that part of the filter.
    client.sendJson({ type: "set_filters", host_ids: [hostB], tripwire_types: ["PROCESS"] });
    const answer2 = await client.nextOfType("filters", from1 + 1);
    expect(answer2.filters).toEqual({
      min_severity: null,
      host_ids: [hostB],
      tripwire_types: ["PROCESS"],
    });
    const from2 = client.messages.indexOf(answer2);
    const third = [
      makeEvent(hostA, { severity: "CRITICAL", tripwireType: "PROCESS" }),
      makeEvent(hostB, { severity: "INFO", tripwireType: "FILE" }),
      makeEvent(hostB, { severity: "INFO", tripwireType: "PROCESS" }),
    ];
    await commit(third);
    await client.next((m) => alertsOf(m).some((a) => a.alert_id === third[2]?.alertId), from2);

    client.sendJson({
      type: "set_filters",
      min_severity: null,
      host_ids: null,
      tripwire_types: null,
    });
    const answer3 = await client.nextOfType("filters", from2 + 1);
    expect(answer3.filters).toEqual(openFilters);
    const from3 = client.messages.indexOf(answer3);
    const last = makeEvent(hostA, { severity: "INFO", tripwireType: "NETWORK" });
    await commit([last]);
    await client.next((m) => alertsOf(m).some((a) => a.alert_id === last.alertId), from3);

    expect(client.alerts().map((x) => x.alert_id)).toEqual([
      warn1.alertId,
      crit2.alertId,
      third[2]?.alertId,
      last.alertId,
    ]);
    expect(shape(client)).toEqual([
      "hello",
      "live:0",
      "alerts[1]",
      "filters",
      "alerts[3]",
      "filters",
      "alerts[6]",
      "filters",
      "alerts[7]",
    ]);
  });

  it("a message the server does not understand is answered with error and the connection stays open with its filter", async () => {
    const srv = await start();
    const hostId = await register(srv.grpcClient());
    const { client } = await openLive({ query: { min_severity: "WARN" } });

    const bad: Array<[string | Buffer, RegExp]> = [
      [JSON.stringify({ type: "set_filters", min_severity: "LOUD" }), /min_severity/],
      [JSON.stringify({ type: "set_filters", host_ids: ["not-a-uuid"] }), /host_id/],
      [JSON.stringify({ type: "set_filters", host_ids: "not-an-array" }), /host_ids/],
      [JSON.stringify({ type: "set_filters", tripwire_types: ["USB"] }), /tripwire_type/],
      [JSON.stringify({ type: "subscribe" }), /set_filters/],
      ["[1,2]", /set_filters/],
      ["not json", /JSON/],
      [Buffer.from(JSON.stringify({ type: "set_filters" })), /text/],
    ];
    let from = client.messages.length;
    for (const [message, pattern] of bad) {
      client.send(message);
      const answer = await client.next(() => true, from);
      expect(answer.type, String(message)).toBe("error");
      expect(String(answer.error)).toMatch(pattern);
      from = client.messages.length;
    }

    // Still open, still filtering at WARN.
    await commit([
      makeEvent(hostId, { severity: "INFO" }),
      makeEvent(hostId, { severity: "WARN" }),
    ]);
    await client.alertAtLeast(2);
    expect(client.seqs()).toEqual([2]);
    expect(client.messages.filter((m) => m.type === "error")).toHaveLength(bad.length);
    expect(client.messages.filter((m) => m.type === "filters")).toHaveLength(0);
    expect(client.messages.every((m) => v1Types.has(m.type))).toBe(true);
  });

  describe("refused query parameters", () => {
    let shared: RunningServer | undefined;
    let sharedDatabase: TestDatabase | undefined;
    beforeAll(async () => {
      sharedDatabase = await createTestDatabase(kind);
      shared = await startServer(sharedDatabase, { wsReplayLimit: 5 });
    });
    afterAll(async () => {
      await shared?.close();
      await sharedDatabase?.dispose();
    });

    it.each([
      ["since=abc", { since: "abc" }, /since/],
      ["since=-1", { since: "-1" }, /since/],
      ["min_severity=LOUD", { min_severity: "LOUD" }, /min_severity/],
      ["host_id=not-a-uuid", { host_id: "not-a-uuid" }, /host_id/],
      ["host_id with one bad UUID in a list", { host_id: `${randomUUID()},nope` }, /host_id/],
      ["tripwire_type=USB", { tripwire_type: "USB" }, /tripwire_type/],
      ["v=2", { v: "2" }, /\bv\b/],
      ["history above the replay limit", { history: "6" }, /history/],
    ] as const)(
      "%s is refused with HTTP 400 before the upgrade, with a JSON body naming it",
      async (_name, query, pattern) => {
        const srv = shared as RunningServer;
        const answer = await refusal(srv.wsUrl, { query, protocols: ["tripwire.v1"] });
        expect(answer.status).toBe(400);
        expect(answer.contentType).toMatch(/^application\/json/);
        expect(String((answer.body as { error?: unknown }).error)).toMatch(pattern);
        expect(srv.broadcaster.size).toBe(0);
      },
    );

    it("history at the replay limit is accepted", async () => {
      const srv = shared as RunningServer;
      const { client, hello } = await connectLive(srv.wsUrl, { query: { history: "5" } });
      client.terminate();
      expect(hello.protocol).toBe(1);
    });
  });
});
