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

/** Events a test hands to a stream as it goes: the stream's request side. */
export interface EventQueue {
  /** What to pass to `streamAlerts`: yields each pushed event, ends after `close`. */
  readonly events: AsyncIterable<AgentEvent>;
  push(...events: AgentEvent[]): void;
  /** Half-closes the stream once the pushed events have gone out. */
  close(): void;
}

/** A queue of events for one stream, empty and open. */
export function eventQueue(): EventQueue {
  const queue: AgentEvent[] = [];
  let closed = false;
  let wake: (() => void) | undefined;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  async function* events(): AsyncGenerator<AgentEvent> {
    for (;;) {
      const next = queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (closed) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  }
  return {
    events: events(),
    push(...more) {
      queue.push(...more);
      poke();
    },
    close() {
      closed = true;
      poke();
    },
  };
}

/** Opens a stream that sends nothing until `send` is called. */
export function openStream(client: Client<typeof AlertService>): OpenStream {
  const queue = eventQueue();
  const replies = client.streamAlerts(queue.events)[Symbol.asyncIterator]();
  return {
    async send(event) {
      queue.push(event);
      const next = await replies.next();
      if (next.done === true) throw new Error("the stream ended before the reply");
      return decodeReply(next.value);
    },
    async sendAll(events) {
      queue.push(...events);
      const out: Reply[] = [];
      while (out.length < events.length) {
        const next = await replies.next();
        if (next.done === true) throw new Error("the stream ended before every reply");
        out.push(decodeReply(next.value));
      }
      return out;
    },
    async end() {
      queue.close();
      while (!(await replies.next()).done) {
        // Replies left over are not this helper's concern.
      }
    },
  };
}
