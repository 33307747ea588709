import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, InternalError, InvalidArgumentError } from '../core/errors.js';
import {
  DEFAULT_CONVERGENCE_LIMITS,
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_MAX_ROUNDS,
  DEFAULT_MAX_TOTAL_MS,
  MIN_RATE_SAMPLE_BYTES,
  decideNextRound,
  type ConvergenceLimits,
  type Decision,
  type RoundStats,
  type StopReason,
} from './convergence.js';

const PAGE = 4096;
/** 100 MB/s in wire bytes per second. */
const LINK = 100e6;

/** Round k's stats; sent and wire bytes default to the sent pages, uncompressed. */
function round(
  k: number,
  r: {
    durationMs: number;
    dirtyPages: number;
    heldBackPages?: number;
    sentBytes?: number;
    wireBytes?: number;
  },
): RoundStats {
  const heldBackPages = r.heldBackPages ?? 0;
  const sentBytes = r.sentBytes ?? (r.dirtyPages - heldBackPages) * PAGE;
  return {
    round: k,
    durationMs: r.durationMs,
    dirtyPages: r.dirtyPages,
    heldBackPages,
    sentBytes,
    wireBytes: r.wireBytes ?? sentBytes,
  };
}

/** Round 0: 100 000 pages (409.6 MB) sent at exactly LINK. */
const R0 = round(0, { durationMs: 4096, dirtyPages: 100_000 });
const limits = (over: Partial<ConvergenceLimits> = {}): ConvergenceLimits => ({
  ...DEFAULT_CONVERGENCE_LIMITS,
  ...over,
});

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const reached = new Set<StopReason>();
function stops(d: Decision, reason: StopReason): void {
  assert.equal(d.proceed, false);
  assert.equal(d.reason, reason);
  reached.add(reason);
}
function proceeds(d: Decision): void {
  assert.equal(d.proceed, true);
  assert.equal(d.reason, undefined);
}

test('defaults are as documented', () => {
  assert.equal(DEFAULT_MAX_DOWNTIME_MS, 300);
  assert.equal(DEFAULT_MAX_ROUNDS, 8);
  assert.equal(DEFAULT_MAX_TOTAL_MS, 120_000);
  assert.deepEqual(DEFAULT_CONVERGENCE_LIMITS, { maxDowntimeMs: 300, maxRounds: 8, maxTotalMs: 120_000 });
});

test('round 0 proceeds, even when everything would fit the downtime target', () => {
  const d = decideNextRound([R0], limits());
  proceeds(d);
  assert.equal(d.pendingBytes, 100_000 * PAGE);
  assert.equal(d.rateBps, LINK);
  assert.equal(d.predictedFinalMs, 4096);
  proceeds(decideNextRound([R0], limits({ maxDowntimeMs: 10_000 })));
  proceeds(decideNextRound([R0], limits({ maxRounds: 2 })));
});

test('round 0 stops only for maxRounds ≤ 1 or a spent time budget', () => {
  stops(decideNextRound([R0], limits({ maxRounds: 1 })), 'max-rounds');
  stops(decideNextRound([R0], limits({ maxTotalMs: 4000 })), 'max-total-time');
  stops(decideNextRound([R0], limits(), { elapsedMs: 120_000 }), 'max-total-time');
});

test("'downtime-target' once the predicted final phase fits", () => {
  // 5000 pages pending: 20.48 MB at 100 MB/s = 204.8 ms.
  const history = [R0, round(1, { durationMs: 200, dirtyPages: 5000 })];
  const d = decideNextRound(history, limits());
  stops(d, 'downtime-target');
  assert.equal(d.pendingBytes, 5000 * PAGE);
  assert.ok(Math.abs(d.predictedFinalMs - 204.8) < 1e-9);
  const withRtt = decideNextRound(history, limits(), { rttMs: 100 });
  proceeds(withRtt);
  assert.ok(Math.abs(withRtt.predictedFinalMs - 304.8) < 1e-9, 'the RTT is part of the final phase');
});

test('held-back pages are pending, and compression shrinks the wire bytes to send', () => {
  const history = [
    round(0, { durationMs: 2000, dirtyPages: 100_000, sentBytes: 400e6, wireBytes: 200e6 }),
    round(1, {
      durationMs: 500,
      dirtyPages: 10_000,
      heldBackPages: 2000,
      sentBytes: 8000 * PAGE,
      wireBytes: 4000 * PAGE,
    }),
  ];
  const d = decideNextRound(history, limits(), { rttMs: 5 });
  assert.equal(d.pendingBytes, 12_000 * PAGE);
  assert.equal(d.rateBps, LINK);
  // 49.152 MB uncompressed, 24.576 MB on the wire at 100 MB/s, plus the RTT.
  assert.ok(Math.abs(d.predictedFinalMs - (5 + 245.76)) < 1e-9);
  stops(d, 'downtime-target');
});

test("'max-rounds' when the round budget is used up", () => {
  // 20 000 pages pending: 819 ms, above the target; dirty rate 20 MB/s, below the link.
  const history = [R0, round(1, { durationMs: 1000, dirtyPages: 20_000 })];
  proceeds(decideNextRound(history, limits()));
  stops(decideNextRound(history, limits({ maxRounds: 2 })), 'max-rounds');
});

test("'max-total-time' when the time budget is spent", () => {
  const history = [R0, round(1, { durationMs: 1000, dirtyPages: 20_000 })];
  stops(decideNextRound(history, limits({ maxTotalMs: 5096 })), 'max-total-time');
  proceeds(decideNextRound(history, limits({ maxTotalMs: 5097 })));
  stops(decideNextRound(history, limits(), { elapsedMs: 200_000 }), 'max-total-time');
});

test("'dirty-rate-exceeds-link' after two rounds written at least as fast as the link sends", () => {
  // Round 0: 819.2 MB in 8192 ms (100 MB/s, the largest sample, so the link estimate).
  const r0 = round(0, { durationMs: 8192, dirtyPages: 200_000 });
  // Written during round 0: 200 000 pages in 8192 ms = 100 MB/s ≥ link.
  const r1 = round(1, { durationMs: 4096, dirtyPages: 200_000, heldBackPages: 100_000 });
  // Written during round 1: 150 000 pages in 4096 ms = 150 MB/s ≥ link; pending shrinks 300k → 250k pages.
  const r2 = round(2, { durationMs: 2048, dirtyPages: 150_000, heldBackPages: 100_000 });
  proceeds(decideNextRound([r0, r1], limits()));
  const d = decideNextRound([r0, r1, r2], limits());
  assert.equal(d.rateBps, LINK);
  stops(d, 'dirty-rate-exceeds-link');
  // One round written slower than the link (90 MB/s) breaks the streak.
  const slower = round(2, { durationMs: 2048, dirtyPages: 90_000, heldBackPages: 60_000 });
  proceeds(decideNextRound([r0, r1, slower], limits()));
});

test("'not-shrinking' after two rounds that left as much pending as before", () => {
  // Dirty rates 95 and 77.8 MB/s, below the 100 MB/s link, yet 95 000 pages stay pending.
  const r1 = round(1, { durationMs: 5000, dirtyPages: 95_000 });
  const r2 = round(2, { durationMs: 5000, dirtyPages: 95_000 });
  proceeds(decideNextRound([R0, r1], limits()));
  const d = decideNextRound([R0, r1, r2], limits());
  assert.equal(d.rateBps, LINK);
  stops(d, 'not-shrinking');
  // 10% fewer pending pages counts as shrinking.
  proceeds(decideNextRound([R0, r1, round(2, { durationMs: 5000, dirtyPages: 85_500 })], limits()));
});

test('the link rate falls back to older samples, then the hint, then Infinity', () => {
  const small = (k: number): RoundStats => round(k, { durationMs: 10, dirtyPages: 100 });
  assert.ok(100 * PAGE < MIN_RATE_SAMPLE_BYTES);
  const old = [R0, small(1), small(2), small(3), small(4)];
  assert.equal(
    decideNextRound(old, limits()).rateBps,
    LINK,
    'round 0, outside the window, is the latest trusted',
  );
  const tiny = round(0, { durationMs: 10, dirtyPages: 100 });
  assert.equal(decideNextRound([tiny, small(1)], limits(), { linkRateBps: 5e6 }).rateBps, 5e6);
  const unknown = decideNextRound([tiny, small(1)], limits(), { rttMs: 7 });
  assert.equal(unknown.rateBps, Infinity);
  assert.equal(unknown.predictedFinalMs, 7);
  stops(unknown, 'downtime-target');
});

test('is pure: same input, same output, input untouched', () => {
  const history = deepFreeze([
    R0,
    round(1, { durationMs: 5000, dirtyPages: 95_000 }),
    round(2, { durationMs: 5000, dirtyPages: 95_000 }),
  ]);
  const lim = deepFreeze(limits());
  const hints = deepFreeze({ rttMs: 3, elapsedMs: 1000 });
  const copy = structuredClone(history);
  const a = decideNextRound(history, lim, hints);
  const b = decideNextRound(history, lim, hints);
  assert.deepEqual(a, b);
  assert.deepEqual(history, copy);
});

// Runs after the tests above (node:test runs a file's top-level tests in order), which fill `reached`.
test('every stop reason is reachable', () => {
  assert.deepEqual([...reached].sort(), [
    'dirty-rate-exceeds-link',
    'downtime-target',
    'max-rounds',
    'max-total-time',
    'not-shrinking',
  ]);
});

test('invalid limits, hints and histories throw', () => {
  const invalid = (err: unknown): boolean =>
    err instanceof InvalidArgumentError && err.code === ErrorCode.InvalidFlag;
  for (const bad of [
    { maxDowntimeMs: -1 },
    { maxRounds: 0 },
    { maxRounds: 2.5 },
    { maxTotalMs: Number.NaN },
  ]) {
    assert.throws(() => decideNextRound([R0], limits(bad)), invalid, JSON.stringify(bad));
  }
  for (const bad of [{ rttMs: -1 }, { rttMs: Infinity }, { linkRateBps: 0 }, { elapsedMs: -5 }]) {
    assert.throws(() => decideNextRound([R0], limits(), bad), invalid, JSON.stringify(bad));
  }
  const bug = (err: unknown): boolean => err instanceof InternalError;
  assert.throws(() => decideNextRound([], limits()), bug);
  assert.throws(() => decideNextRound([round(1, { durationMs: 1, dirtyPages: 1 })], limits()), bug);
  assert.throws(() => decideNextRound([{ ...R0, heldBackPages: R0.dirtyPages + 1 }], limits()), bug);
  assert.throws(() => decideNextRound([{ ...R0, durationMs: -1 }], limits()), bug);
});
