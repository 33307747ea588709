/**
 * Pre-copy stopping rules as pure data, in the manner of p.haul's iteration loop and QEMU's
 * downtime limit: after each round, `decideNextRound` looks at the rounds so far and says
 * whether another round should run, or why not. No clock, no I/O; same input, same output.
 *
 * Timeline: round k scans (finding the pages written since scan k−1), then sends the dirty
 * pages the predictor did not hold back; `durationMs` covers both. So the pages found by
 * scan k were written during round k−1, and round k's dirty rate is
 * dirtyPages_k · PAGE_SIZE / durationMs_{k−1}.
 *
 * Model, for the latest round L:
 * - pendingBytes: what the frozen final phase would send if pre-copy stopped now, estimated as
 *   (heldBackPages_L + dirtyPages_L) · PAGE_SIZE: the pages held back in round L are stale at the
 *   destination, and the next interval is taken to dirty as many pages as the last one did
 *   (an upper bound: held-back pages are mostly among those rewritten, and rounds shrink).
 * - compression ratio: Σ sentBytes / Σ wireBytes over the last RATE_WINDOW_ROUNDS rounds that
 *   sent anything (else over all rounds, else 1); pending wire bytes = pendingBytes / ratio.
 * - rateBps, the link rate in wire bytes per second: wireBytes / durationMs of the round with the
 *   most wire bytes among the last RATE_WINDOW_ROUNDS rounds that sent ≥ MIN_RATE_SAMPLE_BYTES;
 *   else of the latest such round before them; else the `linkRateBps` hint; else Infinity.
 *   The duration includes scanning, so this underestimates the link, erring towards more rounds.
 * - predictedFinalMs = rttMs + pending wire bytes / rateBps · 1000.
 *
 * Rules, in this order (the first that holds stops pre-copy):
 * 1. after round 0: proceed, unless maxRounds ≤ 1 ('max-rounds') or the time budget is spent
 *    ('max-total-time'); round 0's scan has no dirty information to judge convergence by;
 * 2. 'downtime-target': predictedFinalMs ≤ maxDowntimeMs;
 * 3. 'max-rounds': rounds done ≥ maxRounds;
 * 4. 'max-total-time': elapsed ≥ maxTotalMs (elapsed = the hint, else Σ durationMs);
 * 5. 'dirty-rate-exceeds-link': in each of the last DIRTY_RATE_PATIENCE rounds (all after round 0)
 *    the dirty rate in wire bytes (uncompressed rate / ratio) ≥ rateBps: pages are written at
 *    least as fast as they can be sent, so more rounds cannot converge;
 * 6. 'not-shrinking': in each of the last NOT_SHRINKING_PATIENCE rounds, pendingBytes was more
 *    than (1 − MIN_SHRINK) × the previous round's (or both were 0).
 */
import { PAGE_SIZE } from '../core/chunks.js';
import { ErrorCode, InternalError, InvalidArgumentError } from '../core/errors.js';

/** Why pre-copy stops. */
export type StopReason =
  'downtime-target' | 'max-rounds' | 'not-shrinking' | 'dirty-rate-exceeds-link' | 'max-total-time';

/** What one pre-copy round did. */
export interface RoundStats {
  /** 0-based; history[k].round must be k. */
  round: number;
  /** Scan + send time of the round. */
  durationMs: number;
  /** Pages found changed this round (round 0: all pages scanned). */
  dirtyPages: number;
  /** Dirty pages not sent this round (prediction); ≤ dirtyPages. */
  heldBackPages: number;
  /** Uncompressed page bytes the destination lacked and received. */
  sentBytes: number;
  /** Bytes on the wire for the round. */
  wireBytes: number;
}

/** Bounds on pre-copy. */
export interface ConvergenceLimits {
  /** Bound on the predicted memory-dependent final phase (QEMU-like: remaining bytes / link rate). */
  maxDowntimeMs: number;
  /** Rounds, round 0 included: total rounds ≤ maxRounds (an integer ≥ 1). */
  maxRounds: number;
  /** Total pre-copy time budget. */
  maxTotalMs: number;
}

/** Default bound on the predicted final phase, as QEMU's default downtime limit. */
export const DEFAULT_MAX_DOWNTIME_MS = 300;
/** Default round limit, as p.haul's MAX_ITERS_COUNT. */
export const DEFAULT_MAX_ROUNDS = 8;
/** Default total pre-copy time budget. */
export const DEFAULT_MAX_TOTAL_MS = 120_000;
/** The default limits together. */
export const DEFAULT_CONVERGENCE_LIMITS: Readonly<ConvergenceLimits> = Object.freeze({
  maxDowntimeMs: DEFAULT_MAX_DOWNTIME_MS,
  maxRounds: DEFAULT_MAX_ROUNDS,
  maxTotalMs: DEFAULT_MAX_TOTAL_MS,
});
/** A round must leave ≥ 10% fewer pending bytes than the one before, else it counts towards 'not-shrinking'. */
export const MIN_SHRINK = 0.1;
/** Consecutive non-shrinking rounds that stop pre-copy with 'not-shrinking'. */
export const NOT_SHRINKING_PATIENCE = 2;
/** Consecutive rounds (after round 0) whose dirty rate reaches the link rate that stop pre-copy. */
export const DIRTY_RATE_PATIENCE = 2;
/** A round that sent fewer wire bytes than this is dominated by latency and scanning; its rate is not trusted. */
export const MIN_RATE_SAMPLE_BYTES = 1024 * 1024;
/** How many recent rounds the link rate and the compression ratio are estimated from. */
export const RATE_WINDOW_ROUNDS = 3;

/** Optional measurements from outside the history. */
export interface ConvergenceHints {
  /** Round-trip time added to the final phase; default 0. */
  rttMs?: number;
  /** Link rate in wire bytes per second, used until a round gives a trusted sample. */
  linkRateBps?: number;
  /** Pre-copy time so far; default Σ durationMs of the history. */
  elapsedMs?: number;
}

/** The verdict after a round, with the estimates it was based on. */
export interface Decision {
  /** True: run another round. */
  proceed: boolean;
  /** Set iff proceed is false. */
  reason?: StopReason;
  /** Predicted duration of the final phase if pre-copy stopped now. */
  predictedFinalMs: number;
  /** Uncompressed bytes the final phase would send if pre-copy stopped now. */
  pendingBytes: number;
  /** Estimated link rate in wire bytes per second (Infinity when unknown). */
  rateBps: number;
}

/** After each round: should another round run? See the module comment for the model and rules. */
export function decideNextRound(
  history: readonly RoundStats[],
  limits: ConvergenceLimits,
  hints: ConvergenceHints = {},
): Decision {
  checkLimits(limits, hints);
  checkHistory(history);
  const n = history.length;
  const last = history[n - 1] as RoundStats;
  const ratio = compressionRatio(history);
  const rateBps = linkRate(history, hints.linkRateBps);
  const pendingBytes = pendingOf(last);
  const predictedFinalMs = (hints.rttMs ?? 0) + ((pendingBytes / ratio) * 1000) / rateBps;
  const elapsedMs = hints.elapsedMs ?? history.reduce((sum, r) => sum + r.durationMs, 0);
  const base = { predictedFinalMs, pendingBytes, rateBps };
  const stop = (reason: StopReason): Decision => ({ proceed: false, reason, ...base });

  if (n === 1) {
    if (limits.maxRounds <= 1) return stop('max-rounds');
    if (elapsedMs >= limits.maxTotalMs) return stop('max-total-time');
    return { proceed: true, ...base };
  }
  if (predictedFinalMs <= limits.maxDowntimeMs) return stop('downtime-target');
  if (n >= limits.maxRounds) return stop('max-rounds');
  if (elapsedMs >= limits.maxTotalMs) return stop('max-total-time');
  if (n - 1 >= DIRTY_RATE_PATIENCE && rateBps !== Infinity) {
    let exceeded = 0;
    for (let k = n - 1; k >= 1 && exceeded < DIRTY_RATE_PATIENCE; k--) {
      if (dirtyWireRate(history, k, ratio) < rateBps) break;
      exceeded++;
    }
    if (exceeded >= DIRTY_RATE_PATIENCE) return stop('dirty-rate-exceeds-link');
  }
  let stalled = 0;
  for (let k = n - 1; k >= 1 && stalled < NOT_SHRINKING_PATIENCE; k--) {
    const [prev, cur] = [pendingOf(history[k - 1] as RoundStats), pendingOf(history[k] as RoundStats)];
    if (cur < prev && cur <= (1 - MIN_SHRINK) * prev) break;
    stalled++;
  }
  if (stalled >= NOT_SHRINKING_PATIENCE) return stop('not-shrinking');
  return { proceed: true, ...base };
}

/** Uncompressed bytes the final phase would send if pre-copy stopped after round r. */
function pendingOf(r: RoundStats): number {
  return (r.heldBackPages + r.dirtyPages) * PAGE_SIZE;
}

/** The rounds a windowed estimate looks at: the last RATE_WINDOW_ROUNDS, newest first. */
function recent(history: readonly RoundStats[]): RoundStats[] {
  return history.slice(-RATE_WINDOW_ROUNDS).reverse();
}

/** Uncompressed / wire bytes over recent rounds that sent something, else all rounds, else 1. */
function compressionRatio(history: readonly RoundStats[]): number {
  for (const rounds of [recent(history), history]) {
    let sent = 0;
    let wire = 0;
    for (const r of rounds) {
      if (r.sentBytes > 0 && r.wireBytes > 0) {
        sent += r.sentBytes;
        wire += r.wireBytes;
      }
    }
    if (wire > 0) return sent / wire;
  }
  return 1;
}

/** Wire bytes per second of the best trusted recent round, else the latest trusted one, else the hint, else Infinity. */
function linkRate(history: readonly RoundStats[], hint: number | undefined): number {
  const trusted = (r: RoundStats): boolean => r.wireBytes >= MIN_RATE_SAMPLE_BYTES && r.durationMs > 0;
  let best: RoundStats | undefined;
  for (const r of recent(history)) {
    if (trusted(r) && (best === undefined || r.wireBytes > best.wireBytes)) best = r;
  }
  if (best === undefined) {
    for (let k = history.length - 1 - RATE_WINDOW_ROUNDS; k >= 0; k--) {
      const r = history[k] as RoundStats;
      if (trusted(r)) {
        best = r;
        break;
      }
    }
  }
  if (best !== undefined) return (best.wireBytes * 1000) / best.durationMs;
  return hint ?? Infinity;
}

/** Round k's (k ≥ 1) dirty rate in wire bytes per second: its dirty pages were written during round k−1. */
function dirtyWireRate(history: readonly RoundStats[], k: number, ratio: number): number {
  const interval = (history[k - 1] as RoundStats).durationMs;
  if (interval <= 0) return 0;
  return ((history[k] as RoundStats).dirtyPages * PAGE_SIZE * 1000) / interval / ratio;
}

function checkLimits(limits: ConvergenceLimits, hints: ConvergenceHints): void {
  const bad = (what: string, value: number, want: string): never => {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `${what} ${value} must be ${want}`);
  };
  if (!(limits.maxDowntimeMs >= 0)) bad('max downtime', limits.maxDowntimeMs, '≥ 0 ms');
  if (!(Number.isInteger(limits.maxRounds) && limits.maxRounds >= 1)) {
    bad('max rounds', limits.maxRounds, 'an integer ≥ 1');
  }
  if (!(limits.maxTotalMs >= 0)) bad('max total time', limits.maxTotalMs, '≥ 0 ms');
  if (hints.rttMs !== undefined && !(hints.rttMs >= 0 && hints.rttMs < Infinity)) {
    bad('rtt', hints.rttMs, 'finite and ≥ 0 ms');
  }
  if (hints.linkRateBps !== undefined && !(hints.linkRateBps > 0)) {
    bad('link rate', hints.linkRateBps, '> 0 bytes/s');
  }
  if (hints.elapsedMs !== undefined && !(hints.elapsedMs >= 0))
    bad('elapsed time', hints.elapsedMs, '≥ 0 ms');
}

function checkHistory(history: readonly RoundStats[]): void {
  if (history.length === 0) throw new InternalError(ErrorCode.Internal, 'no pre-copy round to decide on');
  history.forEach((r, k) => {
    const counts = [r.durationMs, r.dirtyPages, r.heldBackPages, r.sentBytes, r.wireBytes];
    if (r.round !== k || !counts.every((v) => v >= 0 && v < Infinity) || r.heldBackPages > r.dirtyPages) {
      throw new InternalError(
        ErrorCode.Internal,
        `invalid pre-copy round stats at ${k}: ${JSON.stringify(r)}`,
      );
    }
  });
}
