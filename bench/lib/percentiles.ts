/**
 * Summaries of latency samples and of repeated runs.
 */

/** p50, p99 and max of a sample set, in its unit; undefined fields when it is empty. */
export interface Distribution {
  readonly count: number;
  readonly p50: number | undefined;
  readonly p99: number | undefined;
  readonly max: number | undefined;
}

/** The nearest-rank percentile `p` (0..100) of values already sorted ascending. */
export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Sorts a copy of `values` (a Float64Array sorts numerically) and summarizes it. */
export function distribution(values: ArrayLike<number>): Distribution {
  const sorted = Float64Array.from(values).sort();
  return {
    count: sorted.length,
    p50: percentileOfSorted(sorted, 50),
    p99: percentileOfSorted(sorted, 99),
    max: sorted.length > 0 ? sorted[sorted.length - 1] : undefined,
  };
}

/** The median of the defined values (the mean of the middle two for an even count). */
export function median(values: ReadonlyArray<number | undefined>): number | undefined {
  const defined = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (defined.length === 0) return undefined;
  defined.sort((a, b) => a - b);
  const mid = Math.floor(defined.length / 2);
  return defined.length % 2 === 1
    ? defined[mid]
    : ((defined[mid - 1] as number) + (defined[mid] as number)) / 2;
}

/** A growable array of doubles, cheap to append to on a hot path. */
export class SampleBuffer {
  #values = new Float64Array(1024);
  #length = 0;

  push(value: number): void {
    if (this.#length === this.#values.length) {
      const bigger = new Float64Array(this.#values.length * 2);
      bigger.set(this.#values);
      this.#values = bigger;
    }
    this.#values[this.#length++] = value;
  }

  get length(): number {
    return this.#length;
  }

  /** The samples pushed so far (a view; valid until the next push). */
  values(): Float64Array {
    return this.#values.subarray(0, this.#length);
  }
}
