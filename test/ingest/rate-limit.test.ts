/**
 * The per-host rate limit over the wire: a host over its rate gets ERROR "rate limited"
 * for the excess, which is not stored; other hosts are unaffected.
 */
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

describe("per-host rate limit", () => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    // A burst of 5, then one event per second.
    server = await startServer(database, { hostRateLimit: 1, hostRateBurst: 5 });
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  it("answers a host's events beyond its burst with ERROR rate limited, stores only the ACKed ones, and leaves other hosts alone", async () => {
    const client = server.grpcClient();
    const noisy = await register(client, "noisy-host");
    const quiet = await register(client, "quiet-host");

    const burst = Array.from({ length: 20 }, () => makeEvent(noisy));
    const replies = await streamAll(client, burst);
    const acked = replies.filter((r) => r.type === "ACK").map((r) => r.alertId);
    const limited = replies.filter((r) => r.type === "ERROR");
    expect(replies).toHaveLength(20);
    // 5 from the burst, and at most a few refilled while the stream ran.
    expect(acked.length).toBeGreaterThanOrEqual(5);
    expect(limited.length).toBeGreaterThanOrEqual(10);
    for (const r of limited) expect(r.error).toMatch(/^rate limited: /);

    const quietReplies = await streamAll(client, [
      makeEvent(quiet),
      makeEvent(quiet),
      makeEvent(quiet),
    ]);
    expect(quietReplies.map((r) => r.type)).toEqual(["ACK", "ACK", "ACK"]);

    const rows = await database.rows<{ alert_id: string }>(
      sql`select alert_id::text as alert_id from alerts a join hosts h using (host_id) where h.hostname = 'noisy-host'`,
    );
    expect(rows.map((r) => r.alert_id).sort()).toEqual([...acked].sort());
  });
});
