import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { formatLinkSpec, LINK_PROFILES, linkProfile, parseLinkSpec, validateLinkSpec } from './profiles.js';

function assertInvalid(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseLinkSpec(text),
    (err: unknown) =>
      err instanceof InvalidArgumentError &&
      err.code === ErrorCode.InvalidLinkSpec &&
      pattern.test(err.message),
  );
}

describe('link profiles', () => {
  it('defines lan, edge, 4g and wan with one-way delays', () => {
    assert.deepEqual(LINK_PROFILES['lan'], { name: 'lan', rateMbit: 1000, delayMs: 0.5, lossPct: 0 });
    assert.deepEqual(LINK_PROFILES['edge'], { name: 'edge', rateMbit: 100, delayMs: 10, lossPct: 0 });
    assert.deepEqual(LINK_PROFILES['4g'], { name: '4g', rateMbit: 20, delayMs: 40, lossPct: 0 });
    assert.deepEqual(LINK_PROFILES['wan'], { name: 'wan', rateMbit: 50, delayMs: 50, lossPct: 0.1 });
  });

  it('hands out copies, not the frozen profiles', () => {
    const p = linkProfile('edge')!;
    p.rateMbit = 1;
    assert.equal(LINK_PROFILES['edge']!.rateMbit, 100);
    assert.equal(linkProfile('nope'), undefined);
    assert.equal(linkProfile('toString'), undefined);
  });

  it('parses profile names, case-insensitively', () => {
    assert.deepEqual(parseLinkSpec('edge'), LINK_PROFILES['edge']);
    assert.deepEqual(parseLinkSpec(' 4G '), LINK_PROFILES['4g']);
  });

  it('parses RATE,DELAY[,LOSS]', () => {
    assert.deepEqual(parseLinkSpec('100mbit,10ms,0.5%'), {
      name: 'custom',
      rateMbit: 100,
      delayMs: 10,
      lossPct: 0.5,
    });
    assert.deepEqual(parseLinkSpec('512kbit, 250us'), {
      name: 'custom',
      rateMbit: 0.512,
      delayMs: 0.25,
      lossPct: 0,
    });
    assert.deepEqual(parseLinkSpec('1gbit,0.2s,1'), {
      name: 'custom',
      rateMbit: 1000,
      delayMs: 200,
      lossPct: 1,
    });
    assert.deepEqual(parseLinkSpec('10Mbit,0ms'), { name: 'custom', rateMbit: 10, delayMs: 0, lossPct: 0 });
  });

  it('rejects malformed specs with a clear message', () => {
    assertInvalid('satellite', /expected a profile/);
    assertInvalid('', /expected a profile/);
    assertInvalid('100mbit', /expected a profile/);
    assertInvalid('100,10ms', /rate "100"/);
    assertInvalid('100mbps,10ms', /rate "100mbps"/);
    assertInvalid('100mbit,10', /delay "10"/);
    assertInvalid('100mbit,-1ms', /delay "-1ms"/);
    assertInvalid('100mbit,10ms,x%', /loss "x%"/);
    assertInvalid('100mbit,10ms,150%', /between 0% and 100%/);
    assertInvalid('1kbit,10ms', /rate must be/);
    assertInvalid('100mbit,11s', /at most 10s/);
    assertInvalid('1,2,3,4', /expected a profile/);
  });

  it('validates links read from files', () => {
    assert.throws(
      () => validateLinkSpec({ name: 'x', rateMbit: 0, delayMs: 1, lossPct: 0 }),
      InvalidArgumentError,
    );
    assert.throws(
      () => validateLinkSpec({ name: 'x', rateMbit: 1, delayMs: NaN, lossPct: 0 }),
      InvalidArgumentError,
    );
    assert.doesNotThrow(() => validateLinkSpec({ name: 'x', rateMbit: 1, delayMs: 0, lossPct: 100 }));
  });

  it('formats a link for people', () => {
    assert.equal(formatLinkSpec(LINK_PROFILES['edge']!), 'edge (100 Mbit/s, 10 ms one way)');
    assert.equal(formatLinkSpec(LINK_PROFILES['wan']!), 'wan (50 Mbit/s, 50 ms one way, 0.1 % loss)');
  });
});
