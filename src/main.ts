/**
 * The server process: reads the configuration, opens the database, listens, and shuts
 * down gracefully on SIGTERM/SIGINT. The only file that touches `process`.
 */
import { ConfigError, loadConfig } from "./config.js";
import { buildServer } from "./server.js";
import { openDatabase } from "./storage/database.js";

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const database = await openDatabase(
    config.databaseUrl !== undefined
      ? {
          url: config.databaseUrl,
          poolSize: config.dbPoolSize,
          statementTimeoutMs: config.dbStatementTimeoutMs,
        }
      : { dataDir: config.dataDir },
  );
  let built: Awaited<ReturnType<typeof buildServer>>;
  try {
    built = await buildServer({ config, database });
  } catch (err) {
    // Close the pool, or its connections keep the process alive after the error.
    await database.close().catch(() => {});
    throw err;
  }
  const { app } = built;
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal }, "shutting down");
    try {
      await app.close();
      await database.close();
      process.exitCode = 0;
    } catch (err) {
      app.log.error({ err }, "shutdown failed");
      process.exitCode = 1;
    }
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));

  const listening = await app.listen({ port: config.port, host: config.host });
  // Fastify names the scheme from its own https option, which a server factory bypasses.
  const tls = config.tlsCert !== undefined;
  const address = tls ? listening.replace(/^http:/, "https:") : listening;
  const agents = !tls
    ? "agents unauthenticated"
    : config.tlsClientCa === undefined
      ? "agents unauthenticated (no TRIPWIRE_TLS_CLIENT_CA)"
      : `agent certificates ${config.tlsClientAuth === "require" ? "required" : "optional"}`;
  app.log.info(
    { address, database: database.kind, tls },
    `tripwire-dashboard listening on ${address} (database: ${database.kind}; gRPC, gRPC-Web, Connect, WebSocket /ws; ${agents})`,
  );
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`configuration error: ${err.message}`);
  } else {
    console.error("tripwire-dashboard failed to start:", err);
  }
  process.exitCode = 1;
});
