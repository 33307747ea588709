/**
 * Migration as data: named phases with one point of no return (commit), and the report
 * every strategy produces. Before commit, any failure resumes the source and cleans the
 * destination; after it, the destination owns the container and failures only warn.
 */

/** Strategies by name. */
export type MigrationStrategy = 'cold' | 'precopy' | 'postcopy' | 'hybrid';

/** Every strategy, for flag validation and help. */
export const MIGRATION_STRATEGIES: readonly MigrationStrategy[] = ['cold', 'precopy', 'postcopy', 'hybrid'];

/** The phases a migration can pass through, in order. Strategies run a subset. */
export enum MigrationPhase {
  /** Check the destination, reserve the name, learn its transfer endpoint. */
  Prepare = 'prepare',
  /** One pre-copy round: read the running container's memory, send the pages the destination lacks. */
  Round = 'round',
  /** Freeze and dump the container (CRIU through runc); the service stops here. */
  Checkpoint = 'checkpoint',
  /** Cut the checkpoint into chunks (manifest). */
  Snapshot = 'snapshot',
  /** Send the chunks the destination lacks. */
  Transfer = 'transfer',
  /** Reassemble and restore on the destination. */
  Restore = 'restore',
  /** Point of no return: the destination runs the container; the source lets go. */
  Commit = 'commit',
  /**
   * Post-copy and hybrid, after commit: the restored container runs while the pages that stayed
   * on the source are fetched (on faults and in the background); ends when none is left there.
   */
  Fill = 'fill',
  /** Release what the migration held (source record, temp files). Failures only warn. */
  Cleanup = 'cleanup',
  /** Resume the source after a failure before commit. */
  Rollback = 'rollback',
}

/** How a migration ended. */
export type MigrationOutcome = 'running' | 'committed' | 'rolled-back' | 'failed';

/** One phase as it happened. Times are ms since the migration started. */
export interface PhaseRecord {
  phase: MigrationPhase;
  startMs: number;
  endMs?: number;
  durationMs?: number;
  /** Free-form facts of the phase (bytes, chunk counts, the error that ended it). */
  detail?: Record<string, unknown>;
  error?: string;
}

/** Byte accounting of a migration. */
export interface MigrationBytes {
  /** Size of the state that had to be at the destination. */
  logical: number;
  /** Bytes of zero runs: never stored or sent. */
  zero: number;
  /** Bytes the destination already held (dedup). */
  dedup: number;
  /** Uncompressed bytes of the chunks sent. */
  sent: number;
  /** Bytes on the wire, framing and compression included. */
  wire: number;
}

/** Live progress of a running migration. */
export interface MigrationProgress {
  phase: MigrationPhase;
  /** The pre-copy round running. */
  round?: number;
  /** Bytes of the current transfer done and expected, when transferring. */
  bytesDone?: number;
  bytesTotal?: number;
  /** Recent transfer rate, bytes/s. */
  rateBps?: number;
}

/** One pre-copy round as it happened. */
/**
 * How pre-copy's final dump takes the memory. `held`: CRIU dumps everything but the memory, which
 * stays in the frozen processes; godwit compares it with the last round there, sends the pages
 * that changed, and the destination restores once it holds every page (needs userfaultfd on both
 * hosts). `full`: CRIU writes every page into the dump, which is checked against the last round
 * and sent as usual (where userfaultfd is missing, or when asked for).
 */
export const FINAL_DUMPS = ['held', 'full'] as const;
export type FinalDump = (typeof FINAL_DUMPS)[number];

export interface RoundReport {
  round: number;
  /** Pages read from the running container. */
  pagesScanned: number;
  /** Pages whose content changed since the previous scan (round 0: every page). */
  dirtyPages: number;
  /** Dirty or still-unsent pages not sent this round (predicted to be written again). */
  heldBackPages: number;
  /** Bytes the destination holds for the container's memory after the round. */
  bytesLogical: number;
  /** Uncompressed bytes of the chunks sent, and bytes on the wire. */
  bytesSent: number;
  bytesWire: number;
  /** Scan (read + compare + hash) and transfer time; durationMs covers both. */
  scanMs: number;
  transferMs: number;
  durationMs: number;
  /** Predicted memory-dependent final phase if pre-copy stopped after this round. */
  predictedFinalMs: number;
  /** Whether the predictor was bypassed (last round: send everything pending). */
  flush?: boolean;
}

/** The figures every strategy reports, in ms (absent when the strategy has no such phase). */
export interface MigrationTimings {
  /** Pre-copy rounds, all together. */
  roundsMs?: number;
  /** A full garbage collection in the source agent after the rounds, before the stop. */
  gcBeforeStopMs?: number;
  /**
   * Closing passes, after the rounds and the collection, right before the stop (lazy final
   * phases): the pages written during the rounds read again and what changed sent. All passes.
   */
  closingMs?: number;
  /** Freeze + final CRIU dump on the source (runc checkpoint). */
  checkpointMs?: number;
  /** Finding what changed and cutting the checkpoint into chunks. */
  snapshotMs?: number;
  /** Sending what the destination still lacked while the container was stopped. */
  finalTransferMs?: number;
  /** Reassembling the checkpoint on the destination and restoring it. */
  materializeMs?: number;
  restoreMs?: number;
  /**
   * Hybrid: the source judging every page of the frozen processes against the last round (off
   * the stopped phase): all of it, and the first pass over the pages written during the rounds.
   */
  verdictScanMs?: number;
  verdictFirstPassMs?: number;
}

/**
 * The lazy half of post-copy and hybrid: how the restored container got the memory that stayed
 * on the source. Windows are ms from the end of the restore.
 */
export interface LazyMemoryReport {
  /** `filled`: every page arrived; `lost`: the source or link died first and the container was stopped. */
  outcome: 'filled' | 'lost';
  /** Pages that stayed on the source at the restore. */
  pagesRemote: number;
  /** Remote pages fetched because a fault waited for them, and by the background fill. */
  pagesOnDemand: number;
  pagesPushed: number;
  /** Pages the restored processes received that the destination held from the start (hybrid: pre-copy). */
  pagesLocal: number;
  /** Pages the restored processes received in all. */
  pagesServed: number;
  /**
   * Hybrid: remote pages the source's verdicts found unchanged since the last pre-copy round,
   * served from the destination's own chunk store (nothing on the wire).
   */
  pagesFromStore?: number;
  /** Hybrid: restore end → the source's last verdict arrived (every page known or fetched). */
  verdictsMs?: number;
  /** Page faults that reached godwit's page server, and how long they waited (ms). */
  faults: number;
  faultWaitMs: { p50: number; p99: number; max: number };
  /** Restore end → every remote page at the destination (the source is released). */
  sourceWindowMs?: number;
  /** Restore end → every page in the processes (the degradation window). */
  degradationWindowMs?: number;
  /** Bytes received from the source for the remote pages. */
  bytesWire: number;
  /** When lost: how many pages never arrived, and the first runs of them (process, address, pages). */
  missingPages?: number;
  missingRuns?: { vpid: number; vaddr: number; nrPages: number }[];
  error?: string;
}

/**
 * Pre-copy's write tracking (uffd write-protect, godwit-wptrack). Tracked: rounds and closing
 * passes read what was written, and the final phase judges by content only the pages written
 * since they were last read (the rest are unchanged, which an audit after the restore checks).
 */
export interface WriteTrackingReport {
  tracked: boolean;
  /** Why not, or why it stopped part-way (then pages count as written from there on). */
  reason?: string;
  /** Pages written since they were last read, found at the freeze. */
  pagesAtFreeze?: number;
  /** The freeze's collect (ms). */
  collectMs?: number;
  /** The audit after the restore: pages judged unchanged by tracking whose bytes were compared, and those that differed (must be 0). */
  audited?: number;
  auditMismatches?: number;
}

/** What a migration did, for people, the ledger and the simulator. */
export interface MigrationReport {
  id: string;
  name: string;
  strategy: MigrationStrategy;
  from: string;
  to: string;
  /** `running` until the migration has ended, cleanup included. */
  outcome: MigrationOutcome;
  /** Set at the point of no return: the destination owns the container from then on. */
  committed?: boolean;
  startedAt: string;
  phases: PhaseRecord[];
  /** Pre-copy rounds (empty for cold). */
  rounds: RoundReport[];
  /** The strategy asked for could not run here: what ran instead (`strategy`) and why. */
  fallback?: { from: MigrationStrategy; to: MigrationStrategy; reason: string };
  /** Why rounds stopped (a convergence rule), or `cold` when there were none. */
  stopReason?: string;
  /** Pre-copy: whether the kernel told which pages were written (write-tracker.ts), else why not. */
  writeTracking?: WriteTrackingReport;
  /** The options the strategy ran with. */
  options?: { maxDowntimeMs?: number; maxRounds?: number; predict?: boolean; finalDump?: FinalDump };
  timings: MigrationTimings;
  /** Service interruption as the runtime caused it: checkpoint start → running on the destination. */
  downtimeMs?: number;
  totalMs?: number;
  bytes: MigrationBytes;
  /** sent / wire. */
  compressionRatio?: number;
  /** logical / (sent), zero and dedup bytes counted as saved. */
  dedupRatio?: number;
  /** wire bytes / transfer time. */
  rateBps?: number;
  progress?: MigrationProgress;
  /** Post-copy and hybrid: the memory that stayed on the source and how it arrived. */
  lazy?: LazyMemoryReport;
  /** Where the source's checkpoint is written (kept there when a migration fails). */
  checkpointDir?: string;
  /** Why it did not commit, or what went wrong after commit. */
  error?: { code: string; message: string };
  warnings: string[];
}
