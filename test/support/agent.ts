/**
 * Helpers that act like a deployed agent: build events and stream them pipelined.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  type AgentEvent,
  AgentEventSchema,
  type AlertService,
  type ServerCommand,
} from "../../src/gen/alert/alert_pb.js";

/** A valid event for `hostId`, with any field overridden. */
export function makeEvent(hostId: string, overrides: Partial<AgentEvent> = {}): AgentEvent {
  return create(AgentEventSchema, {
    alertId: randomUUID(),
    hostId,
    timestampUs: BigInt(Date.now()) * 1000n,
    tripwireType: "FILE",
    ruleName: "etc-passwd-write",
    severity: "CRITICAL",
    eventDetailJson: new TextEncoder().encode('{"path":"/etc/passwd","pid":4242}'),
    ...overrides,
  });
}

/** A decoded ServerCommand. */
export interface Reply {
  readonly type: string;
  readonly alertId: string;
  readonly error?: string;
}

/** Decodes a ServerCommand's JSON payload. */
export function decodeReply(cmd: ServerCommand): Reply {
  const payload = JSON.parse(new TextDecoder().decode(cmd.payload)) as {
    alert_id: string;
    error?: string;
  };
  return payload.error === undefined
    ? { type: cmd.type, alertId: payload.alert_id }
    : { type: cmd.type, alertId: payload.alert_id, error: payload.error };
}

/**
 * Sends all `events` on one stream without waiting for replies (as agents do), then
 * half-closes and collects every reply until the server ends the stream.
 */
export async function streamAll(
  client: Client<typeof AlertService>,
  events: readonly AgentEvent[],
): Promise<Reply[]> {
  async function* send(): AsyncGenerator<AgentEvent> {
    yield* events;
  }
  const replies: Reply[] = [];
  for await (const cmd of client.streamAlerts(send())) replies.push(decodeReply(cmd));
  return replies;
}

/** Registers a host and returns its host_id. */
export async function register(
  client: Client<typeof AlertService>,
  hostname = `host-${randomUUID().slice(0, 8)}`,
): Promise<string> {
  const res = await client.registerAgent({ hostname, platform: "linux", agentVersion: "test" });
  return res.hostId;
}
