/**
 * Who may read GET /api/hosts: the same tokens and Origin allow-list as /ws, with the
 * same JSON refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { register } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

describe("GET /api/hosts access", () => {
  let database: TestDatabase;
  let server: RunningServer;

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    server = await startServer(database, {
      wsTokens: ["s3cret", "other"],
      wsAllowedOrigins: ["https://soc.example.com"],
    });
    await register(server.grpcClient(), "web-01");
  });
  afterAll(async () => {
    await server?.close();
    await database?.dispose();
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${server.baseUrl}${path}`, { headers });

  it("refuses a request without a token with 401 and says a token is required", async () => {
    const res = await get("/api/hosts");
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: "a token is required" });
  });

  it("refuses a wrong token, in the header or the query, with 401", async () => {
    for (const res of [
      await get("/api/hosts", { authorization: "Bearer nope" }),
      await get("/api/hosts?token=nope"),
    ]) {
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: "the token is not valid" });
    }
  });

  it("refuses a browser from another origin with 403, even with a good token", async () => {
    const res = await get("/api/hosts", {
      authorization: "Bearer s3cret",
      origin: "https://evil.example",
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ error: "origin https://evil.example is not allowed" });
  });

  it("answers a good token, as a bearer header or as ?token= for browsers, with the hosts", async () => {
    for (const res of [
      await get("/api/hosts", { authorization: "Bearer s3cret" }),
      await get("/api/hosts?token=other", { origin: "https://soc.example.com" }),
    ]) {
      expect(res.status).toBe(200);
      const body = (await res.json()) as { hosts: Array<{ hostname: string; status: string }> };
      expect(body.hosts.map((h) => [h.hostname, h.status])).toEqual([["web-01", "ONLINE"]]);
    }
  });
});
