/**
 * Host liveness against the real server: `hosts.last_seen` written in batches, ONLINE and
 * OFFLINE from streams and silence, `host_status` messages for version-1 /ws clients
 * only, the log, and GET /api/hosts.
 */
import { Writable } from "node:stream";
import { type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { afterEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import type { Database } from "../../src/storage/database.js";
import { makeEvent, register } from "../support/agent.js";
import { type OpenStream, openStream } from "../support/agent-stream.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import {
  connectFeed,
  connectLive,
  type FeedClient,
  type FeedMessage,
  subscribers,
} from "../support/ws-client.js";

/** A Database that counts the statements that write `hosts.last_seen` in batches. */
function countingLastSeenWrites(database: Database): { database: Database; writes: () => number } {
  const dialect = new PgDialect();
  let writes = 0;
  const wrapped: Database = {
    // Every other member as it is (the database's methods do not use `this`).
    ...database,
    rows<T>(query: SQL): Promise<T[]> {
      if (/^\s*update hosts\b/i.test(dialect.sqlToQuery(query).sql)) writes++;
      return database.rows<T>(query);
    },
  };
  return { database: wrapped, writes: () => writes };
}

/** Log lines written by a server, parsed. */
function logRecorder(): { stream: Writable; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  let partial = "";
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      partial += chunk.toString();
      const complete = partial.split("\n");
      partial = complete.pop() ?? "";
      for (const line of complete) if (line !== "") lines.push(JSON.parse(line));
      callback();
    },
  });
  return { stream, lines };
}

async function storedLastSeenMs(database: Database, hostId: string): Promise<number> {
  const rows = await database.rows<{ ms: string }>(
    sql`select floor(extract(epoch from last_seen) * 1000)::bigint::text as ms from hosts where host_id = ${hostId}::uuid`,
  );
  return Number(rows[0]?.ms);
}

interface ApiHost {
  host_id: string;
  hostname: string;
  platform: string;
  agent_version: string;
  registered_at: string;
  last_seen: string;
  status: string;
}

async function apiHosts(server: RunningServer): Promise<ApiHost[]> {
  const res = await fetch(`${server.baseUrl}/api/hosts`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { hosts: ApiHost[] }).hosts;
}

async function apiStatus(server: RunningServer, hostId: string): Promise<string | undefined> {
  return (await apiHosts(server)).find((h) => h.host_id === hostId)?.status;
}

/** The host_status messages a client received for `hostId`. */
function statusMessages(client: FeedClient, hostId: string): FeedMessage[] {
  return client.hostStatuses.filter((m) => (m.data as { host_id: string }).host_id === hostId);
}

/** The statuses a client received for `hostId`, in order. */
function statuses(client: FeedClient, hostId: string): string[] {
  return statusMessages(client, hostId).map((m) => (m.data as { status: string }).status);
}

/** Resolves with the `n`th (from 1) host_status message for `hostId`. */
function nthStatus(client: FeedClient, hostId: string, n: number): Promise<FeedMessage> {
  return client.until(() => statusMessages(client, hostId)[n - 1], `host_status #${n}`);
}

/** Resolves once `condition()` holds; for states that no message announces. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("gave up waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe.each(backends)("host liveness [%s]", (kind) => {
  let database: TestDatabase | undefined;
  let server: RunningServer | undefined;
  const clients: FeedClient[] = [];
  const streams: OpenStream[] = [];

  async function start(overrides: Partial<Config>, db?: (d: Database) => Database) {
    database = await createTestDatabase(kind);
    server = await startServer(db === undefined ? database : db(database), {
      flushIntervalMs: 10,
      ...overrides,
    });
    return server;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await Promise.all(streams.splice(0).map((s) => s.end().catch(() => {})));
    await server?.close();
    server = undefined;
    await database?.dispose();
    database = undefined;
  });

  it("stream activity moves last_seen forward in one UPDATE per flush for every host, not one per event", async () => {
    let counter: ReturnType<typeof countingLastSeenWrites> | undefined;
    // No timer flush during the test: the test flushes.
    const srv = await start({ hostSeenFlushMs: 600_000, hostOfflineAfterMs: 1_200_000 }, (d) => {
      counter = countingLastSeenWrites(d);
      return counter.database;
    });
    const writes = () => counter?.writes() ?? -1;
    const stored = () => database as TestDatabase;
    const client = srv.grpcClient();
    const web = await register(client, "web-01");
    const db = await register(client, "db-01");
    const registeredAt = Math.max(
      await storedLastSeenMs(stored(), web),
      await storedLastSeenMs(stored(), db),
    );

    const streamWeb = openStream(client);
    const streamDb = openStream(client);
    streams.push(streamWeb, streamDb);
    const events = (hostId: string) => Array.from({ length: 150 }, () => makeEvent(hostId));
    const replies = await Promise.all([
      streamWeb.sendAll(events(web)),
      streamDb.sendAll(events(db)),
    ]);
    expect(replies.flat().filter((r) => r.type === "ACK")).toHaveLength(300);
    const lastEventAt = Date.now();
    // 300 events, no write yet: events only touch memory.
    expect(writes()).toBe(0);
    expect(await storedLastSeenMs(stored(), web)).toBeLessThanOrEqual(registeredAt);

    await srv.liveness.flush();
    expect(writes()).toBe(1);
    for (const hostId of [web, db]) {
      const seen = await storedLastSeenMs(stored(), hostId);
      expect(seen).toBeGreaterThan(registeredAt);
      expect(seen).toBeLessThanOrEqual(lastEventAt);
    }

    // Nothing seen since: no statement at all.
    await srv.liveness.flush();
    expect(writes()).toBe(1);
  });

  it("a host is ONLINE when it registers or its stream opens and OFFLINE when its stream closes; version-1 clients get each change, version-0 clients only alerts, and each change is logged", async () => {
    const log = logRecorder();
    database = await createTestDatabase(kind);
    server = await startServer(
      database,
      { flushIntervalMs: 10, hostOfflineAfterMs: 1_200_000, hostSeenFlushMs: 600_000 },
      { logger: { level: "info", stream: log.stream } },
    );
    const srv = server;
    const v1 = (await connectLive(srv.wsUrl)).client;
    const v0 = await connectFeed(srv.wsUrl);
    clients.push(v1, v0);
    await subscribers(srv.broadcaster, 2);
    const client = srv.grpcClient();

    const hostId = await register(client, "web-01");
    const online = await nthStatus(v1, hostId, 1);
    expect(online.data).toEqual({
      host_id: hostId,
      hostname: "web-01",
      status: "ONLINE",
      last_seen: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/),
    });
    expect(await apiStatus(srv, hostId)).toBe("ONLINE");

    const first = openStream(client);
    streams.push(first);
    expect((await first.send(makeEvent(hostId))).type).toBe("ACK");
    await first.end();
    const offline = await nthStatus(v1, hostId, 2);
    expect((offline.data as { status: string }).status).toBe("OFFLINE");
    expect(await apiStatus(srv, hostId)).toBe("OFFLINE");

    const second = openStream(client);
    streams.push(second);
    expect((await second.send(makeEvent(hostId))).type).toBe("ACK");
    await nthStatus(v1, hostId, 3);
    expect(statuses(v1, hostId)).toEqual(["ONLINE", "OFFLINE", "ONLINE"]);
    expect(await apiStatus(srv, hostId)).toBe("ONLINE");

    // Version 0 is the wire contract: alert frames and nothing else.
    await v0.until(() => (v0.alerts().length >= 2 ? true : undefined), "two alerts");
    expect(v0.messages.map((m) => m.type)).toEqual(["alert", "alert"]);
    expect(v0.hostStatuses).toEqual([]);

    const changes = log.lines
      .filter((l) => l.msg === "host online" || l.msg === "host offline")
      .map((l) => [l.msg, l.hostname, l.hostId, l.reason]);
    expect(changes).toEqual([
      ["host online", "web-01", hostId, "registered"],
      ["host offline", "web-01", hostId, "stream closed"],
      ["host online", "web-01", hostId, "stream opened"],
    ]);
  });

  it("a host silent past the offline time turns OFFLINE and comes back ONLINE when it streams again, while a quiet host with an open stream stays ONLINE", async () => {
    const offlineAfter = 300;
    const srv = await start({ hostSeenFlushMs: 50, hostOfflineAfterMs: offlineAfter });
    const v1 = (await connectLive(srv.wsUrl)).client;
    clients.push(v1);
    const client = srv.grpcClient();

    const quietHost = await register(client, "quiet-but-connected");
    const quiet = openStream(client);
    streams.push(quiet);
    expect((await quiet.send(makeEvent(quietHost))).type).toBe("ACK");

    // Registered, then nothing: OFFLINE once the sweep finds it silent.
    const silentHost = await register(client, "silent");
    await nthStatus(v1, silentHost, 1);
    const offline = await nthStatus(v1, silentHost, 2);
    expect((offline.data as { status: string }).status).toBe("OFFLINE");
    expect(await apiStatus(srv, silentHost)).toBe("OFFLINE");
    // It was silent for at least the offline time (by the time it last sent).
    const lastSeen = Date.parse((offline.data as { last_seen: string }).last_seen);
    expect(lastSeen).toBeLessThanOrEqual(Date.now() - offlineAfter);

    // It resumes.
    const resumed = openStream(client);
    streams.push(resumed);
    expect((await resumed.send(makeEvent(silentHost))).type).toBe("ACK");
    await nthStatus(v1, silentHost, 3);
    expect(statuses(v1, silentHost)).toEqual(["ONLINE", "OFFLINE", "ONLINE"]);

    // The quiet host sent once, long enough ago to be silent, but its stream is open.
    expect(statuses(v1, quietHost)).toEqual(["ONLINE"]);
    expect(await apiStatus(srv, quietHost)).toBe("ONLINE");
  });

  it("a stream that has sent nothing yet keeps the host registered on its connection ONLINE past the offline time, and closing it turns the host OFFLINE", async () => {
    const offlineAfter = 300;
    const srv = await start({ hostSeenFlushMs: 50, hostOfflineAfterMs: offlineAfter });
    const v1 = (await connectLive(srv.wsUrl)).client;
    clients.push(v1);
    // One client: RegisterAgent and StreamAlerts share its HTTP/2 connection, as an agent's do.
    const agent = srv.grpcClient();
    const hostId = await register(agent, "quiet-01");
    const stream = openStream(agent);
    streams.push(stream);
    const quietSince = Date.now();
    await nthStatus(v1, hostId, 1);

    await until(() => Date.now() - quietSince > 3 * offlineAfter);
    const sweeps = srv.liveness.sweeps;
    await until(() => srv.liveness.sweeps >= sweeps + 2);
    expect(statuses(v1, hostId)).toEqual(["ONLINE"]);
    expect(await apiStatus(srv, hostId)).toBe("ONLINE");

    await stream.end();
    expect((await nthStatus(v1, hostId, 2)).data).toMatchObject({ status: "OFFLINE" });
  });

  it("GET /api/hosts lists every host with its registration, last_seen and status", async () => {
    const srv = await start({});
    const client = srv.grpcClient();
    const res = await client.registerAgent({
      hostname: "db-01",
      platform: "linux",
      agentVersion: "1.4.2",
    });
    const other = await register(client, "app-01");
    const stream = openStream(client);
    streams.push(stream);
    await stream.send(makeEvent(other));
    await stream.end();

    const http = await fetch(`${srv.baseUrl}/api/hosts`);
    expect(http.headers.get("content-type")).toMatch(/^application\/json/);
    expect(http.headers.get("cache-control")).toBe("no-store");
    const { hosts } = (await http.json()) as { hosts: ApiHost[] };
    const iso = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(hosts).toEqual([
      {
        host_id: other,
        hostname: "app-01",
        platform: "linux",
        agent_version: "test",
        registered_at: iso,
        last_seen: iso,
        status: "OFFLINE",
      },
      {
        host_id: res.hostId,
        hostname: "db-01",
        platform: "linux",
        agent_version: "1.4.2",
        registered_at: iso,
        last_seen: iso,
        status: "ONLINE",
      },
    ]);
  });
});
