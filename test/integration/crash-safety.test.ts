/**
 * Crash safety, checked from outside: the real server runs as a child process, and the
 * agent is @grpc/grpc-js with the contract's proto loaded at run time, so it shares none
 * of our generated code. An ACK must mean "in the database": a kill -9 mid-stream loses
 * no ACKed alert, and the agent's replay after a restart stores nothing twice.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { type Database, type DatabaseKind, openDatabase } from "../../src/storage/database.js";
import {
  type ChildDatabase,
  type ChildServer,
  describeExit,
  killChildServer,
  startChildServer,
} from "../support/child-server.js";
import { backends, createTestDatabase } from "../support/databases.js";

// --- The foreign client: types written from the wire contract, codec from the .proto. ---

/** AgentEvent as proto-loader maps it: field names as in the proto, int64 as string. */
interface WireAgentEvent {
  readonly alert_id: string;
  readonly host_id: string;
  readonly timestamp_us: string;
  readonly tripwire_type: string;
  readonly rule_name: string;
  readonly event_detail_json: Buffer;
  readonly severity: string;
}

/** ServerCommand as proto-loader maps it (fields left at their default are absent). */
interface WireServerCommand {
  readonly type?: string;
  readonly payload?: Buffer;
}

interface WireRegisterRequest {
  readonly hostname: string;
  readonly platform: string;
  readonly agent_version: string;
}

interface WireRegisterResponse {
  readonly host_id?: string;
  readonly server_time_us?: string;
}

/** The methods grpc-js builds from the service definition. */
interface AlertServiceClient extends grpc.Client {
  RegisterAgent(
    request: WireRegisterRequest,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<WireRegisterResponse>,
  ): grpc.ClientUnaryCall;
  StreamAlerts(): grpc.ClientDuplexStream<WireAgentEvent, WireServerCommand>;
}

const protoPath = fileURLToPath(new URL("../../proto/alert/alert.proto", import.meta.url));
const packageDefinition = protoLoader.loadSync(protoPath, {
  keepCase: true,
  longs: String,
  bytes: Buffer,
});
const alertPackage = grpc.loadPackageDefinition(packageDefinition).alert as
  | grpc.GrpcObject
  | undefined;
if (alertPackage?.AlertService === undefined) {
  throw new Error(`${protoPath} must define service alert.AlertService (the agents' paths)`);
}
const AlertServiceConstructor = alertPackage.AlertService as grpc.ServiceClientConstructor;

/** A grpc-js client over cleartext HTTP/2 (h2c). */
function foreignClient(target: string): AlertServiceClient {
  return new AlertServiceConstructor(
    target,
    grpc.credentials.createInsecure(),
  ) as unknown as AlertServiceClient;
}

function registerAgent(client: AlertServiceClient, hostname: string): Promise<string> {
  return new Promise((resolve, reject) => {
    client.RegisterAgent(
      { hostname, platform: "linux", agent_version: "grpc-js-crash-test" },
      { deadline: Date.now() + 10_000 },
      (err, res) => {
        if (err !== null) reject(err);
        else if (res?.host_id === undefined || res.host_id === "") reject(new Error("no host_id"));
        else resolve(res.host_id);
      },
    );
  });
}

function wireEvent(hostId: string): WireAgentEvent {
  return {
    alert_id: randomUUID(),
    host_id: hostId,
    timestamp_us: String(Date.now() * 1000),
    tripwire_type: "FILE",
    rule_name: "shadow-write",
    event_detail_json: Buffer.from('{"path":"/etc/shadow","pid":31337}'),
    severity: "CRITICAL",
  };
}

function* endlessEvents(hostId: string): Generator<WireAgentEvent> {
  for (;;) yield wireEvent(hostId);
}

/** One StreamAlerts stream driven like the deployed agent: pipelined, replies read apart. */
interface PipelinedStream {
  /** alert_ids handed to grpc-js, in order. */
  readonly sent: string[];
  /** alert_ids the server ACKed. */
  readonly acked: Set<string>;
  /** ERROR payloads, as received. */
  readonly errors: string[];
  /** Resolves once `n` ACKs arrived; rejects if the stream ends first. */
  untilAcked(n: number): Promise<void>;
  /** Resolves with the stream's final status once every reply was read; never rejects. */
  readonly finished: Promise<grpc.StatusObject>;
  readonly call: grpc.ClientDuplexStream<WireAgentEvent, WireServerCommand>;
}

/**
 * Opens a stream and writes `events` as fast as grpc-js takes them (awaiting `drain`
 * when `write()` says its buffer is full), without waiting for replies. Stops writing
 * when the stream ends; half-closes after the last event when `halfClose` is set.
 */
function pipeline(
  client: AlertServiceClient,
  events: Iterable<WireAgentEvent>,
  halfClose: boolean,
): PipelinedStream {
  const call = client.StreamAlerts();
  const sent: string[] = [];
  const acked = new Set<string>();
  const errors: string[] = [];
  let waiter: { n: number; resolve: () => void } | undefined;
  let done = false;

  // The status carries the error; this listener keeps it from being thrown.
  call.on("error", () => {});
  const status = new Promise<grpc.StatusObject>((resolve) => call.once("status", resolve));
  const readEnd = new Promise<void>((resolve) => {
    call.once("end", resolve);
    call.once("close", resolve);
  });
  const finished = Promise.all([status, readEnd]).then(([s]) => s);
  void status.then(() => {
    done = true;
  });
  call.on("data", (cmd: WireServerCommand) => {
    const payload = JSON.parse(cmd.payload?.toString("utf8") ?? "{}") as { alert_id?: string };
    if (cmd.type === "ACK" && typeof payload.alert_id === "string") acked.add(payload.alert_id);
    else errors.push(`${cmd.type}: ${cmd.payload?.toString("utf8")}`);
    if (waiter !== undefined && acked.size >= waiter.n) {
      waiter.resolve();
      waiter = undefined;
    }
  });

  const drained = (): Promise<void> =>
    new Promise((resolve) => {
      const wake = (): void => {
        call.off("drain", wake);
        resolve();
      };
      call.on("drain", wake);
      void status.then(wake);
    });
  void (async () => {
    for (const event of events) {
      if (done) return;
      sent.push(event.alert_id);
      if (!call.write(event)) await drained();
    }
    if (halfClose && !done) call.end();
  })().catch((err: unknown) => {
    errors.push(`writing failed: ${String(err)}`);
  });

  return {
    sent,
    acked,
    errors,
    call,
    finished,
    untilAcked(n) {
      if (acked.size >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        waiter = { n, resolve };
        void status.then((s) => {
          if (acked.size < n) {
            reject(
              new Error(`stream ended after ${acked.size} ACKs (< ${n}): ${describeStatus(s)}`),
            );
          }
        });
      });
    },
  };
}

function describeStatus(s: grpc.StatusObject): string {
  return `${grpc.status[s.code]}: ${s.details}`;
}

// --- The database under the child servers. ---

/** A database a child server uses, and a way for the test to look inside it. */
interface CrashDatabase {
  readonly forChild: ChildDatabase;
  /** Runs `query`; on PGlite only while no child has the data directory open. */
  use<T>(query: (db: Database) => Promise<T>): Promise<T>;
  dispose(): Promise<void>;
}

async function crashDatabase(kind: DatabaseKind): Promise<CrashDatabase> {
  if (kind === "postgres") {
    const db = await createTestDatabase("postgres");
    const url = db.url;
    if (url === undefined) throw new Error("a PostgreSQL test database has a URL");
    return { forChild: { url }, use: (query) => query(db), dispose: () => db.dispose() };
  }
  // PGlite persists to files: the data directory outlives the killed process.
  const dataDir = await mkdtemp(join(tmpdir(), "tripwire-crash-"));
  return {
    forChild: { dataDir },
    async use(query) {
      const db = await openDatabase({ dataDir });
      try {
        return await query(db);
      } finally {
        await db.close();
      }
    },
    dispose: () => rm(dataDir, { recursive: true, force: true }),
  };
}

/** How many rows each of `ids` has in the alerts table (absent ids are left out). */
async function rowCounts(db: Database, ids: readonly string[]): Promise<Map<string, number>> {
  const rows = await db.rows<{ alert_id: string; n: number }>(sql`
    select alert_id::text as alert_id, count(*)::int as n
    from alerts where alert_id = any(${sql.param([...ids])}::uuid[])
    group by alert_id`);
  return new Map(rows.map((r) => [r.alert_id, r.n]));
}

async function hostAlertCount(db: Database, hostId: string): Promise<number> {
  const rows = await db.rows<{ n: number }>(
    sql`select count(*)::int as n from alerts where host_id = ${hostId}::uuid`,
  );
  return rows[0]?.n ?? 0;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// --- The tests. ---

describe.each(backends)(
  "crash safety against a grpc-js client built from the proto [%s]",
  (kind) => {
    let database: CrashDatabase;
    const servers: ChildServer[] = [];
    const clients: grpc.Client[] = [];
    const calls: grpc.ClientDuplexStream<WireAgentEvent, WireServerCommand>[] = [];

    async function start(): Promise<ChildServer> {
      const server = await startChildServer({ database: database.forChild });
      servers.push(server);
      return server;
    }
    function connect(server: ChildServer): AlertServiceClient {
      const client = foreignClient(server.target);
      clients.push(client);
      return client;
    }
    function open(
      client: AlertServiceClient,
      events: Iterable<WireAgentEvent>,
      halfClose: boolean,
    ): PipelinedStream {
      const stream = pipeline(client, events, halfClose);
      calls.push(stream.call);
      return stream;
    }
    /** No server outlives the test that started it, pass or fail. */
    async function stopEverything(): Promise<void> {
      for (const call of calls.splice(0)) call.cancel();
      for (const client of clients.splice(0)) client.close();
      await Promise.all(servers.splice(0).map(killChildServer));
    }

    beforeAll(async () => {
      database = await crashDatabase(kind);
    });
    afterEach(stopEverything);
    afterAll(async () => {
      await stopEverything();
      await database?.dispose();
    });

    it("a grpc-js client registers over h2c and gets the same host_id when it registers again", async () => {
      expect(AlertServiceConstructor.service.RegisterAgent?.path).toBe(
        "/alert.AlertService/RegisterAgent",
      );
      const client = connect(await start());
      const first = await registerAgent(client, "foreign-agent");
      expect(first).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(await registerAgent(client, "foreign-agent")).toBe(first);
    }, 30_000);

    describe("kill -9 while the agent pipelines 5000 events", () => {
      let hostId: string;
      let crashEvents: WireAgentEvent[];
      let crashed: PipelinedStream;
      let crashedStatus: grpc.StatusObject;

      beforeAll(async () => {
        const server = await start();
        const client = connect(server);
        hostId = await registerAgent(client, `crash-${randomUUID().slice(0, 8)}`);
        crashEvents = Array.from({ length: 5000 }, () => wireEvent(hostId));
        crashed = open(client, crashEvents, true);
        await crashed.untilAcked(300);
        server.kill("SIGKILL");
        expect(describeExit(await server.exited)).toBe("signal SIGKILL");
        crashedStatus = await withDeadline(crashed.finished, 10_000, "stream end after kill -9");
        await stopEverything();
      }, 60_000);

      it("every alert the server ACKed before it was killed is in the database", async () => {
        // The kill landed mid-stream: the server died with events it had not answered.
        expect(crashedStatus.code).not.toBe(grpc.status.OK);
        expect(crashed.errors).toEqual([]);
        expect(crashed.acked.size).toBeGreaterThanOrEqual(300);
        expect(crashed.sent.length).toBeGreaterThan(crashed.acked.size);

        const acked = [...crashed.acked];
        const counts = await database.use((db) => rowCounts(db, acked));
        expect(acked.filter((id) => counts.get(id) !== 1)).toEqual([]);
      });

      it("after a restart, replaying every sent event gets an ACK for each and stores each alert exactly once", async () => {
        const server = await start();
        const client = connect(server);
        // The agent's local queue: it re-sends every event it handed to the old stream,
        // unchanged (the ACKed ones too, as an agent does whose ACKs were lost).
        const replay = open(client, crashEvents.slice(0, crashed.sent.length), true);
        const status = await withDeadline(replay.finished, 45_000, "replay stream end");

        expect({ code: grpc.status[status.code], details: status.details }).toMatchObject({
          code: "OK",
        });
        expect(replay.errors).toEqual([]);
        expect(replay.acked.size).toBe(crashed.sent.length);
        expect(crashed.sent.filter((id) => !replay.acked.has(id))).toEqual([]);

        await killChildServer(server); // PGlite: one process at a time on the data directory
        const { counts, total } = await database.use(async (db) => ({
          counts: await rowCounts(db, crashed.sent),
          total: await hostAlertCount(db, hostId),
        }));
        expect(crashed.sent.filter((id) => counts.get(id) !== 1)).toEqual([]);
        expect(total).toBe(crashed.sent.length);
      }, 60_000);
    });

    it("SIGTERM with events in flight: the server exits 0, every ACKed alert is stored, the stream ends UNAVAILABLE, browsers get 1001", async () => {
      const server = await start();
      const browser = new WebSocket(`ws://${server.target}/ws`);
      const browserClosed = new Promise<number>((resolve) =>
        browser.once("close", (code) => resolve(code)),
      );
      await new Promise<void>((resolve, reject) => {
        browser.once("open", () => resolve());
        browser.once("error", reject);
      });
      const client = connect(server);
      const hostId = await registerAgent(client, `sigterm-${randomUUID().slice(0, 8)}`);
      const stream = open(client, endlessEvents(hostId), false);
      await stream.untilAcked(300);

      server.kill("SIGTERM");
      const exit = await withDeadline(server.exited, 20_000, "exit after SIGTERM");
      const status = await withDeadline(stream.finished, 10_000, "stream end after SIGTERM");

      expect(describeExit(exit)).toBe("code 0");
      expect(await browserClosed).toBe(1001);
      expect(grpc.status[status.code]).toBe("UNAVAILABLE");
      expect(stream.sent.length).toBeGreaterThan(stream.acked.size);
      const acked = [...stream.acked];
      const counts = await database.use((db) => rowCounts(db, acked));
      expect(acked.filter((id) => counts.get(id) !== 1)).toEqual([]);
    }, 60_000);
  },
);
