import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countDecreases, longestGap, percentile, summarizeLatency } from './stats.js';

describe('percentile', () => {
  it('uses the nearest rank', () => {
    const v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert.equal(percentile(v, 50), 5);
    assert.equal(percentile(v, 90), 9);
    assert.equal(percentile(v, 99), 10);
    assert.equal(percentile(v, 100), 10);
    assert.equal(percentile(v, 0), 1);
    assert.equal(percentile(v, 11), 2);
  });
  it('handles one value and none', () => {
    assert.equal(percentile([7], 50), 7);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([], 50), undefined);
  });
  it('rejects p outside 0–100', () => {
    assert.throws(() => percentile([1], 101), RangeError);
    assert.throws(() => percentile([1], -1), RangeError);
    assert.throws(() => percentile([1], Number.NaN), RangeError);
  });
  it('p99 of 1000 values is the 990th', () => {
    const v = Array.from({ length: 1000 }, (_, i) => i + 1);
    assert.equal(percentile(v, 99), 990);
    assert.equal(percentile(v, 50), 500);
  });
});

describe('summarizeLatency', () => {
  it('sorts and summarises', () => {
    assert.deepEqual(summarizeLatency([5, 1, 3, 2, 4]), { count: 5, p50: 3, p90: 5, p99: 5, max: 5 });
  });
  it('is undefined without values', () => {
    assert.equal(summarizeLatency([]), undefined);
  });
});

describe('longestGap', () => {
  it('finds the longest stretch between successes', () => {
    assert.deepEqual(longestGap([1, 2, 3, 300, 301], 310), { gapMs: 297, fromMs: 3, toMs: 300 });
  });
  it('counts from the start to the first success', () => {
    assert.deepEqual(longestGap([50, 51], 60), { gapMs: 50, fromMs: 0, toMs: 50 });
  });
  it('counts from the last success to the end', () => {
    assert.deepEqual(longestGap([1, 2], 100), { gapMs: 98, fromMs: 2, toMs: 100 });
  });
  it('is the whole run without any success', () => {
    assert.deepEqual(longestGap([], 100), { gapMs: 100, fromMs: 0, toMs: 100 });
  });
  it('never ends before the last success', () => {
    assert.deepEqual(longestGap([10, 120], 100), { gapMs: 110, fromMs: 10, toMs: 120 });
  });
  it('keeps the earliest of equal gaps', () => {
    assert.deepEqual(longestGap([10, 20, 30], 30), { gapMs: 10, fromMs: 0, toMs: 10 });
  });
});

describe('countDecreases', () => {
  it('counts restarts of a growing counter', () => {
    assert.equal(countDecreases([1, 2, 3, 1, 2, 5, 0]), 2);
    assert.equal(countDecreases([1, 2, 3]), 0);
    assert.equal(countDecreases([]), 0);
    assert.equal(countDecreases([4, 4]), 0);
  });
});
