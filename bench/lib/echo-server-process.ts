/**
 * An echo server for the RPC-headroom scenario, as its own process on 127.0.0.1, h2c:
 * `connect` (Connect on Fastify over HTTP/2 cleartext, the stack of our server) or
 * `grpc-js` (@grpc/grpc-js). Tells the parent its port over IPC; runs until killed.
 *
 * Run by bench/scenarios/rpc-headroom.ts: `node --import tsx bench/lib/echo-server-process.ts <kind>`.
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import * as grpc from "@grpc/grpc-js";
import { fastify } from "fastify";
import type { AgentEvent, ServerCommand } from "../../src/gen/alert/alert_pb.js";
import {
  decodeEvent,
  decodeReply,
  EchoService,
  echoReply,
  echoStreamPath,
  encodeEvent,
  encodeReply,
} from "./echo-service.js";
import { sendToParent } from "./ipc.js";

async function startConnect(): Promise<number> {
  const app = fastify({ http2: true });
  await app.register(fastifyConnectPlugin, {
    routes(router: ConnectRouter) {
      // A runtime descriptor carries no method types, so the implementation is untyped to it.
      const impl = {
        async *stream(requests: AsyncIterable<AgentEvent>) {
          for await (const event of requests) yield echoReply(event);
        },
      };
      router.service(EchoService, impl as never);
    },
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

async function startGrpcJs(): Promise<number> {
  const server = new grpc.Server();
  const definition: grpc.ServiceDefinition = {
    stream: {
      path: echoStreamPath,
      requestStream: true,
      responseStream: true,
      requestSerialize: encodeEvent,
      requestDeserialize: decodeEvent,
      responseSerialize: encodeReply,
      responseDeserialize: decodeReply,
    },
  };
  server.addService(definition, {
    stream(call: grpc.ServerDuplexStream<AgentEvent, ServerCommand>) {
      call.on("data", (event: AgentEvent) => call.write(echoReply(event)));
      call.on("end", () => call.end());
    },
  });
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) =>
      err === null ? resolve(port) : reject(err),
    ),
  );
}

const kind = process.argv[2];
const started =
  kind === "connect"
    ? startConnect()
    : kind === "grpc-js"
      ? startGrpcJs()
      : Promise.reject(
          new Error(`unknown echo server ${JSON.stringify(kind)}: expected connect or grpc-js`),
        );
started
  .then((port) => sendToParent({ type: "listening", port }))
  .catch((err: unknown) => {
    process.stderr.write(`echo server failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exitCode = 1;
    process.disconnect();
  });
