import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { ContainerStatus } from '../core/runtime.js';
import {
  CHECKPOINT_FORMAT,
  parseCheckpointManifest,
  parseContainerRecord,
  statusFromRunc,
} from './records.js';
import { validateName } from './state-dir.js';

const spec = { name: 'c1', image: 'busybox', args: ['sh'], env: { A: 'b' } };
const manifest = {
  format: CHECKPOINT_FORMAT,
  spec,
  imageId: 'abc',
  sourceHostId: 'h1',
  createdAt: '2026-11-25T00:00:00Z',
  leftRunning: false,
  tcpEstablished: true,
  lazyPages: false,
  hasRootfsDiff: true,
};

describe('checkpoint manifest validation', () => {
  it('accepts a valid manifest', () => {
    assert.deepEqual(parseCheckpointManifest(manifest, 'm').spec, spec);
  });
  it('keeps whether CRIU left cgroups alone', () => {
    assert.equal(parseCheckpointManifest(manifest, 'm').cgroups, undefined);
    assert.equal(parseCheckpointManifest({ ...manifest, cgroups: 'ignored' }, 'm').cgroups, 'ignored');
  });
  for (const [what, value] of [
    ['wrong format', { ...manifest, format: 'other/9' }],
    ['empty args', { ...manifest, spec: { ...spec, args: [] } }],
    ['non-string env', { ...manifest, spec: { ...spec, env: { A: 1 } } }],
    ['bad env key', { ...manifest, spec: { ...spec, env: { 'A=B': 'x' } } }],
    ['missing flag', { ...manifest, lazyPages: undefined }],
    ['unknown cgroups mode', { ...manifest, cgroups: 'soft' }],
    ['not an object', [1, 2]],
    ['negative memory', { ...manifest, spec: { ...spec, memoryLimitBytes: -1 } }],
  ] as const) {
    it(`rejects ${what} with a typed error`, () => {
      assert.throws(
        () => parseCheckpointManifest(value, 'm'),
        (err: unknown) => err instanceof InvalidArgumentError && err.code === ErrorCode.InvalidState,
      );
    });
  }
});

describe('container record validation', () => {
  it('round-trips optional fields', () => {
    const rec = { version: 1, spec, imageId: 'i', lowerDir: '/l', createdAt: 'now', restoredFrom: '/cp' };
    assert.deepEqual(parseContainerRecord(rec, 'r'), rec);
  });
  it('rejects an unknown version', () => {
    assert.throws(() => parseContainerRecord({ version: 2 }, 'r'), InvalidArgumentError);
  });
});

describe('names and statuses', () => {
  it('validates container names', () => {
    for (const ok of ['a', 'web-1', 'x.y_z', '0abc']) validateName(ok);
    for (const bad of ['', 'A', '-x', 'a/b', '..', 'a'.repeat(64), 'a b']) {
      assert.throws(
        () => validateName(bad),
        (e: unknown) => e instanceof InvalidArgumentError && e.code === ErrorCode.InvalidName,
      );
    }
  });
  it('maps runc statuses', () => {
    assert.equal(statusFromRunc('running'), ContainerStatus.Running);
    assert.equal(statusFromRunc('created'), ContainerStatus.Created);
    assert.equal(statusFromRunc('paused'), ContainerStatus.Paused);
    assert.equal(statusFromRunc('stopped'), ContainerStatus.Stopped);
  });
});
