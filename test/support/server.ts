/**
 * A real server on an ephemeral port, with real clients for its protocols.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type Config, configWith } from "../../src/config.js";
import { AlertService } from "../../src/gen/alert/alert_pb.js";
import { buildServer, type Server, type ServerDeps } from "../../src/server.js";
import type { Database } from "../../src/storage/database.js";

/** A listening server and how to reach it. */
export interface RunningServer extends Server {
  readonly port: number;
  readonly baseUrl: string;
  readonly wsUrl: string;
  readonly config: Config;
  /** A gRPC (HTTP/2, h2c) client of the AlertService. */
  grpcClient(): Client<typeof AlertService>;
  close(): Promise<void>;
}

/**
 * Starts the real server on 127.0.0.1 over `database`: on an ephemeral port, or on
 * `overrides.port` (a restart on the same port, as browsers reconnecting expect).
 */
export async function startServer(
  database: Database,
  overrides: Partial<Config> = {},
  extra: Omit<ServerDeps, "config" | "database"> = {},
): Promise<RunningServer> {
  const config = configWith({ port: 0, logLevel: "silent", ...overrides });
  const server = await buildServer({ config, database, logger: false, ...extra });
  await server.app.listen({ port: config.port, host: "127.0.0.1" });
  const address = server.app.server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  const baseUrl = `http://127.0.0.1:${address.port}`;
  return {
    ...server,
    port: address.port,
    baseUrl,
    wsUrl: `ws://127.0.0.1:${address.port}/ws`,
    config,
    grpcClient: () => createClient(AlertService, createGrpcTransport({ baseUrl })),
    close: () => server.app.close(),
  };
}
