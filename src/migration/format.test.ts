import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MigrationPhase, type MigrationReport, type RoundReport } from '../core/migration.js';
import { formatClosingLine, formatWriteTracking, newProgressLines } from './format.js';

const round = (n: number): RoundReport => ({
  round: n,
  pagesScanned: 100,
  dirtyPages: 10,
  heldBackPages: 0,
  bytesLogical: 409600,
  bytesSent: 40960,
  bytesWire: 40960,
  scanMs: 5,
  transferMs: 20,
  durationMs: 25,
  predictedFinalMs: 30,
});

describe('migration progress lines', () => {
  it('prints each finished round, then each finished closing pass, once', () => {
    const seen = { rounds: 0, closing: 0 };
    const r = { rounds: [round(0)], phases: [] } as unknown as MigrationReport;
    assert.deepEqual(
      newProgressLines(r, seen).map((l) => l.split(':')[0]),
      ['round 0'],
    );
    r.rounds.push(round(1));
    r.phases.push(
      { phase: MigrationPhase.Round, startMs: 0, endMs: 25, durationMs: 25, detail: { round: 0 } },
      {
        phase: MigrationPhase.Round,
        startMs: 50,
        endMs: 290,
        durationMs: 240,
        detail: { closing: 1, readAll: false, pagesScanned: 8011, changedPages: 488, bytesWire: 1130150 },
      },
      // Still running: not printed yet.
      { phase: MigrationPhase.Round, startMs: 290, detail: { closing: 2 } },
    );
    assert.deepEqual(newProgressLines(r, seen), [
      'round 1: 100 pages scanned, 10 dirty, 0 held back, 40.0 KiB on the wire in 25.0 ms; final phase predicted 30.0 ms',
      'closing pass 1: 8011 pages read (those written during the rounds), 488 changed, 1.1 MiB on the wire in 240 ms',
    ]);
    assert.deepEqual(newProgressLines(r, seen), [], 'nothing twice');
    const failed = {
      phase: MigrationPhase.Round,
      startMs: 0,
      endMs: 1,
      error: 'link down',
      detail: { closing: 3 },
    };
    assert.equal(formatClosingLine(failed), 'closing pass 3: failed (link down)');
  });
});

describe('formatWriteTracking', () => {
  it('says whether writes were tracked, what the freeze found and what the audit compared', () => {
    assert.equal(
      formatWriteTracking({
        tracked: true,
        pagesAtFreeze: 135,
        collectMs: 0.6,
        audited: 16290,
        auditMismatches: 0,
      }),
      'tracked by the kernel; 135 pages written since last read at the freeze; audit: 16290 pages compared, 0 differed',
    );
    assert.equal(
      formatWriteTracking({
        tracked: false,
        reason: 'no process could be tracked: pid 7: seize failed (errno 1)',
      }),
      'compared by their bytes (not tracked: no process could be tracked: pid 7: seize failed (errno 1))',
    );
  });
});
