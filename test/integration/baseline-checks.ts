/**
 * What the baselines' integration tests check of every committed move, and the line they print
 * of each report.
 */
import assert from 'node:assert/strict';
import type { BaselineReport } from '../../src/bench/baseline.js';

/**
 * A committed move of a 32 MiB memload service: the phases in order, bytes on the wire (fewer
 * than the checkpoint's), downtime within the total, and the total ending with the last phase.
 */
export function assertCommitted(r: BaselineReport, phases: readonly string[]): void {
  assert.equal(r.outcome, 'committed', JSON.stringify(r.error));
  assert.deepEqual(
    r.phases.map((p) => p.name),
    phases,
  );
  assert.ok(
    r.wireBytes > 0 && r.wireBytes < r.logicalBytes,
    `wire ${r.wireBytes} B, logical ${r.logicalBytes} B`,
  );
  assert.ok(r.logicalBytes > 32 * 1024 * 1024, `logical ${r.logicalBytes} B holds 32 MiB of memory`);
  assert.ok(
    r.downtimeMs > 0 && r.downtimeMs <= r.totalMs,
    `downtime ${r.downtimeMs} ms, total ${r.totalMs} ms`,
  );
  const last = r.phases[r.phases.length - 1]!;
  assert.ok(Math.abs(last.startMs + last.durationMs - r.totalMs) <= 1, 'total ends with the last phase');
}

/** One diagnostic line of a move's figures, as a TAP comment. */
export function reportLine(label: string, r: BaselineReport, gapMs: number): string {
  return (
    `# ${label}: downtime ${r.downtimeMs} ms, total ${r.totalMs} ms, wire ${r.wireBytes} B of ` +
    `${r.logicalBytes} B, client gap ${gapMs.toFixed(0)} ms; ` +
    r.phases.map((p) => `${p.name} ${p.durationMs}`).join(', ')
  );
}
