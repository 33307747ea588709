/**
 * Dirty-page prediction for live-migration pre-copy, learned online from the rounds themselves.
 *
 * Pre-copy resends every page written since the previous round; pages that are rewritten in
 * nearly every round (the writable working set) are sent again and again for nothing, since
 * the final, frozen phase has to send them anyway. A predictor names those pages so that a
 * round can hold them back and leave them to the final phase.
 *
 * The model here is a per-page exponentially decayed write frequency: after each observed
 * round, s_i ← decay·s_i + (1 − decay)·[i dirty in that round], so s_i weighs recent rounds
 * most and lies in [0, 1]. A page found dirty in a round is held back when its score *before*
 * that round reaches the threshold, i.e. when its own history says it is likely to be written
 * again; a page dirty for the first time is always sent.
 */
import { ErrorCode, InternalError, InvalidArgumentError } from '../core/errors.js';

/** Weight the score keeps from previous rounds each round; 0.5 halves a page's score per round it stays clean. */
export const DEFAULT_DECAY = 0.5;
/** Score at or above which a dirty page is held back; with the default decay, a page dirty in the previous round qualifies. */
export const DEFAULT_HOLD_THRESHOLD = 0.4;
/** Observed rounds after round 0 (whose scan has no previous content, hence no dirty information) needed before anything is held back. */
export const MIN_ROUNDS_BEFORE_HOLDING = 1;

/** Observation of one pre-copy round, by dense page index (the caller maps (process, address) to 0..n-1). */
export interface RoundObservation {
  /** Indices of pages found written since the previous scan (any order, no duplicates). */
  dirty: readonly number[];
  /** Total pages scanned this round (indices are < this after growth; the model grows as needed). */
  scanned: number;
}

/** Predicts which pages will be written again before the final phase (held back from a round). */
export interface DirtyPagePredictor {
  /** Records a round; round 0 (the first full copy) is observed too, with `dirty: []`. */
  observe(o: RoundObservation): void;
  /**
   * Of `dirty` (one round's dirty pages), those to hold back. `dirty` may be the round passed to
   * the latest `observe` (the same set, in any order) or the next, not yet observed round; both
   * give the same answer. Pure w.r.t. model state.
   */
  holdBack(dirty: readonly number[]): Set<number>;
  /** Probability-like score in [0,1] that page i is written again within one round interval. */
  score(i: number): number;
  /** Number of rounds observed. */
  readonly rounds: number;
}

/** Options of DecayedFrequencyPredictor; each defaults to the DEFAULT_* constant. */
export interface DecayedFrequencyOptions {
  /** Weight kept from previous rounds, 0 < decay < 1. */
  decay?: number;
  /** Hold-back score threshold, 0 < threshold ≤ 1. */
  threshold?: number;
}

const INITIAL_CAPACITY = 1024;

/** Per-page exponentially decayed write frequency; holds back dirty pages whose prior score ≥ threshold. */
export class DecayedFrequencyPredictor implements DirtyPagePredictor {
  /** Weight kept from previous rounds. */
  readonly decay: number;
  /** Hold-back score threshold. */
  readonly threshold: number;
  #rounds = 0;
  /** Pages the model covers; the arrays below may be longer (capacity). */
  #size = 0;
  #score = new Float32Array(INITIAL_CAPACITY);
  /** For pages dirty in the latest observed round: their score before that round. */
  #prior = new Float32Array(INITIAL_CAPACITY);
  /** Round number (1-based count of observe calls) in which each page was last dirty; 0 = never. */
  #dirtyIn = new Uint32Array(INITIAL_CAPACITY);
  #lastDirtyCount = 0;

  constructor(opts: DecayedFrequencyOptions = {}) {
    const decay = opts.decay ?? DEFAULT_DECAY;
    const threshold = opts.threshold ?? DEFAULT_HOLD_THRESHOLD;
    if (!(decay > 0 && decay < 1)) {
      throw new InvalidArgumentError(ErrorCode.InvalidFlag, `predictor decay ${decay} must be in (0, 1)`);
    }
    if (!(threshold > 0 && threshold <= 1)) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidFlag,
        `predictor threshold ${threshold} must be in (0, 1]`,
      );
    }
    this.decay = decay;
    this.threshold = threshold;
  }

  /** Number of rounds observed (round 0 included). */
  get rounds(): number {
    return this.#rounds;
  }

  /** Decays every page's score and credits the dirty ones (a duplicate index counts once); O(pages) per round. */
  observe(o: RoundObservation): void {
    if (!Number.isSafeInteger(o.scanned) || o.scanned < 0) {
      throw new InternalError(ErrorCode.Internal, `scanned page count ${o.scanned} is not a count`);
    }
    let needed = o.scanned;
    for (const i of o.dirty) {
      if (!Number.isSafeInteger(i) || i < 0) {
        throw new InternalError(ErrorCode.Internal, `dirty page index ${i} is not an index`);
      }
      if (i >= needed) needed = i + 1;
    }
    this.#ensure(needed);
    const round = this.#rounds + 1;
    const score = this.#score;
    const prior = this.#prior;
    const dirtyIn = this.#dirtyIn;
    let unique = 0;
    for (const i of o.dirty) {
      if (dirtyIn[i] === round) continue;
      dirtyIn[i] = round;
      prior[i] = score[i] ?? 0;
      unique++;
    }
    const d = this.decay;
    const n = this.#size;
    for (let i = 0; i < n; i++) score[i] = d * (score[i] ?? 0);
    const credit = 1 - d;
    for (const i of o.dirty) score[i] = d * (prior[i] ?? 0) + credit;
    this.#rounds = round;
    this.#lastDirtyCount = unique;
  }

  /**
   * Holds back page i of `dirty` iff, on the model as it was before that round, at least
   * MIN_ROUNDS_BEFORE_HOLDING rounds after round 0 had been observed and score(i) ≥ threshold.
   * `dirty` is taken as the latest observed round when it is exactly that round's set, else as
   * the next round; a next round identical to the latest is thus decided one round late.
   */
  holdBack(dirty: readonly number[]): Set<number> {
    const held = new Set<number>();
    const observed = this.#isLatestRound(dirty);
    const roundsBefore = observed ? this.#rounds - 1 : this.#rounds;
    if (roundsBefore - 1 < MIN_ROUNDS_BEFORE_HOLDING) return held;
    const scores = observed ? this.#prior : this.#score;
    for (const i of dirty) {
      if (i >= 0 && i < this.#size && (scores[i] ?? 0) >= this.threshold) held.add(i);
    }
    return held;
  }

  /** Page i's current score; 0 for pages never seen. */
  score(i: number): number {
    return Number.isInteger(i) && i >= 0 && i < this.#size ? (this.#score[i] ?? 0) : 0;
  }

  /** True iff `dirty` is exactly the set of the latest observed round. */
  #isLatestRound(dirty: readonly number[]): boolean {
    if (this.#rounds === 0 || dirty.length !== this.#lastDirtyCount) return false;
    for (const i of dirty) {
      if (!(i >= 0 && i < this.#size) || this.#dirtyIn[i] !== this.#rounds) return false;
    }
    return true;
  }

  /** Grows the model to cover `pages` pages, doubling capacity as needed. */
  #ensure(pages: number): void {
    if (pages > this.#score.length) {
      let cap = this.#score.length;
      while (cap < pages) cap *= 2;
      const score = new Float32Array(cap);
      score.set(this.#score);
      const prior = new Float32Array(cap);
      prior.set(this.#prior);
      const dirtyIn = new Uint32Array(cap);
      dirtyIn.set(this.#dirtyIn);
      this.#score = score;
      this.#prior = prior;
      this.#dirtyIn = dirtyIn;
    }
    if (pages > this.#size) this.#size = pages;
  }
}

/** Holds nothing back (`--predict off`): plain pre-copy. */
export class NoPredictor implements DirtyPagePredictor {
  #rounds = 0;

  /** Number of rounds observed. */
  get rounds(): number {
    return this.#rounds;
  }

  /** Counts the round; keeps no other state. */
  observe(_o: RoundObservation): void {
    this.#rounds++;
  }

  /** Always empty. */
  holdBack(_dirty: readonly number[]): Set<number> {
    return new Set();
  }

  /** Always 0. */
  score(_i: number): number {
    return 0;
  }
}
