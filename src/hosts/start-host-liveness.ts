/**
 * Builds host liveness for one server: the tracker over the database, and with Redis
 * the relay that shares its changes with the other instances.
 */
import type { Config } from "../config.js";
import type { Logger } from "../logger.js";
import type { Database } from "../storage/database.js";
import { HostLiveness } from "./host-liveness.js";
import { HostStatusRelay } from "./host-status-relay.js";
import { createHostStore, type HostStore } from "./host-store.js";

/** Running host liveness and what the routes need of it. */
export interface HostLivenessService {
  readonly liveness: HostLiveness;
  readonly store: HostStore;
  /** Writes the last `last_seen` and disconnects; call before the database closes. */
  close(): Promise<void>;
}

/** Starts the tracker (and the relay when `REDIS_URL` is set). */
export async function startHostLiveness(deps: {
  readonly database: Database;
  readonly config: Config;
  readonly log: Logger;
}): Promise<HostLivenessService> {
  const { config, log } = deps;
  const store = createHostStore(deps.database);
  const liveness = new HostLiveness({
    store,
    offlineAfterMs: config.hostOfflineAfterMs,
    flushMs: config.hostSeenFlushMs,
    log,
  });
  let relay: HostStatusRelay | undefined;
  if (config.redisUrl !== undefined) {
    relay = new HostStatusRelay({
      url: config.redisUrl,
      channel: `${config.redisChannel}:hosts`,
      onChange: (change) => liveness.acceptRemote(change),
      log,
    });
    const r = relay;
    liveness.relay = (change) => r.publish(change);
    // Without Redis at start, the relay keeps retrying; the live feed already warns.
    await relay.start().catch(() => {});
  }
  await liveness.start();
  return {
    liveness,
    store,
    async close() {
      await liveness.close();
      relay?.close();
    },
  };
}
