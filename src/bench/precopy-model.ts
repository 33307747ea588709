/**
 * The analytic pre-copy model the benchmark report puts next to every measured pre-copy row:
 * the iterative model of Clark et al. (NSDI 2005) and Akoush et al. (MASCOTS 2010), with the
 * writable working set bounding what a round can find dirty. Pure arithmetic.
 *
 * Memory of M bytes is sent in rounds over a link of B bytes/s, each byte costing `wireRatio`
 * bytes on the wire in the first round (zero pages, compression) and `dirtyWireRatio` after. Writes land at D bytes/s, uniformly over a
 * writable set of W bytes (the whole memory for a uniform pattern, the hot set otherwise), so
 * the distinct bytes dirtied in an interval t are W · (1 − e^(−D·t/W)): D·t while small, never
 * more than W. Round 0 sends M; round k sends what round k−1's interval dirtied; a round lasts
 * its scan (M / scan rate) plus its transfer. After each round the pending final phase is what
 * the next interval would dirty; the rounds stop by godwit's rules (src/memory/convergence.ts),
 * in its order: the predicted final phase fits the downtime target; the rounds limit; the dirty
 * rate on the wire (an interval's dirty bytes over its length) reaches the link for
 * DIRTY_RATE_PATIENCE rounds; the pending bytes
 * no longer shrink by MIN_SHRINK for NOT_SHRINKING_PATIENCE rounds. Every transfer (each round's
 * and the final one) also pays a fixed cost, one RTT unless a measured one is given (on a long
 * RTT a fresh TCP connection's slow start costs several). Downtime = a fixed stop cost (freeze,
 * dump, restore: measured, not modelled) + the final transfer.
 */
import {
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_MAX_ROUNDS,
  DIRTY_RATE_PATIENCE,
  MIN_SHRINK,
  NOT_SHRINKING_PATIENCE,
} from '../memory/convergence.js';

/** Scan rate of a round, bytes/s: /proc/PID/mem read with per-page hashing here (~600 MB/s). */
export const MODEL_SCAN_BYTES_PER_S = 600e6;

/** What the model needs; rates in bytes/s, times in ms. */
export interface PrecopyModelInput {
  residentBytes: number;
  dirtyBytesPerS: number;
  /** Where the writes land: all of the memory (uniform) or the hot set. */
  writableBytes: number;
  /** Wire bytes per memory byte in the first round (zero pages and compression make it < 1). */
  wireRatio: number;
  /** Wire bytes per byte of the pages rewritten since (default wireRatio): rewrites are often less compressible. */
  dirtyWireRatio?: number;
  linkBytesPerS: number;
  rttMs: number;
  scanBytesPerS?: number;
  maxDowntimeMs?: number;
  maxRounds?: number;
  /** The stop's fixed cost, independent of the bytes moved; 0 when unknown. */
  stopOverheadMs?: number;
  /**
   * A transfer's fixed cost, independent of its bytes (handshakes, TCP slow start on a long
   * RTT), added to every round and to the final transfer; default one RTT.
   */
  roundOverheadMs?: number;
}

export type ModelStopReason = 'downtime-target' | 'max-rounds' | 'dirty-rate-exceeds-link' | 'not-shrinking';

/** The model's answer. */
export interface PrecopyModelOutput {
  rounds: { round: number; bytes: number; wireBytes: number; durationMs: number }[];
  stopReason: ModelStopReason;
  /** Every round's wire bytes plus the final phase's. */
  wireBytes: number;
  finalWireBytes: number;
  /** The final phase's transfer, one round trip included. */
  finalTransferMs: number;
  downtimeMs: number;
  /** Rounds + downtime. */
  totalMs: number;
}

/** Distinct bytes dirtied in `ms` by writes at `rate` bytes/s spread uniformly over `set` bytes. */
export function dirtiedBytes(rate: number, set: number, ms: number): number {
  if (set <= 0 || rate <= 0 || ms <= 0) return 0;
  return set * (1 - Math.exp((-rate * ms) / 1000 / set));
}

/** Runs the model. Throws RangeError on non-positive memory or link rate. */
export function predictPrecopy(input: PrecopyModelInput): PrecopyModelOutput {
  const M = input.residentBytes;
  const B = input.linkBytesPerS;
  if (!(M > 0) || !(B > 0))
    throw new RangeError('predictPrecopy: residentBytes and linkBytesPerS must be > 0');
  const w = input.wireRatio > 0 ? input.wireRatio : 1;
  const W = Math.min(Math.max(input.writableBytes, 0), M);
  const D = Math.max(input.dirtyBytesPerS, 0);
  const scanMs = (M / (input.scanBytesPerS ?? MODEL_SCAN_BYTES_PER_S)) * 1000;
  const target = input.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS;
  const maxRounds = input.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const wd = input.dirtyWireRatio !== undefined && input.dirtyWireRatio > 0 ? input.dirtyWireRatio : w;
  const ratio = (k: number): number => (k === 0 ? w : wd);
  const fixedMs = input.roundOverheadMs ?? input.rttMs;
  const sendMs = (bytes: number, k: number): number => fixedMs + ((bytes * ratio(k)) / B) * 1000;

  const rounds: PrecopyModelOutput['rounds'] = [];
  let bytes = M;
  let stopReason: ModelStopReason | undefined;
  let notShrinking = 0;
  let fastRounds = 0;
  let pending = 0;
  for (let k = 0; stopReason === undefined; k++) {
    const durationMs = scanMs + sendMs(bytes, k);
    rounds.push({ round: k, bytes, wireBytes: bytes * ratio(k), durationMs });
    const previous = pending;
    pending = dirtiedBytes(D, W, durationMs);
    if (k === 0) {
      if (maxRounds <= 1) stopReason = 'max-rounds';
    } else if (sendMs(pending, 1) <= target) stopReason = 'downtime-target';
    else if (k + 1 >= maxRounds) stopReason = 'max-rounds';
    else if (
      (fastRounds = (pending * wd * 1000) / durationMs >= B ? fastRounds + 1 : 0) >= DIRTY_RATE_PATIENCE
    )
      stopReason = 'dirty-rate-exceeds-link';
    else {
      notShrinking = pending > (1 - MIN_SHRINK) * previous ? notShrinking + 1 : 0;
      if (notShrinking >= NOT_SHRINKING_PATIENCE) stopReason = 'not-shrinking';
    }
    bytes = pending;
  }
  const finalWireBytes = pending * wd;
  const finalTransferMs = sendMs(pending, 1);
  const wireBytes = rounds.reduce((s, r) => s + r.wireBytes, 0) + finalWireBytes;
  const downtimeMs = (input.stopOverheadMs ?? 0) + finalTransferMs;
  const totalMs = rounds.reduce((s, r) => s + r.durationMs, 0) + downtimeMs;
  return { rounds, stopReason, wireBytes, finalWireBytes, finalTransferMs, downtimeMs, totalMs };
}
