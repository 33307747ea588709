import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareVersions, isSupportedCriuVersion, MIN_CRIU_VERSION, parseCriuVersion } from './version.js';

describe('parseCriuVersion', () => {
  it('reads a plain version line', () => {
    assert.equal(parseCriuVersion('Version: 4.2.1\n'), '4.2.1');
  });
  it('reads a version followed by a GitID line', () => {
    assert.equal(parseCriuVersion('Version: 3.17.1\nGitID: v3.17.1-12-gabcdef\n'), '3.17.1');
  });
  it('reads a two-part version', () => {
    assert.equal(parseCriuVersion('Version: 4.2'), '4.2');
  });
  it('returns undefined for unrelated output', () => {
    assert.equal(parseCriuVersion('criu: command not found'), undefined);
    assert.equal(parseCriuVersion(''), undefined);
  });
});

describe('compareVersions', () => {
  it('compares numerically, not lexically', () => {
    assert.equal(compareVersions('4.10', '4.2'), 1);
    assert.equal(compareVersions('3.17.1', '4.2'), -1);
    assert.equal(compareVersions('4.1.1', '4.2'), -1);
  });
  it('treats missing parts as zero', () => {
    assert.equal(compareVersions('4.2', '4.2.0'), 0);
    assert.equal(compareVersions('4.2.1', '4.2'), 1);
  });
  it('ignores suffixes', () => {
    assert.equal(compareVersions('4.2.1-1', '4.2.1'), 0);
    assert.equal(compareVersions('v4.3', '4.2'), 1);
  });
});

describe('isSupportedCriuVersion', () => {
  it('accepts the minimum and newer, refuses older', () => {
    assert.equal(MIN_CRIU_VERSION, '4.2');
    assert.equal(isSupportedCriuVersion('4.2'), true);
    assert.equal(isSupportedCriuVersion('4.2.1'), true);
    assert.equal(isSupportedCriuVersion('5.0'), true);
    assert.equal(isSupportedCriuVersion('4.1.1'), false);
    assert.equal(isSupportedCriuVersion('3.17.1'), false);
  });
});
