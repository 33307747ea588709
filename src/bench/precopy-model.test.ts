import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dirtiedBytes, predictPrecopy } from './precopy-model.js';

const MiB = 1024 * 1024;
const edge = { linkBytesPerS: 12.5e6, rttMs: 20 };

describe('dirtiedBytes', () => {
  it('grows like rate × time while small and never passes the writable set', () => {
    assert.ok(Math.abs(dirtiedBytes(1e6, 1e9, 100) - 1e5) < 10);
    assert.ok(dirtiedBytes(1e9, 8 * MiB, 10_000) <= 8 * MiB);
    assert.ok(dirtiedBytes(1e9, 8 * MiB, 10_000) > 8 * MiB * 0.999);
    assert.equal(dirtiedBytes(0, MiB, 100), 0);
    assert.equal(dirtiedBytes(1e6, 0, 100), 0);
  });
});

describe('predictPrecopy', () => {
  it('an idle container: one round, then a final phase of nothing', () => {
    const p = predictPrecopy({
      ...edge,
      residentBytes: 64 * MiB,
      dirtyBytesPerS: 0,
      writableBytes: 0,
      wireRatio: 0.5,
    });
    assert.equal(p.rounds.length, 2);
    assert.equal(p.stopReason, 'downtime-target');
    assert.equal(p.finalWireBytes, 0);
    assert.equal(p.finalTransferMs, 20);
    assert.ok(
      Math.abs(p.rounds[0]!.durationMs - (64 * MiB * 0.5 * 1000) / 12.5e6 - (64 * MiB * 1000) / 600e6 - 20) <
        1e-6,
    );
  });

  it('a slow hot set converges to the downtime target, sending a little over the memory', () => {
    const p = predictPrecopy({
      ...edge,
      residentBytes: 256 * MiB,
      dirtyBytesPerS: 2e6,
      writableBytes: 32 * MiB,
      wireRatio: 0.45,
      stopOverheadMs: 300,
    });
    assert.equal(p.stopReason, 'downtime-target');
    assert.ok(p.finalTransferMs <= 300);
    assert.ok(p.wireBytes > 256 * MiB * 0.45 && p.wireBytes < 256 * MiB * 0.6, String(p.wireBytes));
    assert.ok(Math.abs(p.downtimeMs - 300 - p.finalTransferMs) < 1e-9);
    const sum = p.rounds.reduce((s, r) => s + r.durationMs, 0);
    assert.ok(Math.abs(p.totalMs - sum - p.downtimeMs) < 1e-6);
  });

  it('dirtying faster than the link stops by a rule within a few rounds, not by looping', () => {
    const p = predictPrecopy({
      ...edge,
      residentBytes: 64 * MiB,
      dirtyBytesPerS: 30e6,
      writableBytes: 64 * MiB,
      wireRatio: 1,
    });
    // Saturated: each interval rewrites most of the memory, so the pending bytes stop shrinking.
    assert.ok(['not-shrinking', 'dirty-rate-exceeds-link'].includes(p.stopReason), p.stopReason);
    assert.ok(p.rounds.length <= 4);
    assert.ok(p.finalWireBytes > 32 * MiB);
  });

  it('a hot set that saturates but never fits the target stops as not shrinking or at the round limit', () => {
    const p = predictPrecopy({
      linkBytesPerS: 2.5e6,
      rttMs: 80,
      residentBytes: 64 * MiB,
      dirtyBytesPerS: 8e6,
      writableBytes: 16 * MiB,
      wireRatio: 0.5,
      maxRounds: 30,
    });
    assert.ok(['not-shrinking', 'dirty-rate-exceeds-link'].includes(p.stopReason), p.stopReason);
    assert.ok(p.rounds.length < 30);
  });

  it('a transfer’s fixed cost keeps a slow link from reaching the target that its rate alone would reach', () => {
    const base = {
      linkBytesPerS: 12.5e6,
      rttMs: 20,
      residentBytes: 32 * MiB,
      dirtyBytesPerS: 1.6 * MiB,
      writableBytes: 3.2 * MiB,
      wireRatio: 0.4,
      dirtyWireRatio: 1,
      maxRounds: 30,
    };
    assert.equal(predictPrecopy(base).stopReason, 'downtime-target');
    const slow = predictPrecopy({ ...base, roundOverheadMs: 700 });
    assert.notEqual(slow.stopReason, 'downtime-target');
    assert.ok(slow.finalTransferMs > 700);
  });

  it('honours maxRounds', () => {
    const p = predictPrecopy({
      ...edge,
      residentBytes: 64 * MiB,
      dirtyBytesPerS: 5e6,
      writableBytes: 64 * MiB,
      wireRatio: 1,
      maxRounds: 1,
    });
    assert.equal(p.rounds.length, 1);
    assert.equal(p.stopReason, 'max-rounds');
  });

  it('rejects a zero link or memory', () => {
    assert.throws(
      () =>
        predictPrecopy({
          ...edge,
          linkBytesPerS: 0,
          residentBytes: 1,
          dirtyBytesPerS: 0,
          writableBytes: 0,
          wireRatio: 1,
        }),
      RangeError,
    );
  });
});
