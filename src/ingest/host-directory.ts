/**
 * Which host_ids are registered, and their hostnames: checked for every event, so kept
 * in memory. A miss asks the database once (another instance may have registered the
 * host); unknown ids are remembered briefly so a flood of them cannot flood the database.
 */
import type { AlertStore } from "../storage/alert-store.js";

const negativeTtlMs = 5_000;
const maxNegative = 10_000;

/** Cache of registered hosts in front of the store. */
export class HostDirectory {
  readonly #known = new Map<string, string>();
  readonly #unknown = new Map<string, number>();
  readonly #store: AlertStore;

  constructor(store: AlertStore) {
    this.#store = store;
  }

  /** Records a registration (from RegisterAgent on this instance). */
  remember(hostId: string, hostname: string): void {
    this.#known.set(hostId, hostname);
    this.#unknown.delete(hostId);
  }

  /** The hostname of a registered host, without I/O; undefined when not cached. */
  cached(hostId: string): string | undefined {
    return this.#known.get(hostId);
  }

  /** The hostname of a registered host, or undefined if no host has this id. */
  async lookup(hostId: string): Promise<string | undefined> {
    const hit = this.#known.get(hostId);
    if (hit !== undefined) return hit;
    const missedAt = this.#unknown.get(hostId);
    if (missedAt !== undefined && Date.now() - missedAt < negativeTtlMs) return undefined;
    const hostname = await this.#store.findHostname(hostId);
    if (hostname !== undefined) {
      this.remember(hostId, hostname);
    } else {
      if (this.#unknown.size >= maxNegative) this.#unknown.clear();
      this.#unknown.set(hostId, Date.now());
    }
    return hostname;
  }
}
