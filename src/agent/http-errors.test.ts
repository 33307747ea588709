import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GodwitError } from '../core/errors.js';
import {
  AlreadyExistsError,
  ErrorCategory,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../core/errors.js';
import { errorFromResponse, httpStatusFor, toHttpError } from './http-errors.js';

describe('HTTP error mapping', () => {
  const cases: [GodwitError, number, new (...args: never[]) => GodwitError][] = [
    [new InvalidArgumentError(ErrorCode.InvalidName, 'bad'), 400, InvalidArgumentError],
    [new NotFoundError(ErrorCode.ContainerNotFound, 'gone', { hint: 'godwit ps' }), 404, NotFoundError],
    [new AlreadyExistsError(ErrorCode.ContainerExists, 'taken'), 409, AlreadyExistsError],
    [
      new FailedPreconditionError(ErrorCode.ContainerRunning, 'running', { hint: 'stop it' }),
      412,
      FailedPreconditionError,
    ],
    [
      new UnavailableError(ErrorCode.CriuDumpFailed, 'dump failed', {
        details: ['Error (criu/x.c:1): no', 'second'],
        hint: 'log: /x',
      }),
      503,
      UnavailableError,
    ],
    [new InternalError(ErrorCode.Internal, 'bug'), 500, InternalError],
    [new InvalidArgumentError(ErrorCode.RequestTooLarge, 'big'), 413, InvalidArgumentError],
    [new InvalidArgumentError(ErrorCode.MethodNotAllowed, 'no'), 405, InvalidArgumentError],
    [new InvalidArgumentError(ErrorCode.UnsupportedMediaType, 'xml'), 415, InvalidArgumentError],
    [new FailedPreconditionError(ErrorCode.NotImplemented, 'later'), 501, FailedPreconditionError],
  ];

  for (const [err, status, cls] of cases) {
    it(`${err.category} ${err.code} → ${status} and back`, () => {
      assert.equal(httpStatusFor(err), status);
      const res = toHttpError(err);
      assert.equal(res.status, status);
      assert.equal(res.unexpected, false);
      // Through the wire: JSON text and back.
      const back = errorFromResponse(res.status, JSON.parse(JSON.stringify(res.body)) as unknown, 'agent');
      assert.ok(back instanceof cls);
      assert.equal(back.code, err.code);
      assert.equal(back.category, err.category);
      assert.equal(back.message, err.message);
      assert.equal(back.hint, err.hint);
      assert.deepEqual(back.details, err.details);
      assert.deepEqual(back.toJSON(), err.toJSON());
    });
  }

  it('turns unexpected exceptions into GODWIT_INTERNAL 500', () => {
    const res = toHttpError(new TypeError('x is undefined'));
    assert.equal(res.status, 500);
    assert.equal(res.unexpected, true);
    assert.equal(res.body.error.code, ErrorCode.Internal);
    assert.equal(res.body.error.category, ErrorCategory.Internal);
    assert.match(res.body.error.message, /x is undefined/);
    assert.equal(toHttpError('a string').status, 500);
  });

  it('reports a body that is not a godwit error as AgentProtocol, quoting it', () => {
    const err = errorFromResponse(502, '<html>bad gateway</html>', 'the agent at /s');
    assert.ok(err instanceof UnavailableError);
    assert.equal(err.code, ErrorCode.AgentProtocol);
    assert.match(err.message, /answered HTTP 502/);
    assert.deepEqual(err.details, ['<html>bad gateway</html>']);
    const bad = errorFromResponse(400, { error: { code: 'X', category: 'weird', message: 'm' } }, 'a');
    assert.equal(bad.code, ErrorCode.AgentProtocol);
  });
});
