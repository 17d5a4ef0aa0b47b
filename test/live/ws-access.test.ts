/**
 * Who may open /ws (docs/websocket.md): access tokens, allowed origins, the warning
 * logged when the feed is open, and the limit on client message size. Every refusal is
 * an HTTP answer before the upgrade, seen by a real `ws` client.
 */
import { Writable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import {
  type ConnectOptions,
  connectFeed,
  connectLive,
  type FeedClient,
  refusal,
} from "../support/ws-client.js";

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

const openFeedWarning = /open to anyone.*TRIPWIRE_WS_TOKENS/;

describe("/ws access", () => {
  // Nothing here reads alerts back from SQL: one embedded database serves every server.
  let database: TestDatabase;
  let server: RunningServer | undefined;
  const clients: FeedClient[] = [];

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await server?.close();
    server = undefined;
  });
  afterAll(async () => {
    await database?.dispose();
  });

  async function start(overrides: Partial<Config>): Promise<RunningServer> {
    server = await startServer(database, overrides);
    return server;
  }

  async function opens(srv: RunningServer, options: ConnectOptions): Promise<FeedClient> {
    const { client, hello } = await connectLive(srv.wsUrl, options);
    clients.push(client);
    expect(hello.protocol).toBe(1);
    return client;
  }

  describe("with TRIPWIRE_WS_TOKENS set", () => {
    it("a client without a token is refused with 401 before the upgrade", async () => {
      const srv = await start({ wsTokens: ["s3cret"] });
      const answer = await refusal(srv.wsUrl, { protocols: ["tripwire.v1"] });
      expect(answer.status).toBe(401);
      expect(answer.contentType).toMatch(/^application\/json/);
      expect(String((answer.body as { error?: unknown }).error)).toMatch(/token/);
      expect(srv.broadcaster.size).toBe(0);
    });

    it.each([
      ["a wrong ?token=", { query: { token: "s3cre" } }],
      ["a wrong Bearer header", { headers: { authorization: "Bearer nope" } }],
      ["an empty ?token=", { query: { token: "" } }],
      ["a token in another scheme", { headers: { authorization: "Basic s3cret" } }],
    ] as const)("a client with %s is refused with 401", async (_how, options) => {
      const srv = await start({ wsTokens: ["s3cret"] });
      const answer = await refusal(srv.wsUrl, options);
      expect(answer.status).toBe(401);
      expect(srv.broadcaster.size).toBe(0);
    });

    it("a client with ?token=s3cret or Authorization: Bearer s3cret connects, and any listed token works", async () => {
      const srv = await start({ wsTokens: ["s3cret", "other"] });
      await opens(srv, { query: { token: "s3cret" } });
      await opens(srv, { headers: { authorization: "Bearer s3cret" } });
      await opens(srv, { query: { token: "other" } });
      expect(srv.broadcaster.size).toBe(3);
    });
  });

  describe("with TRIPWIRE_WS_ALLOWED_ORIGINS set", () => {
    it("an Origin that is not listed is refused with 403; a listed one, or none, connects", async () => {
      const srv = await start({ wsAllowedOrigins: ["https://soc.example"] });
      const answer = await refusal(srv.wsUrl, { origin: "https://evil.example" });
      expect(answer.status).toBe(403);
      expect(answer.contentType).toMatch(/^application\/json/);
      expect(String((answer.body as { error?: unknown }).error)).toMatch(/evil\.example/);
      expect(srv.broadcaster.size).toBe(0);

      await opens(srv, { origin: "https://soc.example" });
      await opens(srv, {});
      expect(srv.broadcaster.size).toBe(2);
    });
  });

  it("a server without tokens logs a warning at start that the feed is open; with tokens it does not", async () => {
    const open = logRecorder();
    await (
      await startServer(database, {}, { logger: { level: "warn", stream: open.stream } })
    ).close();
    const warnings = open.lines.filter((l) => openFeedWarning.test(String(l.msg)));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.level).toBe(40);

    const closed = logRecorder();
    await (
      await startServer(
        database,
        { wsTokens: ["s3cret"] },
        { logger: { level: "warn", stream: closed.stream } },
      )
    ).close();
    expect(closed.lines.filter((l) => openFeedWarning.test(String(l.msg)))).toEqual([]);
  });

  it("a client message larger than TRIPWIRE_WS_MAX_MESSAGE_BYTES closes the connection with 1009; one at the limit is read", async () => {
    const srv = await start({ wsMaxMessageBytes: 256 });
    const { client } = await connectLive(srv.wsUrl);
    clients.push(client);
    // Exactly 256 bytes: a set_filters with a field the server ignores.
    const base = JSON.stringify({ type: "set_filters", pad: "" });
    const atLimit = JSON.stringify({ type: "set_filters", pad: "x".repeat(256 - base.length) });
    expect(Buffer.byteLength(atLimit)).toBe(256);
    client.send(atLimit);
    expect((await client.nextOfType("filters")).type).toBe("filters");

    client.send(JSON.stringify({ type: "set_filters", pad: "x".repeat(300) }));
    expect((await client.closed).code).toBe(1009);

    const v0 = await connectFeed(srv.wsUrl);
    clients.push(v0);
    v0.send("x".repeat(257));
    expect((await v0.closed).code).toBe(1009);
  });
});
