/**
 * A version-1 /ws client that resumes with `since` across reconnects and keeps what it
 * received, and the stored alerts to compare it with: for the gap-free feed tests.
 */
import { once } from "node:events";
import { sql } from "drizzle-orm";
import { expect } from "vitest";
import { WebSocket } from "ws";
import type { Database } from "../../src/storage/database.js";

/** What a client keeps of an alert. */
export interface Received {
  readonly seq: number;
  readonly alert_id: string;
}

/** Messages that need no action from a client of the alert feed. */
const routine = new Set(["hello", "heartbeat", "host_status"]);

/**
 * A version-1 /ws client that keeps every alert it received over all its connections and
 * resumes with `since` = the highest seq it has.
 */
export class ResumingClient {
  readonly items: Received[] = [];
  /** `dropped`, `reset` and `error` messages: the guarantee does not cover those. */
  readonly notices: string[] = [];
  /** Alerts that arrived out of seq order or twice, as they arrived. */
  readonly outOfOrder: number[] = [];
  /** How many times it has connected. */
  connections = 0;
  readonly #ids = new Set<string>();
  #socket: WebSocket | undefined;
  #waiters: Array<{ done: () => boolean; resolve: () => void }> = [];

  get lastSeq(): number {
    return this.items.at(-1)?.seq ?? 0;
  }

  /** Connects with `since` and resolves once the replay is done (the `live` message). */
  async connect(wsUrl: string): Promise<void> {
    const socket = new WebSocket(`${wsUrl}?since=${this.lastSeq}`, ["tripwire.v1"]);
    this.#socket = socket;
    this.connections++;
    const live = new Promise<void>((resolve, reject) => {
      socket.once("close", (code) => reject(new Error(`closed (${code}) before "live"`)));
      socket.on("message", (data) => {
        const text = String(data);
        const message = JSON.parse(text) as { type: string; items?: Received[] };
        if (message.type === "alerts") this.#take(message.items ?? []);
        else if (message.type === "live") resolve();
        // Host liveness is not the alert feed's business: set aside like hello and heartbeat.
        else if (!routine.has(message.type)) this.notices.push(text);
      });
    });
    await once(socket, "open");
    expect(socket.protocol).toBe("tripwire.v1");
    await live;
  }

  /** Closes the connection and waits until it is closed. */
  async disconnect(): Promise<void> {
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined || socket.readyState === socket.CLOSED) return;
    const closed = once(socket, "close");
    socket.close();
    await closed;
  }

  /** Resolves once an alert with seq ≥ `seq` arrived; rejects after `ms`. */
  untilSeq(seq: number, ms = 30_000): Promise<void> {
    return this.#until(() => this.lastSeq >= seq, `seq ${seq}`, ms);
  }

  /** Resolves once the alert `alertId` arrived; rejects after `ms`. */
  untilAlert(alertId: string, ms = 30_000): Promise<void> {
    return this.#until(() => this.#ids.has(alertId), `alert ${alertId}`, ms);
  }

  #until(done: () => boolean, what: string, ms: number): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`waited for ${what}; the last seq received is ${this.lastSeq}`)),
        ms,
      );
      this.#waiters.push({
        done,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  #take(items: readonly Received[]): void {
    for (const { seq, alert_id } of items) {
      if (seq <= this.lastSeq) {
        this.outOfOrder.push(seq);
        continue;
      }
      this.items.push({ seq, alert_id });
      this.#ids.add(alert_id);
    }
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.done()) return true;
      w.resolve();
      return false;
    });
  }
}

/** Every stored alert, in seq order. */
export async function storedAlerts(database: Database): Promise<Received[]> {
  const rows = await database.rows<{ seq: string; alert_id: string }>(
    sql`select a.seq::text as seq, a.alert_id::text as alert_id from alerts a order by a.seq`,
  );
  return rows.map((r) => ({ seq: Number(r.seq), alert_id: r.alert_id }));
}
