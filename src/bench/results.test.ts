import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stat, validateResults } from './results.js';
import { fakeResults } from './testing.js';

describe('stat', () => {
  it('median of odd and even counts, min, max; skips NaN and undefined', () => {
    assert.deepEqual(stat([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
    assert.deepEqual(stat([4, 1, 2, 3, Number.NaN, undefined]), { median: 2.5, min: 1, max: 4, n: 4 });
    assert.equal(stat([undefined]), undefined);
  });
});

describe('summarize', () => {
  const r = fakeResults();
  const row = (k: string): (typeof r.summary)[number] => r.summary.find((s) => s.kind === k)!;

  it('one row per kind of the cell, medians over the repetitions', () => {
    assert.deepEqual(
      r.summary.map((s) => s.kind),
      ['cold', 'byhand', 'precopy-predict', 'hybrid'],
    );
    assert.deepEqual(row('cold').downtimeMs, { median: 3200, min: 3100, max: 3300, n: 3 });
    assert.equal(row('hybrid').clientDowntimeMs?.median, 312);
    assert.equal(row('hybrid').degradationWindowMs?.median, 400);
    assert.equal(row('precopy-predict').rounds?.median, 2);
    assert.equal(row('byhand').rounds, undefined);
  });

  it('wire over resident uses memload’s own size', () => {
    assert.ok(Math.abs(row('cold').wireOverResident!.median - 15e6 / (32 << 20)) < 1e-9);
  });

  it('a pre-copy row carries the model, fed by the workload, the link and cold’s stop cost', () => {
    const m = row('precopy-predict').model!;
    assert.ok(m);
    assert.equal(m.inputs.residentBytes, 32 << 20);
    // only memload's random pages (40 %) change content when rewritten, incompressibly
    assert.equal(m.inputs.dirtyBytesPerS, 4 * 1048576 * 0.4);
    assert.equal(m.inputs.writableBytes, (8 << 20) * 0.4);
    assert.equal(m.inputs.dirtyWireRatio, 1);
    assert.equal(m.inputs.linkBytesPerS, 12.5e6);
    assert.equal(m.inputs.rttMs, 20);
    // cold: downtime 3200 − final transfer 2500
    assert.equal(m.inputs.stopOverheadMs, 700);
    assert.ok(Math.abs(m.inputs.wireRatio - 14e6 / (8192 * 4096)) < 1e-9);
    assert.ok(m.rounds >= 2 && m.downtimeMs > 700);
    assert.equal(row('hybrid').model, undefined);
  });
});

describe('validateResults', () => {
  it('accepts what summarize and the runner write, after a JSON round trip', () => {
    assert.deepEqual(validateResults(JSON.parse(JSON.stringify(fakeResults()))), []);
  });

  it('names what is missing or inconsistent', () => {
    const doc = JSON.parse(JSON.stringify(fakeResults())) as Record<string, unknown>;
    delete doc['machine'];
    (doc['runs'] as Record<string, unknown>[])[0]!['wireBytes'] = 'x';
    (doc['summary'] as Record<string, unknown>[])[0]!['totalMs'] = { median: 5, min: 6, max: 7, n: 3 };
    const problems = validateResults(doc);
    assert.ok(
      problems.some((p) => p.startsWith('machine')),
      problems.join('; '),
    );
    assert.ok(
      problems.some((p) => p.startsWith('runs[0].wireBytes')),
      problems.join('; '),
    );
    assert.ok(
      problems.some((p) => /summary\[0\]\.totalMs: min ≤ median/.test(p)),
      problems.join('; '),
    );
    assert.deepEqual(validateResults(null), ['not an object']);
  });
});
