import type { Clock } from '../core/clock.js';
import type { MigrationPhase, PhaseRecord } from '../core/migration.js';

/** Records phases with times relative to the migration's start. Not thread-safe; one per migration. */
export class PhaseRecorder {
  readonly phases: PhaseRecord[] = [];
  private readonly t0: number;

  constructor(private readonly clock: Clock) {
    this.t0 = clock.monotonic();
  }

  /** Ms since the migration started. */
  now(): number {
    return round(this.clock.monotonic() - this.t0);
  }

  /** Runs `fn` as `phase`, recording start, end and (on failure) the error, which is rethrown. */
  async run<T>(
    phase: MigrationPhase,
    fn: (rec: PhaseRecord) => Promise<T>,
    onStart?: () => void,
  ): Promise<T> {
    const rec: PhaseRecord = { phase, startMs: this.now() };
    this.phases.push(rec);
    onStart?.();
    try {
      return await fn(rec);
    } catch (err) {
      rec.error = err instanceof Error ? err.message : String(err);
      throw err;
    } finally {
      rec.endMs = this.now();
      rec.durationMs = round(rec.endMs - rec.startMs);
    }
  }

  /** The record of the last run of `phase`, if any. */
  last(phase: MigrationPhase): PhaseRecord | undefined {
    for (let i = this.phases.length - 1; i >= 0; i--)
      if (this.phases[i]?.phase === phase) return this.phases[i];
    return undefined;
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
