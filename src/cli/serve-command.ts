/**
 * `tripwire-dashboard serve`: opens (and migrates) the database, builds the server,
 * listens, and logs the one startup line. main.ts owns the signals that stop it.
 */
import type { FastifyInstance, FastifyServerOptions } from "fastify";
import type { Config } from "../config.js";
import { buildServer } from "../server.js";
import { type Database, openDatabase } from "../storage/database.js";

/** A listening server. */
export interface Serving {
  readonly app: FastifyInstance;
  /** Where it listens, e.g. `http://127.0.0.1:8080`. */
  readonly address: string;
  /** Drains and closes the server, then the database. */
  close(): Promise<void>;
}

/** What every port serves, as the startup line lists it. */
export const protocols = ["gRPC", "gRPC-Web", "Connect", "WebSocket /ws", "HTTP"];

/** Starts serving with `config`; the startup line names `version`. */
export async function startServing(config: Config, version: string): Promise<Serving> {
  const database = await openDatabase(
    config.databaseUrl !== undefined
      ? {
          url: config.databaseUrl,
          poolSize: config.dbPoolSize,
          statementTimeoutMs: config.dbStatementTimeoutMs,
        }
      : { dataDir: config.dataDir },
  );
  let app: FastifyInstance;
  try {
    ({ app } = await buildServer({ config, database, logger: loggerOptions(config) }));
  } catch (err) {
    // Close the pool, or its connections keep the process alive after the error.
    await database.close().catch(() => {});
    throw err;
  }
  const listening = await app.listen({ port: config.port, host: config.host });
  // Fastify names the scheme from its own https option, which a server factory bypasses.
  const tls = config.tlsCert !== undefined;
  const address = tls ? listening.replace(/^http:/, "https:") : listening;
  logStartup(app, { config, database, address, version });
  return {
    app,
    address,
    async close() {
      await app.close();
      await database.close();
    },
  };
}

function logStartup(
  app: FastifyInstance,
  at: { config: Config; database: Database; address: string; version: string },
): void {
  const { config, database, address, version } = at;
  const tls = config.tlsCert !== undefined;
  const agents = !tls
    ? "agents unauthenticated"
    : config.tlsClientCa === undefined
      ? "agents unauthenticated (no TRIPWIRE_TLS_CLIENT_CA)"
      : `agent certificates ${config.tlsClientAuth === "require" ? "required" : "optional"}`;
  app.log.info(
    { version, address, database: database.kind, protocols, tls },
    `tripwire-dashboard listening on ${address} (version ${version}; database: ${database.kind}; protocols: ${protocols.join(", ")}${tls ? " over TLS" : ""}; ${agents})`,
  );
}

/**
 * pino at the configured level, minus Fastify's own "Server listening at" lines (one per
 * interface on 0.0.0.0): the startup line says where the server listens, once.
 */
function loggerOptions(config: Config): FastifyServerOptions["logger"] {
  return {
    level: config.logLevel,
    hooks: {
      logMethod(args, method) {
        const [first] = args;
        if (typeof first === "string" && first.startsWith("Server listening at ")) return;
        method.apply(this, args);
      },
    },
  };
}
