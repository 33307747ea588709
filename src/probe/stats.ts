/** Statistics of a probe run. Pure functions over milliseconds. */

/** Latency percentiles of successful requests, ms. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** The longest stretch without a successful reply, relative to the start of the run. */
export interface Gap {
  gapMs: number;
  /** Start of the gap: the previous success, or 0 when the run began with it. */
  fromMs: number;
  /** End of the gap: the next success, or the end of the run. */
  toMs: number;
}

/**
 * The `p`-th percentile (0–100) of ascending `sorted` values by the nearest-rank method: the smallest value
 * such that at least p % of the values are ≤ it. Undefined for an empty list; throws RangeError for p outside 0–100.
 */
export function percentile(sorted: readonly number[], p: number): number | undefined {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside 0–100`);
  if (sorted.length === 0) return undefined;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/** p50/p90/p99/max of `values` (any order), or undefined when there are none. */
export function summarizeLatency(values: readonly number[]): LatencySummary | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50) ?? 0,
    p90: percentile(sorted, 90) ?? 0,
    p99: percentile(sorted, 99) ?? 0,
    max: sorted[sorted.length - 1] ?? 0,
  };
}

/**
 * The longest interval between consecutive success times (ascending, ms since the start), counting the
 * stretch from 0 to the first success and from the last success to `endMs`. With no success the gap is
 * the whole run. The earliest of equally long gaps wins.
 */
export function longestGap(successTimes: readonly number[], endMs: number): Gap {
  let best: Gap = { gapMs: -1, fromMs: 0, toMs: 0 };
  let prev = 0;
  for (const t of [...successTimes, Math.max(endMs, successTimes[successTimes.length - 1] ?? 0)]) {
    if (t - prev > best.gapMs) best = { gapMs: t - prev, fromMs: prev, toMs: t };
    prev = t;
  }
  return best;
}

/** How many times a value is lower than the one before it: restarts of a counter that only grows. */
export function countDecreases(values: readonly number[]): number {
  let n = 0;
  for (let i = 1; i < values.length; i++) if ((values[i] ?? 0) < (values[i - 1] ?? 0)) n++;
  return n;
}
