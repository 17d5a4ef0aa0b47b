/**
 * A StreamAlerts stream that stays open until the test ends it: events are sent one at a
 * time when the test says, and replies are read as they come.
 */
import type { Client } from "@connectrpc/connect";
import type { AgentEvent, AlertService } from "../../src/gen/alert/alert_pb.js";
import { decodeReply, type Reply } from "./agent.js";

/** An open agent stream. */
export interface OpenStream {
  /** Sends one event and resolves with its reply. */
  send(event: AgentEvent): Promise<Reply>;
  /** Sends every event without waiting (pipelined) and resolves with their replies. */
  sendAll(events: readonly AgentEvent[]): Promise<Reply[]>;
  /** Half-closes the stream and resolves once the server has ended it. */
  end(): Promise<void>;
}

/** Opens a stream that sends nothing until `send` is called. */
export function openStream(client: Client<typeof AlertService>): OpenStream {
  const queue: AgentEvent[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  async function* events(): AsyncGenerator<AgentEvent> {
    for (;;) {
      const next = queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (ended) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  }
  const replies = client.streamAlerts(events())[Symbol.asyncIterator]();
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    async send(event) {
      queue.push(event);
      poke();
      const next = await replies.next();
      if (next.done === true) throw new Error("the stream ended before the reply");
      return decodeReply(next.value);
    },
    async sendAll(events) {
      queue.push(...events);
      poke();
      const out: Reply[] = [];
      while (out.length < events.length) {
        const next = await replies.next();
        if (next.done === true) throw new Error("the stream ended before every reply");
        out.push(decodeReply(next.value));
      }
      return out;
    },
    async end() {
      ended = true;
      poke();
      while (!(await replies.next()).done) {
        // Replies left over are not this helper's concern.
      }
    },
  };
}
