/**
 * TLS on the one port and agent identity from client certificates: a real server on
 * port 0 with a PKI generated at test time, and real clients for every protocol.
 */
import { once } from "node:events";
import * as http2 from "node:http2";
import * as https from "node:https";
import * as net from "node:net";
import * as tls from "node:tls";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { type Config, ConfigError, configWith, loadConfig } from "../../src/config.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { createTlsServer, readTlsMaterial } from "../../src/http/tls.js";
import { createAlertStore } from "../../src/storage/alert-store.js";
import { makeEvent, streamAll } from "../support/agent.js";
import { backends, createTestDatabase, type TestDatabase } from "../support/databases.js";
import { createTestPki, type KeyPair, type TestPki } from "../support/pki.js";
import { type RunningServer, startServer } from "../support/server.js";

/** What a client presents: nothing, or a certificate and its key. */
type ClientCert = Pick<KeyPair, "cert" | "key"> | undefined;

/** A client transport of the AlertService over TLS, trusting the test CA. */
type TransportFactory = (baseUrl: string, ca: string, cert: ClientCert) => Transport;

const grpc: TransportFactory = (baseUrl, ca, cert) =>
  createGrpcTransport({ baseUrl, nodeOptions: { ca, ...cert } });

const transports: ReadonlyArray<readonly [string, TransportFactory]> = [
  ["gRPC over HTTP/2", grpc],
  [
    "Connect over HTTP/1.1",
    (baseUrl, ca, cert) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca, ...cert } }),
  ],
  [
    "Connect over HTTP/2",
    (baseUrl, ca, cert) =>
      createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca, ...cert } }),
  ],
  [
    "gRPC-Web over HTTP/1.1",
    (baseUrl, ca, cert) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca, ...cert } }),
  ],
  [
    "gRPC-Web over HTTP/2",
    (baseUrl, ca, cert) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca, ...cert } }),
  ],
];

async function codeAndMessage(promise: Promise<unknown>): Promise<[string, string]> {
  try {
    await promise;
  } catch (err) {
    const e = ConnectError.from(err);
    return [Code[e.code], e.rawMessage];
  }
  return ["OK", ""];
}

/** GET over HTTPS/1.1 (no ALPN offered, like node:https); resolves with status and body. */
function getHttps1(
  url: string,
  ca: string,
): Promise<{ status: number; httpVersion: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, httpVersion: res.httpVersion, body }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

/** GET over HTTP/2 negotiated by ALPN, with node:http2. */
async function getH2(baseUrl: string, path: string, ca: string) {
  const session = http2.connect(baseUrl, { ca });
  try {
    const req = session.request({ ":method": "GET", ":path": path });
    req.setEncoding("utf8");
    const [headers] = (await once(req, "response")) as [http2.IncomingHttpHeaders];
    let body = "";
    for await (const chunk of req) body += chunk as string;
    return { status: Number(headers[":status"]), body, alpn: session.alpnProtocol };
  } finally {
    session.close();
  }
}

/** Opens wss://…/ws without a client certificate and resolves with the first message. */
async function firstFeedMessage(port: number, ca: string): Promise<{ type: string }> {
  const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, ["tripwire.v1"], { ca });
  try {
    const [data] = (await once(ws, "message")) as [Buffer];
    return JSON.parse(data.toString("utf8")) as { type: string };
  } finally {
    ws.close();
  }
}

describe.each(backends)("TLS and agent certificates [%s]", (kind) => {
  let pki: TestPki;
  let database: TestDatabase;
  let agentA: KeyPair;
  let agentB: KeyPair;

  beforeAll(async () => {
    [pki, database] = await Promise.all([createTestPki(), createTestDatabase(kind)]);
    [agentA, agentB] = await Promise.all([pki.agent("agent-a"), pki.agent("agent-b")]);
  });
  afterAll(async () => {
    await database?.dispose();
    await pki?.dispose();
  });

  function tlsSettings(clientAuth?: Config["tlsClientAuth"]): Partial<Config> {
    return {
      flushIntervalMs: 20,
      tlsCert: pki.server.certPath,
      tlsKey: pki.server.keyPath,
      ...(clientAuth === undefined ? {} : { tlsClientCa: pki.caPath, tlsClientAuth: clientAuth }),
    };
  }

  async function storedIds(ids: readonly string[]): Promise<string[]> {
    const rows = await database.rows<{ alert_id: string }>(
      sql`select alert_id::text as alert_id from alerts where alert_id = any(${sql.param(ids)}::uuid[])`,
    );
    return rows.map((r) => r.alert_id);
  }

  describe("client certificates required", () => {
    let server: RunningServer;
    let baseUrl: string;
    const agent = (cert: ClientCert) => createClient(AlertService, grpc(baseUrl, pki.ca, cert));

    beforeAll(async () => {
      server = await startServer(database, tlsSettings("require"));
      baseUrl = `https://127.0.0.1:${server.port}`;
    });
    afterAll(async () => {
      await server?.close();
    });

    it.each(transports)(
      "an agent with a valid certificate registers over %s under the certificate's CN, whatever hostname it reports",
      async (_name, transport) => {
        const client = createClient(AlertService, transport(baseUrl, pki.ca, agentA));
        const res = await client.registerAgent({
          hostname: "claims-to-be-someone-else",
          platform: "linux",
          agentVersion: "test",
        });
        expect(await createAlertStore(database).findHostname(res.hostId)).toBe("agent-a");
      },
    );

    it("an agent with a valid certificate streams events over HTTP/2 and every one is ACKed and stored", async () => {
      const client = agent(agentA);
      const { hostId } = await client.registerAgent({ hostname: "agent-a", platform: "linux" });
      const events = [makeEvent(hostId), makeEvent(hostId), makeEvent(hostId)];
      const replies = await streamAll(client, events);
      expect(replies.map((r) => r.type)).toEqual(["ACK", "ACK", "ACK"]);
      expect((await storedIds(events.map((e) => e.alertId))).sort()).toEqual(
        events.map((e) => e.alertId).sort(),
      );
    });

    it("an event whose host_id belongs to another agent gets ERROR and is not stored, while the agent's own host_id is ACKed", async () => {
      const a = agent(agentA);
      const hostA = (await a.registerAgent({ hostname: "agent-a" })).hostId;
      const hostB = (await agent(agentB).registerAgent({ hostname: "agent-b" })).hostId;
      expect(hostB).not.toBe(hostA);
      const own = makeEvent(hostA);
      const forged = makeEvent(hostB);
      const ownAgain = makeEvent(hostA);

      const replies = await streamAll(a, [own, forged, ownAgain]);

      expect(replies).toHaveLength(3);
      expect(replies).toEqual(
        expect.arrayContaining([
          { type: "ACK", alertId: own.alertId },
          { type: "ACK", alertId: ownAgain.alertId },
          {
            type: "ERROR",
            alertId: forged.alertId,
            error: "host_id does not belong to this agent",
          },
        ]),
      );
      expect((await storedIds([own.alertId, forged.alertId, ownAgain.alertId])).sort()).toEqual(
        [own.alertId, ownAgain.alertId].sort(),
      );
    });

    it("an agent without a certificate is refused with Unauthenticated on RegisterAgent and StreamAlerts", async () => {
      const hostA = (await agent(agentA).registerAgent({ hostname: "agent-a" })).hostId;
      const anonymous = agent(undefined);
      const event = makeEvent(hostA);

      const [code, message] = await codeAndMessage(
        anonymous.registerAgent({ hostname: "agent-a" }),
      );
      expect(code).toBe("Unauthenticated");
      expect(message).toContain("a client certificate is required");
      const [streamCode] = await codeAndMessage(streamAll(anonymous, [event]));
      expect(streamCode).toBe("Unauthenticated");
      expect(await storedIds([event.alertId])).toEqual([]);
    });

    it("a browser without a certificate still gets /healthz and / over HTTP/1.1 and HTTP/2, and the feed on wss:///ws", async () => {
      const h1 = await getHttps1(`${baseUrl}/healthz`, pki.ca);
      expect(h1).toMatchObject({ status: 200, httpVersion: "1.1" });
      expect(JSON.parse(h1.body)).toEqual({ status: "ok" });
      const page = await getHttps1(`${baseUrl}/`, pki.ca);
      expect(page.status).toBe(200);
      expect(page.body).toContain("<html");
      const h2 = await getH2(baseUrl, "/", pki.ca);
      expect(h2).toMatchObject({ status: 200, alpn: "h2" });
      expect(h2.body).toContain("<html");
      expect((await firstFeedMessage(server.port, pki.ca)).type).toBe("hello");
    });

    it("a certificate from a CA the server does not trust is refused with Unauthenticated", async () => {
      const foreign = await pki.foreignAgent("agent-a");
      const [code, message] = await codeAndMessage(
        agent(foreign).registerAgent({ hostname: "agent-a" }),
      );
      expect(code).toBe("Unauthenticated");
      expect(message).toContain("client certificate rejected (UNABLE_TO_VERIFY_LEAF_SIGNATURE)");
      const [streamCode] = await codeAndMessage(streamAll(agent(foreign), [makeEvent("x")]));
      expect(streamCode).toBe("Unauthenticated");
    });

    it("an expired certificate from the trusted CA is refused with Unauthenticated", async () => {
      const expired = await pki.expiredAgent("agent-a");
      const [code, message] = await codeAndMessage(
        agent(expired).registerAgent({ hostname: "agent-a" }),
      );
      expect(code).toBe("Unauthenticated");
      expect(message).toContain("CERT_HAS_EXPIRED");
    });

    it("the port negotiates HTTP/2 for clients offering h2 and HTTP/1.1 for those offering only http/1.1", async () => {
      const alpnOf = async (protocols: string[]): Promise<string | false | null | undefined> => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port: server.port,
          ca: pki.ca,
          ALPNProtocols: protocols,
        });
        try {
          await once(socket, "secureConnect");
          return socket.alpnProtocol;
        } finally {
          socket.destroy();
        }
      };
      expect(await alpnOf(["h2", "http/1.1"])).toBe("h2");
      expect(await alpnOf(["http/1.1"])).toBe("http/1.1");
    });
  });

  describe("client certificates optional", () => {
    let server: RunningServer;
    let baseUrl: string;
    const agent = (cert: ClientCert) => createClient(AlertService, grpc(baseUrl, pki.ca, cert));

    beforeAll(async () => {
      server = await startServer(database, tlsSettings("optional"));
      baseUrl = `https://127.0.0.1:${server.port}`;
    });
    afterAll(async () => {
      await server?.close();
    });

    it("an agent without a certificate registers under the hostname it reports and its events are ACKed", async () => {
      const anonymous = agent(undefined);
      const { hostId } = await anonymous.registerAgent({ hostname: "no-cert-host" });
      expect(await createAlertStore(database).findHostname(hostId)).toBe("no-cert-host");
      const event = makeEvent(hostId);
      expect(await streamAll(anonymous, [event])).toEqual([
        { type: "ACK", alertId: event.alertId },
      ]);
    });

    it("an agent with a valid certificate is still bound to its host", async () => {
      const hostB = (await agent(agentB).registerAgent({ hostname: "agent-b" })).hostId;
      const forged = makeEvent(hostB);
      expect(await streamAll(agent(agentA), [forged])).toEqual([
        { type: "ERROR", alertId: forged.alertId, error: "host_id does not belong to this agent" },
      ]);
      expect(await storedIds([forged.alertId])).toEqual([]);
    });

    it("a certificate that fails verification is refused even though certificates are optional", async () => {
      const expired = await pki.expiredAgent("agent-a");
      const [code, message] = await codeAndMessage(
        agent(expired).registerAgent({ hostname: "agent-a" }),
      );
      expect(code).toBe("Unauthenticated");
      expect(message).toContain("CERT_HAS_EXPIRED");
    });
  });

  describe("TLS without a client CA", () => {
    it("agents are not asked for a certificate and register under the hostname they report", async () => {
      const server = await startServer(database, tlsSettings());
      try {
        const baseUrl = `https://127.0.0.1:${server.port}`;
        // A certificate offered anyway is neither requested nor used.
        const client = createClient(AlertService, grpc(baseUrl, pki.ca, agentA));
        const { hostId } = await client.registerAgent({ hostname: "reported-name" });
        expect(await createAlertStore(database).findHostname(hostId)).toBe("reported-name");
      } finally {
        await server.close();
      }
    });
  });

  it("closing a TLS server ends agent streams, unfinished HTTP/1.1 requests and wss connections", async () => {
    // A grace period longer than the test: closing must not wait for it.
    const server = await startServer(database, {
      ...tlsSettings("require"),
      shutdownTimeoutMs: 600_000,
    });
    const baseUrl = `https://127.0.0.1:${server.port}`;
    const client = createClient(AlertService, grpc(baseUrl, pki.ca, agentA));
    const { hostId } = await client.registerAgent({ hostname: "agent-a" });

    // An agent stream that stays open: it has sent one event and got its ACK.
    const outgoing = new AbortController();
    async function* events() {
      yield makeEvent(hostId);
      await new Promise((resolve) => outgoing.signal.addEventListener("abort", resolve));
    }
    const stream = client.streamAlerts(events())[Symbol.asyncIterator]();
    expect((await stream.next()).done).toBe(false);
    const streamEnd = stream.next().then(
      (r) => (r.done ? "ended" : "message"),
      (err: unknown) => Code[ConnectError.from(err).code],
    );

    // An HTTP/1.1 request whose headers never end (Node would wait a minute for them).
    const partial = tls.connect({
      host: "127.0.0.1",
      port: server.port,
      ca: pki.ca,
      ALPNProtocols: ["http/1.1"],
    });
    await once(partial, "secureConnect");
    partial.on("error", () => {});
    partial.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const partialClosed = once(partial, "close");
    // A WebSocket, and a TCP connection that never starts its TLS handshake.
    const ws = new WebSocket(`wss://127.0.0.1:${server.port}/ws`, ["tripwire.v1"], {
      ca: pki.ca,
    });
    await once(ws, "message");
    const wsClosed = once(ws, "close");
    const silent = net.connect(server.port, "127.0.0.1");
    await once(silent, "connect");
    silent.on("error", () => {});
    const silentClosed = once(silent, "close");

    const closing = server.close();

    const [wsCode] = (await wsClosed) as [number];
    expect(wsCode).toBe(1001);
    expect(await streamEnd).toBe("Unavailable");
    await partialClosed;
    await silentClosed;
    // The agent ends its side of the stream, as a real one does on UNAVAILABLE.
    outgoing.abort();
    await closing;
  });
});

describe("the TLS server", () => {
  it("drops connections that never finish their TLS handshake when it closes", async () => {
    const pki = await createTestPki();
    const server = createTlsServer((_req, res) => res.end("ok"), {
      tls: {
        cert: Buffer.from(pki.server.cert),
        key: Buffer.from(pki.server.key),
        clientCa: undefined,
      },
      closeGraceMs: 600_000,
      handshakeTimeoutMs: 600_000,
    });
    try {
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as net.AddressInfo;
      const accepted = once(server, "connection");
      const silent = net.connect(port, "127.0.0.1");
      silent.on("error", () => {});
      const silentClosed = once(silent, "close");
      await accepted;

      await new Promise((resolve) => server.close(resolve));

      await silentClosed;
    } finally {
      server.close();
      await pki.dispose();
    }
  });

  it("refuses a key that does not belong to the certificate with a configuration error", async () => {
    const pki = await createTestPki();
    try {
      const other = await pki.agent("other");
      expect(() =>
        createTlsServer(() => {}, {
          tls: {
            cert: Buffer.from(pki.server.cert),
            key: Buffer.from(other.key),
            clientCa: undefined,
          },
          closeGraceMs: 0,
          handshakeTimeoutMs: 1_000,
        }),
      ).toThrow(ConfigError);
    } finally {
      await pki.dispose();
    }
  });
});

describe("TLS settings", () => {
  it("accepts a certificate, key, client CA and client auth mode", () => {
    const config = loadConfig({
      TRIPWIRE_TLS_CERT: "/etc/tripwire/server.crt",
      TRIPWIRE_TLS_KEY: "/etc/tripwire/server.key",
      TRIPWIRE_TLS_CLIENT_CA: "/etc/tripwire/agents-ca.crt",
      TRIPWIRE_TLS_CLIENT_AUTH: "optional",
    });
    expect(config).toMatchObject({
      tlsCert: "/etc/tripwire/server.crt",
      tlsKey: "/etc/tripwire/server.key",
      tlsClientCa: "/etc/tripwire/agents-ca.crt",
      tlsClientAuth: "optional",
    });
  });

  it("requires client certificates by default once a client CA is set", () => {
    expect(
      loadConfig({
        TRIPWIRE_TLS_CERT: "a.crt",
        TRIPWIRE_TLS_KEY: "a.key",
        TRIPWIRE_TLS_CLIENT_CA: "ca.crt",
      }).tlsClientAuth,
    ).toBe("require");
  });

  it("names the variable whose file cannot be read", () => {
    const config = configWith({
      tlsCert: "/nonexistent/server.crt",
      tlsKey: "/nonexistent/server.key",
    });
    expect(() => readTlsMaterial(config)).toThrow(ConfigError);
    expect(() => readTlsMaterial(config)).toThrow(
      /^TRIPWIRE_TLS_CERT: cannot read \/nonexistent\/server\.crt/,
    );
  });

  it.each([
    [{ TRIPWIRE_TLS_CERT: "a.crt" }, /TRIPWIRE_TLS_CERT and TRIPWIRE_TLS_KEY must be set together/],
    [{ TRIPWIRE_TLS_CLIENT_CA: "ca.crt" }, /TRIPWIRE_TLS_CLIENT_CA needs TLS/],
    [
      {
        TRIPWIRE_TLS_CERT: "a.crt",
        TRIPWIRE_TLS_KEY: "a.key",
        TRIPWIRE_TLS_CLIENT_AUTH: "require",
      },
      /TRIPWIRE_TLS_CLIENT_AUTH needs TRIPWIRE_TLS_CLIENT_CA/,
    ],
    [
      {
        TRIPWIRE_TLS_CERT: "a.crt",
        TRIPWIRE_TLS_KEY: "a.key",
        TRIPWIRE_TLS_CLIENT_CA: "ca.crt",
        TRIPWIRE_TLS_CLIENT_AUTH: "sometimes",
      },
      /TRIPWIRE_TLS_CLIENT_AUTH="sometimes" is not valid: expected one of require, optional/,
    ],
  ])("refuses the inconsistent settings %j", (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});
