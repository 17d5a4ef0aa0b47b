/**
 * What the live feed carries: committed alerts with their sequence numbers, grouped in
 * the batches they were committed (or repaired) in.
 */

/** One committed alert as the live feed needs it: filter keys and prebuilt JSON. */
export interface LiveAlert {
  readonly seq: number;
  readonly alertId: string;
  readonly hostId: string;
  readonly severity: string;
  readonly tripwireType: string;
  /** The alert object of docs/websocket.md, as JSON text (built once). */
  readonly dataJson: string;
  /** The version-0 frame `{"type":"alert","data":…}` (built once). */
  readonly frame: string;
}

/**
 * A run of the feed: every committed alert with seq in [fromSeq, toSeq] (numbers in
 * the range without an alert do not exist). Frames built from a whole batch are cached
 * here, so a thousand subscribers share one string.
 */
export class LiveBatch {
  #framesV1: Buffer | undefined;

  constructor(
    readonly alerts: readonly LiveAlert[],
    readonly fromSeq: number,
    readonly toSeq: number,
  ) {}

  /** Builds a batch that covers exactly its alerts' seqs (alerts in seq order). */
  static of(alerts: readonly LiveAlert[]): LiveBatch {
    const first = alerts[0];
    const last = alerts[alerts.length - 1];
    if (first === undefined || last === undefined) throw new Error("empty batch");
    return new LiveBatch(alerts, first.seq, last.seq);
  }

  /**
   * The version-1 `alerts` message carrying every alert of the batch, encoded once as
   * UTF-8: every subscriber's socket gets the same bytes, with no per-subscriber encoding.
   */
  get frameV1(): Buffer {
    this.#framesV1 ??= Buffer.from(alertsFrame(this.alerts));
    return this.#framesV1;
  }
}

/** `{"type":"alerts","items":[…]}` for `alerts`. */
export function alertsFrame(alerts: readonly LiveAlert[]): string {
  let items = "";
  for (let i = 0; i < alerts.length; i++) {
    items += i === 0 ? (alerts[i] as LiveAlert).dataJson : `,${(alerts[i] as LiveAlert).dataJson}`;
  }
  return `{"type":"alerts","items":[${items}]}`;
}

/** An alert that arrived from another instance (or was read back), as JSON text. */
export class JsonAlert implements LiveAlert {
  #frame: string | undefined;

  constructor(
    readonly seq: number,
    readonly alertId: string,
    readonly hostId: string,
    readonly severity: string,
    readonly tripwireType: string,
    readonly dataJson: string,
  ) {}

  get frame(): string {
    this.#frame ??= `{"type":"alert","data":${this.dataJson}}`;
    return this.#frame;
  }
}
