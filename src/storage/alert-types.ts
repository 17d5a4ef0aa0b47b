/**
 * The alert as it travels from validation to the database and on to subscribers.
 */

/** A validated alert, ready to be stored. Times are Unix epoch microseconds. */
export interface NewAlert {
  /** Lower-case UUID: the idempotency key. */
  readonly alertId: string;
  readonly hostId: string;
  readonly hostname: string;
  readonly timestampUs: bigint;
  readonly tripwireType: string;
  readonly ruleName: string;
  readonly severity: string;
  /** Validated JSON text (`{}` when the agent sent none). */
  readonly eventDetailJson: string;
  readonly receivedAtUs: bigint;
}

/**
 * A committed alert, as published to subscribers. Its WebSocket frame is built once,
 * on first use, and shared by every subscriber.
 */
export class StoredAlert implements NewAlert {
  #frame: string | undefined;
  #data: string | undefined;

  constructor(
    alert: NewAlert,
    /** Server-assigned sequence number: the order and the cursor of the feed. */
    readonly seq: number,
  ) {
    this.alertId = alert.alertId;
    this.hostId = alert.hostId;
    this.hostname = alert.hostname;
    this.timestampUs = alert.timestampUs;
    this.tripwireType = alert.tripwireType;
    this.ruleName = alert.ruleName;
    this.severity = alert.severity;
    this.eventDetailJson = alert.eventDetailJson;
    this.receivedAtUs = alert.receivedAtUs;
  }

  readonly alertId: string;
  readonly hostId: string;
  readonly hostname: string;
  readonly timestampUs: bigint;
  readonly tripwireType: string;
  readonly ruleName: string;
  readonly severity: string;
  readonly eventDetailJson: string;
  readonly receivedAtUs: bigint;

  /** `{"type":"alert","data":{…}}`, the message of the wire contract, plus `seq`. */
  get frame(): string {
    this.#frame ??= `{"type":"alert","data":${this.dataJson}}`;
    return this.#frame;
  }

  /** The alert object (the frame's `data`), as JSON text, built once. */
  get dataJson(): string {
    // The detail is embedded as the JSON text that validation already parsed once;
    // every other string goes through JSON.stringify, since agents chose it.
    this.#data ??=
      `{"seq":${this.seq},"alert_id":"${this.alertId}","host_id":"${this.hostId}",` +
      `"hostname":${JSON.stringify(this.hostname)},"timestamp":"${formatMicros(this.timestampUs)}",` +
      `"tripwire_type":"${this.tripwireType}","rule_name":${JSON.stringify(this.ruleName)},` +
      `"severity":"${this.severity}","event_detail":${this.eventDetailJson},` +
      `"received_at":"${formatMicros(this.receivedAtUs)}"}`;
    return this.#data;
  }
}

/** Formats Unix epoch microseconds as RFC 3339 UTC with six fractional digits. */
export function formatMicros(us: bigint): string {
  let seconds = us / 1_000_000n;
  let micros = us % 1_000_000n;
  if (micros < 0n) {
    micros += 1_000_000n;
    seconds -= 1n;
  }
  const iso = new Date(Number(seconds) * 1000).toISOString();
  return `${iso.slice(0, 19)}.${micros.toString().padStart(6, "0")}Z`;
}

/** The current time in Unix epoch microseconds (millisecond resolution). */
export function nowMicros(): bigint {
  return BigInt(Date.now()) * 1000n;
}
