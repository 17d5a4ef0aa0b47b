/**
 * Host liveness with two instances on one PostgreSQL database and Redis: the instance
 * that holds a host's stream decides, the other follows over Redis, and silence is
 * judged on the shared last_seen.
 */
import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import { type Database, openDatabase } from "../../src/storage/database.js";
import { makeEvent, register } from "../support/agent.js";
import { type OpenStream, openStream } from "../support/agent-stream.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { redisTargets, testRedisUrl } from "../support/services.js";
import { connectLive, type FeedClient } from "../support/ws-client.js";

const postgresRedisTargets = process.env.TEST_DATABASE_URL === undefined ? [] : redisTargets;

/** Resolves once `condition()` holds; for states that no message announces. */
async function until(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function statuses(client: FeedClient, hostId: string): string[] {
  return client.hostStatuses
    .filter((m) => (m.data as { host_id: string }).host_id === hostId)
    .map((m) => (m.data as { status: string }).status);
}

/** Resolves once `client` has received `count` host_status messages for `hostId`. */
function statusCount(client: FeedClient, hostId: string, count: number): Promise<string[]> {
  return client.until(() => {
    const s = statuses(client, hostId);
    return s.length >= count ? s : undefined;
  }, `${count} host_status messages`);
}

async function apiStatus(server: RunningServer, hostId: string): Promise<string | undefined> {
  const res = await fetch(`${server.baseUrl}/api/hosts`);
  const { hosts } = (await res.json()) as { hosts: Array<{ host_id: string; status: string }> };
  return hosts.find((h) => h.host_id === hostId)?.status;
}

describe.each(postgresRedisTargets)("host liveness on two instances [%s]", () => {
  let database: TestDatabase;
  /** The second instance's own pool on the same database. */
  let other: Database;
  const servers: RunningServer[] = [];
  const clients: FeedClient[] = [];
  const streams: OpenStream[] = [];

  function settings(overrides: Partial<Config> = {}): Partial<Config> {
    return {
      redisUrl: testRedisUrl,
      redisChannel: `tripwire:test:${randomUUID()}`,
      flushIntervalMs: 10,
      ...overrides,
    };
  }

  async function watch(server: RunningServer): Promise<FeedClient> {
    const { client } = await connectLive(server.wsUrl);
    clients.push(client);
    return client;
  }

  beforeEach(async () => {
    database = await createTestDatabase("postgres");
    other = await openDatabase({ url: database.url as string, poolSize: 5 });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await Promise.all(streams.splice(0).map((s) => s.end().catch(() => {})));
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await other?.close();
    await database?.dispose();
  });

  it("a host streaming to one instance turns ONLINE and OFFLINE for the version-1 clients and the API of the other", async () => {
    const shared = settings({ hostSeenFlushMs: 600_000, hostOfflineAfterMs: 1_200_000 });
    const a = await startServer(database, shared);
    const b = await startServer(other, shared);
    servers.push(a, b);
    const onB = await watch(b);
    const agent = a.grpcClient();

    const hostId = await register(agent, "web-01");
    await statusCount(onB, hostId, 1);
    expect(await apiStatus(b, hostId)).toBe("ONLINE");

    const stream = openStream(agent);
    streams.push(stream);
    expect((await stream.send(makeEvent(hostId))).type).toBe("ACK");
    await stream.end();
    await statusCount(onB, hostId, 2);
    expect(await apiStatus(b, hostId)).toBe("OFFLINE");

    const again = openStream(agent);
    streams.push(again);
    expect((await again.send(makeEvent(hostId))).type).toBe("ACK");
    expect(await statusCount(onB, hostId, 3)).toEqual(["ONLINE", "OFFLINE", "ONLINE"]);
    const last = onB.hostStatuses.at(-1);
    expect(last?.data).toMatchObject({ host_id: hostId, hostname: "web-01", status: "ONLINE" });
    expect(await apiStatus(b, hostId)).toBe("ONLINE");
  });

  it("when a host's stream on one instance closes while it still streams to the other, that other instance says it is ONLINE again", async () => {
    const shared = settings({ hostSeenFlushMs: 600_000, hostOfflineAfterMs: 1_200_000 });
    const a = await startServer(database, shared);
    const b = await startServer(other, shared);
    servers.push(a, b);
    const onA = await watch(a);
    const onB = await watch(b);

    const hostId = await register(a.grpcClient(), "two-streams-01");
    await statusCount(onB, hostId, 1);
    const toA = openStream(a.grpcClient());
    const toB = openStream(b.grpcClient());
    streams.push(toA, toB);
    expect((await toA.send(makeEvent(hostId))).type).toBe("ACK");
    expect((await toB.send(makeEvent(hostId))).type).toBe("ACK");

    await toB.end();
    expect(await statusCount(onB, hostId, 3)).toEqual(["ONLINE", "OFFLINE", "ONLINE"]);
    expect(await apiStatus(b, hostId)).toBe("ONLINE");
    // A held a stream throughout: its clients never saw the host go.
    expect(statuses(onA, hostId)).toEqual(["ONLINE"]);
  });

  it("the other instance does not take a quiet host whose stream the first holds for silent, and turns it OFFLINE once the first stops", async () => {
    const offlineAfter = 300;
    const shared = settings({
      hostSeenFlushMs: 50,
      hostOfflineAfterMs: offlineAfter,
      shutdownTimeoutMs: 1_000,
    });
    const a = await startServer(database, shared);
    const b = await startServer(other, shared);
    servers.push(a, b);
    const onB = await watch(b);
    const agent = a.grpcClient();

    const hostId = await register(agent, "quiet-01");
    const stream = openStream(agent);
    streams.push(stream);
    expect((await stream.send(makeEvent(hostId))).type).toBe("ACK");
    const quietSince = Date.now();
    await statusCount(onB, hostId, 1);

    // Several silence checks on B after the host has been quiet for the offline time.
    await until("B checked for silence well after the offline time", () => {
      return Date.now() - quietSince > 3 * offlineAfter;
    });
    const sweeps = b.liveness.sweeps;
    await until("B checked twice more", () => b.liveness.sweeps >= sweeps + 2);
    expect(statuses(onB, hostId)).toEqual(["ONLINE"]);
    expect(await apiStatus(b, hostId)).toBe("ONLINE");

    // A stops: its streams end without deciding OFFLINE (the agent would reconnect to
    // another instance), so B notices the silence on the shared last_seen.
    await a.close();
    expect(await statusCount(onB, hostId, 2)).toEqual(["ONLINE", "OFFLINE"]);
    expect(await apiStatus(b, hostId)).toBe("OFFLINE");
  });
});
