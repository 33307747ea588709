import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { counterKept, describeRun } from './suite.js';
import { fakeResults } from './testing.js';

describe('counterKept', () => {
  const series = (ok: number, resets: number, gapEndMs: number) => ({
    requests: ok,
    ok,
    errors: { refused: 0, reset: 0, timeout: 0, other: 0 },
    maxGapMs: 0,
    gapStartMs: 0,
    gapEndMs,
    latencyMs: null,
    counterFirst: null,
    counterLast: null,
    counterResets: resets,
    firstErrors: [],
  });
  const probe = (o: { ok?: number; resets?: number; gapEndMs?: number }) => ({
    durationMs: 3000,
    fresh: series(o.ok ?? 10, 0, 0),
    longLived: {
      ...series(o.ok ?? 10, o.resets ?? 0, o.gapEndMs ?? 1500),
      survived: true,
      reconnects: 0,
      breaks: [],
      lateReplies: 0,
    },
  });

  it('kept: replies, the counter never went back, answers after the longest gap', () => {
    assert.equal(counterKept(probe({})), true);
  });
  it('lost: a counter went back, or no answer after the gap', () => {
    assert.equal(counterKept(probe({ resets: 1 })), false);
    assert.equal(counterKept(probe({ gapEndMs: 3000 })), false);
  });
  it('unknown: no reply at all', () => {
    assert.equal(counterKept(probe({ ok: 0 })), undefined);
  });
});

describe('describeRun', () => {
  it('one line with the figures; unknown state as ?', () => {
    const run = fakeResults().runs[3]!;
    assert.match(
      describeRun(run),
      /^edge\/memload-medium-hot hybrid rep 1: client 311 ms, runtime 300 ms, total 4200 ms, wire 16\.0 MB, state kept$/,
    );
    const { stateKept: _, ...unknown } = run;
    assert.match(describeRun(unknown), /state \?$/);
    assert.match(
      describeRun({ ...run, outcome: 'failed', error: { code: 'X', message: 'boom' } }),
      /rep 1: failed — boom$/,
    );
  });
});
