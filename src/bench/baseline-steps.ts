/**
 * The bookkeeping every baseline migration shares: its named steps on one clock (offsets from
 * the first step's start, recorded whether the step succeeds or fails), the bytes it moved, and
 * the report it ends with.
 */
import { systemClock } from '../core/clock.js';
import { ErrorCode, errorMessage, isGodwitError } from '../core/errors.js';
import type { BaselineKind, BaselinePhase, BaselineReport } from './baseline.js';

/** Steps, bytes and the ending of one baseline migration. */
export class BaselineSteps {
  readonly phases: BaselinePhase[] = [];
  wireBytes = 0;
  logicalBytes = 0;
  /** Start of the first step: the origin of the phases' offsets. */
  private t0: number | undefined;
  private checkpointAt: number | undefined;

  constructor(readonly kind: BaselineKind) {}

  /** Runs `work` as the step `name`; the step is recorded whether it succeeds or fails. */
  async step<T>(name: string, work: () => Promise<T>): Promise<T> {
    const start = systemClock.monotonic();
    const t0 = (this.t0 ??= start);
    if (name === 'checkpoint') this.checkpointAt = start;
    try {
      return await work();
    } finally {
      this.phases.push({
        name,
        startMs: Math.round(start - t0),
        durationMs: Math.round(systemClock.monotonic() - start),
      });
    }
  }

  /** ms since the `checkpoint` step began (since the first step, when there was none). */
  sinceCheckpoint(): number {
    const now = systemClock.monotonic();
    return Math.round(now - (this.checkpointAt ?? this.t0 ?? now));
  }

  /** The report, `downtimeMs` taken by the caller when the container ran again. */
  report(outcome: BaselineReport['outcome'], downtimeMs: number): BaselineReport {
    const last = this.phases.reduce((end, p) => Math.max(end, p.startMs + p.durationMs), 0);
    return {
      kind: this.kind,
      outcome,
      // Both from the same clock; rounding alone could put one a millisecond past the other.
      downtimeMs: Math.min(downtimeMs, last),
      totalMs: last,
      wireBytes: this.wireBytes,
      logicalBytes: this.logicalBytes,
      phases: this.phases,
    };
  }

  /** The report of a move that put the source back after `err`, which it names (details included). */
  rolledBack(err: unknown, downtimeMs: number): BaselineReport {
    const report = this.report('rolled-back', downtimeMs);
    report.error = {
      code: isGodwitError(err) ? err.code : ErrorCode.Internal,
      message:
        errorMessage(err) + (isGodwitError(err) && err.details.length ? `: ${err.details.join(' | ')}` : ''),
    };
    return report;
  }
}
