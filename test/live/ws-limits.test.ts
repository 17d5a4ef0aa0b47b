/**
 * Admission limits of /ws: connections per instance and per token, answered before the
 * upgrade with a status the client can act on.
 */
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function refusal(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once("open", () => reject(new Error("the connection was accepted")));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once("error", () => {});
  });
}

describe("/ws admission limits", () => {
  let database: TestDatabase | undefined;
  let server: RunningServer | undefined;
  const sockets: WebSocket[] = [];

  afterEach(async () => {
    for (const ws of sockets.splice(0)) ws.terminate();
    await server?.close();
    await database?.dispose();
  });

  it("refuses connections beyond TRIPWIRE_WS_MAX_CONNECTIONS with 503, and admits again when one closes", async () => {
    database = await createTestDatabase("pglite");
    server = await startServer(database, { wsMaxConnections: 2 });
    sockets.push(await open(server.wsUrl), await open(server.wsUrl));
    const refused = await refusal(server.wsUrl);
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/too many feed connections/);

    const first = sockets[0] as WebSocket;
    await new Promise((resolve) => {
      first.once("close", resolve);
      first.close();
    });
    // The server has seen the close once its own close event ran; wait for that.
    const deadline = Date.now() + 5_000;
    for (;;) {
      const ws = await open(server.wsUrl).catch(() => undefined);
      if (ws !== undefined) {
        sockets.push(ws);
        break;
      }
      if (Date.now() > deadline) throw new Error("a slot never freed up");
    }
  });

  it("refuses a token's connections beyond TRIPWIRE_WS_MAX_CONNECTIONS_PER_TOKEN with 429; other tokens are unaffected", async () => {
    database = await createTestDatabase("pglite");
    server = await startServer(database, {
      wsTokens: ["alpha", "beta"],
      wsMaxConnectionsPerToken: 1,
    });
    sockets.push(await open(`${server.wsUrl}?token=alpha`));
    const refused = await refusal(`${server.wsUrl}?token=alpha`);
    expect(refused.status).toBe(429);
    sockets.push(await open(`${server.wsUrl}?token=beta`));
  });
});
