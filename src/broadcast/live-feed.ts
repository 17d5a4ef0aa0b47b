/**
 * The server's Broadcaster: committed batches from this instance (and, with Redis, from
 * the others) pass through the Sequencer, which delivers them to the in-process fan-out
 * in seq order with gaps read back from the database.
 */
import type { Logger } from "../logger.js";
import {
  type Broadcaster,
  type DropReason,
  InProcessBroadcaster,
  type Subscription,
} from "./broadcaster.js";
import { type LiveAlert, LiveBatch } from "./live-batch.js";
import { RedisRelay } from "./redis-relay.js";
import { type FeedSource, Sequencer } from "./sequencer.js";

/** A Broadcaster that also knows how far the feed has been delivered. */
export interface LiveFeed extends Broadcaster {
  /**
   * Every alert with seq ≤ watermark has been published to subscribers, and every later
   * one will be: a new subscriber replays up to it from the database, then goes live.
   */
  readonly watermark: number;
  /** Whether alerts from other instances arrive over Redis now (undefined: no Redis). */
  readonly redisConnected: boolean | undefined;
  /** Alerts read back from the database because no message brought them. */
  readonly repaired: number;
}

/** Settings of the live feed. */
export interface LiveFeedOptions {
  readonly source: FeedSource;
  readonly bufferSize: number;
  readonly gapRepairMs: number;
  readonly pollMs: number;
  readonly redis?: { readonly url: string; readonly channel: string } | undefined;
  readonly log: Logger;
}

/** Starts the live feed at the database's newest seq (and connects to Redis if configured). */
export async function startLiveFeed(options: LiveFeedOptions): Promise<LiveFeed> {
  const fanout = new InProcessBroadcaster({ bufferSize: options.bufferSize, log: options.log });
  let relay: RedisRelay | undefined;
  const sequencer = new Sequencer(await options.source.latestSeq(), {
    source: options.source,
    emit: (batch) => fanout.publishBatch(batch),
    gapRepairMs: options.gapRepairMs,
    pollMs: options.pollMs,
    repairPageSize: 2_000,
    log: options.log,
  });
  if (options.redis !== undefined) {
    relay = new RedisRelay({
      ...options.redis,
      onBatch: (batch) => sequencer.accept(batch),
      onReconnect: () => sequencer.checkNow(),
      log: options.log,
    });
    try {
      await relay.start();
    } catch (err) {
      // Start anyway: local alerts do not need Redis, and the relay keeps retrying.
      options.log.warn({ err: (err as Error).message }, "redis unreachable at start; retrying");
    }
  }

  const publishBatch = (batch: LiveBatch | readonly LiveAlert[]): void => {
    const live =
      batch instanceof LiveBatch ? batch : batch.length > 0 ? LiveBatch.of(batch) : undefined;
    if (live === undefined) return;
    relay?.publish(live);
    sequencer.accept(live);
  };
  const feed: LiveFeed = {
    subscribe: (signal: AbortSignal): Subscription => fanout.subscribe(signal),
    publish: (alert: LiveAlert) => publishBatch(LiveBatch.of([alert])),
    publishBatch,
    get size() {
      return fanout.size;
    },
    get drops(): Readonly<Record<DropReason, number>> {
      return fanout.drops;
    },
    get watermark() {
      return sequencer.watermark;
    },
    get redisConnected() {
      return relay?.connected;
    },
    get repaired() {
      return sequencer.repaired;
    },
    close() {
      sequencer.close();
      void relay?.close();
      fanout.close();
    },
  };
  return feed;
}
