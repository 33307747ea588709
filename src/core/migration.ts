/**
 * Migration as data: named phases with one point of no return (commit), and the report
 * every strategy produces. Before commit, any failure resumes the source and cleans the
 * destination; after it, the destination owns the container and failures only warn.
 */

/** Strategies by name. */
export type MigrationStrategy = 'cold';

/** The phases a migration can pass through, in order. Strategies run a subset. */
export enum MigrationPhase {
  /** Check the destination, reserve the name, learn its transfer endpoint. */
  Prepare = 'prepare',
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
  /** Bytes of the current transfer done and expected, when transferring. */
  bytesDone?: number;
  bytesTotal?: number;
  /** Recent transfer rate, bytes/s. */
  rateBps?: number;
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
  /** Why it did not commit, or what went wrong after commit. */
  error?: { code: string; message: string };
  warnings: string[];
}
