import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatMs, table, truncate } from './format.js';
import { exitCodeFor, ExitCode } from './exit-codes.js';
import { ErrorCode, InvalidArgumentError, NotFoundError, UnavailableError } from '../core/errors.js';

describe('format', () => {
  it('aligns table columns', () => {
    assert.equal(
      table(
        ['NAME', 'STATUS'],
        [
          ['a', 'running'],
          ['long-name', 'x'],
        ],
      ),
      'NAME       STATUS\na          running\nlong-name  x',
    );
  });
  it('formats bytes and ms', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(268435456), '256.0 MiB');
    assert.equal(formatMs(0.4239), '0.42 ms');
    assert.equal(formatMs(12.34), '12.3 ms');
    assert.equal(formatMs(1234.5), '1235 ms');
    assert.equal(truncate('abcdef', 4), 'abc…');
  });
});

describe('exitCodeFor', () => {
  it('maps categories to stable codes', () => {
    assert.equal(exitCodeFor(new InvalidArgumentError(ErrorCode.InvalidFlag, 'x')), ExitCode.Usage);
    assert.equal(exitCodeFor(new NotFoundError(ErrorCode.ContainerNotFound, 'x')), ExitCode.NotFound);
    assert.equal(exitCodeFor(new UnavailableError(ErrorCode.CriuDumpFailed, 'x')), ExitCode.Unavailable);
    assert.equal(exitCodeFor(new Error('boom')), ExitCode.Internal);
  });
});
