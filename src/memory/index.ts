/**
 * Memory-side policy of pre-copy live migration: which dirty pages to hold back for the final
 * phase (a predictor learned online from the rounds), and when to stop pre-copying.
 */
export {
  DEFAULT_DECAY,
  DEFAULT_HOLD_THRESHOLD,
  DecayedFrequencyPredictor,
  MIN_ROUNDS_BEFORE_HOLDING,
  NoPredictor,
  type DecayedFrequencyOptions,
  type DirtyPagePredictor,
  type RoundObservation,
} from './predictor.js';
export {
  DEFAULT_CONVERGENCE_LIMITS,
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_MAX_ROUNDS,
  DEFAULT_MAX_TOTAL_MS,
  DIRTY_RATE_PATIENCE,
  MIN_RATE_SAMPLE_BYTES,
  MIN_SHRINK,
  NOT_SHRINKING_PATIENCE,
  RATE_WINDOW_ROUNDS,
  decideNextRound,
  type ConvergenceHints,
  type ConvergenceLimits,
  type Decision,
  type RoundStats,
  type StopReason,
} from './convergence.js';
