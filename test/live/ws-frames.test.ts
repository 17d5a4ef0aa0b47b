/**
 * Frames built once per batch (src/live/ws-frames.ts): a version-1 subscriber that
 * accepts permessage-deflate gets each batch as one frame compressed once for everybody,
 * one that does not gets the same messages uncompressed; version 0 gets each batch's
 * frames (one per alert) as one prebuilt buffer.
 */
import type { Socket } from "node:net";
import { constants, inflateRawSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.js";
import { deflatedTextFrame, textFrames } from "../../src/live/ws-frames.js";
import { makeEvent, register, streamAll } from "../support/agent.js";
import { createTestDatabase, type TestDatabase } from "../support/databases.js";
import { type RunningServer, startServer } from "../support/server.js";
import { connectLive, type FeedClient } from "../support/ws-client.js";

/** Bytes the client's TCP socket has read (ws keeps the socket private). */
function wireBytes(client: FeedClient): number {
  return (client.socket as unknown as { _socket: Socket })._socket.bytesRead;
}

describe("deflatedTextFrame", () => {
  it.each([10, 200, 70_000])(
    "frames a %i-byte payload as one final compressed text frame that inflates back to it",
    (size) => {
      const payload = Buffer.from(JSON.stringify({ type: "alerts", pad: "ab".repeat(size / 2) }));
      const frame = deflatedTextFrame(payload);
      expect(frame[0]).toBe(0xc1); // FIN + RSV1 + text
      const marker = (frame[1] as number) & 0x7f;
      const [offset, length] =
        marker < 126
          ? [2, marker]
          : marker === 126
            ? [4, frame.readUInt16BE(2)]
            : [10, Number(frame.readBigUInt64BE(2))];
      expect(offset + length).toBe(frame.length);
      const body = frame.subarray(offset);
      // RFC 7692: the receiver appends 00 00 ff ff before inflating.
      const inflated = inflateRawSync(Buffer.concat([body, Buffer.from([0, 0, 0xff, 0xff])]), {
        finishFlush: constants.Z_SYNC_FLUSH,
      });
      expect(inflated.equals(payload)).toBe(true);
    },
  );
});

describe("textFrames", () => {
  it("lays out one final uncompressed text frame per payload, in order, with each length encoding", () => {
    const payloads = [10, 200, 70_000, 0].map((n, i) => Buffer.alloc(n, 97 + i));
    const buf = textFrames(payloads);
    const parsed: Buffer[] = [];
    let at = 0;
    while (at < buf.length) {
      expect(buf[at]).toBe(0x81); // FIN + text, no RSV1
      const marker = (buf[at + 1] as number) & 0x7f;
      expect((buf[at + 1] as number) & 0x80).toBe(0); // servers do not mask
      const [offset, length] =
        marker < 126
          ? [2, marker]
          : marker === 126
            ? [4, buf.readUInt16BE(at + 2)]
            : [10, Number(buf.readBigUInt64BE(at + 2))];
      parsed.push(buf.subarray(at + offset, at + offset + length));
      at += offset + length;
    }
    expect(at).toBe(buf.length);
    expect(parsed).toEqual(payloads);
  });
});

describe("/ws compression", () => {
  let database: TestDatabase | undefined;
  let server: RunningServer | undefined;
  const clients: FeedClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await server?.close();
    await database?.dispose();
  });

  async function start(overrides: Partial<Config> = {}): Promise<RunningServer> {
    database = await createTestDatabase("pglite");
    server = await startServer(database, { flushIntervalMs: 10, ...overrides });
    return server;
  }

  async function live(perMessageDeflate: boolean): Promise<FeedClient> {
    const { client } = await connectLive((server as RunningServer).wsUrl, { perMessageDeflate });
    clients.push(client);
    return client;
  }

  it("a subscriber that accepts permessage-deflate gets the same messages as one that does not, in a fraction of the bytes", async () => {
    const srv = await start();
    const compressed = await live(true);
    const plain = await live(false);
    expect(compressed.socket.extensions).toContain("permessage-deflate");
    expect(plain.socket.extensions).toBe("");
    const before = { compressed: wireBytes(compressed), plain: wireBytes(plain) };

    const hostId = await register(srv.grpcClient());
    const events = Array.from({ length: 300 }, () => makeEvent(hostId));
    const replies = await streamAll(srv.grpcClient(), events);
    expect(replies.every((r) => r.type === "ACK")).toBe(true);
    const all = (c: FeedClient) =>
      c.until(() => (c.alerts().length >= events.length ? true : undefined), "every alert");
    await Promise.all([all(compressed), all(plain)]);

    expect(compressed.messages.slice(1)).toEqual(plain.messages.slice(1)); // [0]: hello
    expect(compressed.alerts().map((a) => a.alert_id)).toEqual(events.map((e) => e.alertId));
    const sent = {
      compressed: wireBytes(compressed) - before.compressed,
      plain: wireBytes(plain) - before.plain,
    };
    expect(sent.compressed * 3).toBeLessThan(sent.plain);
  });

  it("TRIPWIRE_WS_COMPRESSION=off does not offer the extension, and alerts arrive uncompressed", async () => {
    const srv = await start({ wsCompression: "off" });
    const client = await live(true);
    expect(client.socket.extensions).toBe("");
    const hostId = await register(srv.grpcClient());
    const event = makeEvent(hostId);
    await streamAll(srv.grpcClient(), [event]);
    const message = await client.nextOfType("alerts");
    expect(message.items).toMatchObject([{ alert_id: event.alertId }]);
  });
});
