import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import {
  checkpointRequest,
  execRequest,
  killRequest,
  restoreRequest,
  runRequest,
  stopRequest,
} from './api.js';
import { absolutePath, array, integer, object, oneOf, optional, string, stringMap } from './schema.js';

/** Asserts that `fn` throws an InvalidArgumentError with `code` whose message matches `re`. */
function rejects(fn: () => unknown, re: RegExp, code: string = ErrorCode.RequestInvalid): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, re);
    return true;
  });
}

describe('schema combinators', () => {
  const s = object({
    a: string({ minLength: 1 }),
    n: optional(integer(1, 10)),
    inner: optional(object({ x: integer(0, 1) })),
  });

  it('returns a typed copy with only known fields', () => {
    assert.deepEqual(s.parse({ a: 'x', n: 3 }, ''), { a: 'x', n: 3 });
    assert.deepEqual(s.parse({ a: 'x' }, ''), { a: 'x' });
  });
  it('names unknown fields, also nested ones, and lists the known ones in the hint', () => {
    rejects(() => s.parse({ a: 'x', b: 1 }, ''), /^unknown field "b"$/);
    rejects(() => s.parse({ a: 'x', inner: { x: 0, y: 1 } }, ''), /^unknown field "inner\.y"$/);
    try {
      s.parse({ a: 'x', zz: 1 }, '');
    } catch (err) {
      assert.equal((err as InvalidArgumentError).hint, 'known fields: a, n, inner');
    }
  });
  it('names missing fields and says what they should be', () => {
    rejects(() => s.parse({}, ''), /^missing field "a" \(a string\)$/);
    rejects(() => s.parse({ a: 'x', inner: {} }, ''), /^missing field "inner\.x" \(an integer 0\.\.1\)$/);
  });
  it('checks types and ranges, naming the path', () => {
    rejects(() => s.parse({ a: 1 }, ''), /^a: expected a string, got 1$/);
    rejects(() => s.parse({ a: '' }, ''), /^a: must not be empty$/);
    rejects(() => s.parse({ a: 'x', n: 11 }, ''), /^n: expected an integer 1\.\.10, got 11$/);
    rejects(() => s.parse({ a: 'x', n: 1.5 }, ''), /^n: expected an integer/);
    rejects(() => s.parse({ a: 'x', n: null }, ''), /^n: expected an integer 1\.\.10, got null$/);
    rejects(() => s.parse([], ''), /expected an object, got an array/);
    rejects(() => s.parse({ a: 'x', inner: 'no' }, ''), /^inner: expected an object, got the string "no"$/);
  });
  it('keeps unknown fields when asked (responses from a newer agent)', () => {
    const loose = object({ a: string() }, { unknownFields: 'keep' });
    assert.deepEqual(loose.parse({ a: 'x', extra: [1] }, ''), { a: 'x', extra: [1] });
  });
  it('checks arrays, maps, enums and paths', () => {
    rejects(() => array(string(), { minItems: 1 }).parse([], 'args'), /^args: must not be empty$/);
    rejects(() => array(string()).parse(['a', 2], 'args'), /^args\[1\]: expected a string, got 2$/);
    rejects(() => oneOf(['a', 'b']).parse('c', 'k'), /^k: expected one of "a", "b"/);
    rejects(() => absolutePath().parse('rel/dir', 'dir'), /^dir: must be an absolute path/);
    rejects(() => string().parse('a\0b', 's'), /NUL/);
    rejects(() => string({ maxLength: 3 }).parse('abcd', 's'), /at most 3 characters/);
    const env = stringMap(/^[A-Z_]+$/, string());
    rejects(() => env.parse({ 'A=B': 'x' }, 'env'), /^env\.A=B: invalid key/);
  });
  it('keeps __proto__ keys as plain data', () => {
    const env = stringMap(/^[A-Za-z_]+$/, string());
    const out = env.parse(JSON.parse('{"__proto__": "x", "A": "b"}') as unknown, 'env');
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.deepEqual(Object.keys(out), ['__proto__', 'A']);
    rejects(
      () => object({ a: string() }).parse(JSON.parse('{"a":"x","__proto__":{}}') as unknown, ''),
      /unknown field "__proto__"/,
    );
  });
});

describe('API request schemas', () => {
  const run = { name: 'web', image: 'busybox', args: ['sh', '-c', 'true'] };

  it('accepts a full RunSpec', () => {
    const full = {
      ...run,
      env: { A: '1', _B: '' },
      memoryLimitBytes: 64 << 20,
      cwd: '/tmp',
      hostname: 'web.example',
      netnsPath: '/run/netns/x',
      network: { ip: '10.78.0.10', prefixLength: 24, mac: '02:42:0a:4e:00:0a', gateway: '10.78.0.1' },
    };
    assert.deepEqual(runRequest.parse(full, ''), full);
    assert.deepEqual(runRequest.parse(run, ''), run);
  });
  it('rejects bad RunSpecs with a message naming the problem', () => {
    rejects(
      () => runRequest.parse({ ...run, name: 'Bad Name' }, ''),
      /invalid container name "Bad Name"/,
      ErrorCode.InvalidName,
    );
    rejects(() => runRequest.parse({ ...run, args: [] }, ''), /^args: must not be empty$/);
    rejects(() => runRequest.parse({ ...run, env: { 'A-B': 'x' } }, ''), /^env\.A-B: invalid key/);
    rejects(() => runRequest.parse({ ...run, env: { A: 1 } }, ''), /^env\.A: expected a string/);
    rejects(
      () => runRequest.parse({ ...run, memoryLimitBytes: -1 }, ''),
      /^memoryLimitBytes: expected an integer/,
    );
    rejects(() => runRequest.parse({ ...run, cwd: 'tmp' }, ''), /^cwd: must be an absolute path/);
    rejects(() => runRequest.parse({ ...run, hostname: 'a b' }, ''), /^hostname: expected a host name/);
    rejects(() => runRequest.parse({ ...run, image: '' }, ''), /^image: must not be empty/);
    const net = { ip: '10.78.0.10', prefixLength: 24, mac: '02:42:0a:4e:00:0a' };
    rejects(
      () => runRequest.parse({ ...run, network: { ...net, ip: '10.78.0.300' } }, ''),
      /^network\.ip: expected a dotted IPv4/,
    );
    rejects(
      () => runRequest.parse({ ...run, network: { ...net, prefixLength: 33 } }, ''),
      /^network\.prefixLength/,
    );
    rejects(() => runRequest.parse({ ...run, network: { ...net, mac: 'zz' } }, ''), /^network\.mac/);
    rejects(
      () => runRequest.parse({ ...run, network: { ...net, vlan: 3 } }, ''),
      /^unknown field "network\.vlan"$/,
    );
  });
  it('checks the other bodies', () => {
    assert.deepEqual(execRequest.parse({ args: ['ls'] }, ''), { args: ['ls'] });
    rejects(
      () => execRequest.parse({ args: 'ls' }, ''),
      /^args: expected an array of strings, got the string "ls"$/,
    );
    for (const sig of ['TERM', 'SIGKILL', '9', 'RTMIN+1'])
      assert.deepEqual(killRequest.parse({ signal: sig }, ''), { signal: sig });
    rejects(() => killRequest.parse({ signal: 'term; rm' }, ''), /^signal: expected a signal/);
    rejects(() => stopRequest.parse({ timeoutMs: -1 }, ''), /^timeoutMs: expected an integer 0\.\.3600000/);
    assert.deepEqual(
      checkpointRequest.parse({ dir: '/c', pageServer: { address: '10.0.0.2', port: 27 } }, ''),
      {
        dir: '/c',
        pageServer: { address: '10.0.0.2', port: 27 },
      },
    );
    rejects(
      () => checkpointRequest.parse({ dir: '/c', pageServer: { address: 'x', port: 0 } }, ''),
      /^pageServer\.port/,
    );
    rejects(
      () => checkpointRequest.parse({ dir: '/c', leaveRunning: 'yes' }, ''),
      /^leaveRunning: expected true or false/,
    );
    rejects(() => restoreRequest.parse({ dir: '/c' }, ''), /^missing field "name"/);
    rejects(() => restoreRequest.parse({ dir: '/c', name: 'x', force: true }, ''), /^unknown field "force"$/);
  });
});
