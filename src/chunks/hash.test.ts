import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { assertDigest, digestHex, digestOf, isDigest, isZero } from './hash.js';

describe('digestOf', () => {
  it('is sha256: and the lower-case hex of SHA-256', () => {
    assert.equal(
      digestOf(Buffer.from('abc')),
      'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    assert.equal(
      digestOf(Buffer.alloc(0)),
      'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    assert.equal(digestHex(digestOf(Buffer.from('abc'))).length, 64);
  });
  it('hashes only the view of a subarray', () => {
    const big = Buffer.from('xxabcxx');
    assert.equal(digestOf(big.subarray(2, 5)), digestOf(Buffer.from('abc')));
  });
});

describe('isDigest and assertDigest', () => {
  const good = digestOf(Buffer.from('x'));
  it('accept only sha256: with 64 lower-case hex digits', () => {
    assert.equal(isDigest(good), true);
    for (const bad of [
      good.toUpperCase(),
      good.slice(0, -1),
      `${good}0`,
      good.replace('sha256:', 'sha512:'),
      good.slice(7),
      `${good.slice(0, -1)}g`,
      42,
      null,
      undefined,
    ]) {
      assert.equal(isDigest(bad), false, String(bad));
    }
  });
  it('assertDigest throws InvalidDigest', () => {
    assert.throws(
      () => assertDigest('nope'),
      (err: unknown) => err instanceof GodwitError && err.code === ErrorCode.InvalidDigest,
    );
    assertDigest(good);
  });
});

describe('isZero', () => {
  it('is true only for all-zero bytes, at any size and offset', () => {
    for (const size of [0, 1, 4095, 4096, 65536, (1 << 20) + 3, 3 << 20]) {
      const buf = Buffer.alloc(size + 1).subarray(1);
      assert.equal(isZero(buf), true, `zero ${size}`);
      if (size === 0) continue;
      for (const at of [0, size >> 1, size - 1]) {
        buf[at] = 1;
        assert.equal(isZero(buf), false, `size ${size} byte ${at}`);
        buf[at] = 0;
      }
    }
  });
});
