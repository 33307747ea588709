import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isInstalledStatus } from './apt.js';

describe('isInstalledStatus', () => {
  it('accepts installed packages, held or not', () => {
    assert.equal(isInstalledStatus('install ok installed'), true);
    assert.equal(isInstalledStatus('hold ok installed\n'), true);
  });
  it('refuses removed, half-installed and unknown packages', () => {
    assert.equal(isInstalledStatus('unknown ok not-installed'), false);
    assert.equal(isInstalledStatus('deinstall ok config-files'), false);
    assert.equal(isInstalledStatus('install reinstreq half-installed'), false);
    assert.equal(isInstalledStatus(''), false);
  });
});
