/**
 * A minimal bidi echo service for the RPC-headroom scenario: `bench.Echo/Stream` takes
 * the agents' own messages (alert.AgentEvent) and answers each with an ACK
 * (alert.ServerCommand, `{"alert_id":…}`), as StreamAlerts does, but with no
 * validation, storage or fan-out behind it. The same descriptor serves both servers
 * (Connect on Fastify, @grpc/grpc-js) and the client, so both get the same bytes.
 *
 * Built from a descriptor at runtime: it is bench-only and needs no generated code.
 */
import {
  create,
  createFileRegistry,
  type DescService,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  type AgentEvent,
  AgentEventSchema,
  file_alert_alert,
  type ServerCommand,
  ServerCommandSchema,
} from "../../src/gen/alert/alert_pb.js";

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "bench/echo.proto",
    package: "bench",
    dependency: ["alert/alert.proto"],
    syntax: "proto3",
    service: [
      {
        name: "Echo",
        method: [
          {
            name: "Stream",
            inputType: ".alert.AgentEvent",
            outputType: ".alert.ServerCommand",
            clientStreaming: true,
            serverStreaming: true,
          },
        ],
      },
    ],
  }),
  (name) => (name === "alert/alert.proto" ? file_alert_alert : undefined),
);

/** The service `bench.Echo` with one bidi method, `Stream`. */
export const EchoService = registry.getService("bench.Echo") as DescService;

/** The HTTP/2 path of the method, for servers that route by path. */
export const echoStreamPath = "/bench.Echo/Stream";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The reply to one event: an ACK naming its alert_id, as the real service sends. */
export function echoReply(event: AgentEvent): ServerCommand {
  return create(ServerCommandSchema, {
    type: "ACK",
    payload: encoder.encode(`{"alert_id":"${event.alertId}"}`),
  });
}

/** The alert_id an echo reply names. */
export function repliedAlertId(reply: ServerCommand): string {
  return (JSON.parse(decoder.decode(reply.payload)) as { alert_id: string }).alert_id;
}

export const encodeEvent = (m: AgentEvent): Buffer => Buffer.from(toBinary(AgentEventSchema, m));
export const decodeEvent = (b: Buffer): AgentEvent => fromBinary(AgentEventSchema, b);
export const encodeReply = (m: ServerCommand): Buffer =>
  Buffer.from(toBinary(ServerCommandSchema, m));
export const decodeReply = (b: Buffer): ServerCommand => fromBinary(ServerCommandSchema, b);
