import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { counterFromBody, getRequest, HttpProtocolError, HttpResponseParser, parseTarget } from './http.js';

describe('parseTarget', () => {
  it('accepts host:port, with a path, and IPv6 in brackets', () => {
    assert.deepEqual(parseTarget('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080, path: '/' });
    assert.deepEqual(parseTarget('svc.local:80/x?y=1'), { host: 'svc.local', port: 80, path: '/x?y=1' });
    assert.deepEqual(parseTarget('[::1]:8080'), { host: '::1', port: 8080, path: '/' });
  });
  it('accepts http URLs, port 80 by default', () => {
    assert.deepEqual(parseTarget('http://10.0.0.2:8080/count'), {
      host: '10.0.0.2',
      port: 8080,
      path: '/count',
    });
    assert.deepEqual(parseTarget('http://example.test'), { host: 'example.test', port: 80, path: '/' });
    assert.deepEqual(parseTarget('http://[::1]:81/a'), { host: '::1', port: 81, path: '/a' });
  });
  it('accepts redis URLs, port 6379 by default', () => {
    assert.deepEqual(parseTarget('redis://10.78.0.5:6380'), {
      host: '10.78.0.5',
      port: 6380,
      path: '',
      protocol: 'redis',
    });
    assert.deepEqual(parseTarget('redis://cache.local/'), {
      host: 'cache.local',
      port: 6379,
      path: '',
      protocol: 'redis',
    });
    assert.deepEqual(parseTarget('redis://[::1]:7000'), {
      host: '::1',
      port: 7000,
      path: '',
      protocol: 'redis',
    });
  });
  it('rejects the rest with InvalidFlag', () => {
    for (const bad of [
      '',
      'localhost',
      '127.0.0.1:0',
      '127.0.0.1:70000',
      'https://x:1/',
      'ftp://x',
      '[zz]:1',
      'redis://x:0',
      'redis://x:6379/1',
      'redis://u:p@x:6379',
      'redis://x:6379?db=1',
      'rediss://x:6379',
    ]) {
      assert.throws(() => parseTarget(bad), { code: 'GODWIT_INVALID_FLAG' }, bad);
    }
  });
});

describe('getRequest', () => {
  it('writes a GET with Host and Connection', () => {
    const text = getRequest({ host: '::1', port: 8080, path: '/p' }, false).toString('latin1');
    assert.match(text, /^GET \/p HTTP\/1\.1\r\n/);
    assert.match(text, /\r\nHost: \[::1\]:8080\r\n/);
    assert.match(text, /\r\nConnection: close\r\n\r\n$/);
    assert.match(getRequest({ host: 'h', port: 1, path: '/' }, true).toString(), /Connection: keep-alive/);
  });
});

const reply = (body: string, extra = ''): string =>
  `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe('HttpResponseParser', () => {
  it('parses pipelined responses split at every byte', () => {
    const wire = Buffer.from(reply('counter 1\n') + reply('counter 2\n', 'Connection: close\r\n'));
    const p = new HttpResponseParser();
    const got = [];
    for (let i = 0; i < wire.length; i++) got.push(...p.push(wire.subarray(i, i + 1)));
    assert.equal(got.length, 2);
    assert.equal(got[0]?.status, 200);
    assert.equal(got[0]?.body.toString(), 'counter 1\n');
    assert.equal(got[0]?.closes, false);
    assert.equal(got[1]?.closes, true);
    assert.equal(got[1]?.headers['content-type'], 'text/plain');
    assert.equal(p.inProgress, false);
  });
  it('parses chunked bodies and skips 100 Continue', () => {
    const wire =
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
      '4\r\ncoun\r\n6;ext=1\r\nter 7\n\r\n0\r\nX-Trailer: 1\r\n\r\n';
    const p = new HttpResponseParser();
    const got = p.push(Buffer.from(wire));
    assert.equal(got.length, 1);
    assert.equal(got[0]?.body.toString(), 'counter 7\n');
  });
  it('completes a close-delimited body at end', () => {
    const p = new HttpResponseParser();
    assert.deepEqual(p.push(Buffer.from('HTTP/1.0 200 OK\r\n\r\ncounter 3')), []);
    const last = p.end();
    assert.equal(last?.body.toString(), 'counter 3');
    assert.equal(last?.closes, true);
  });
  it('treats 204 as bodiless and returns nothing at a clean end', () => {
    const p = new HttpResponseParser();
    assert.equal(p.push(Buffer.from('HTTP/1.1 204 No Content\r\n\r\n')).length, 1);
    assert.equal(p.end(), undefined);
  });
  it('rejects malformed responses and a close mid-response', () => {
    assert.throws(() => new HttpResponseParser().push(Buffer.from('SSH-2.0-x\r\n\r\n')), HttpProtocolError);
    assert.throws(
      () => new HttpResponseParser().push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n')),
      HttpProtocolError,
    );
    assert.throws(
      () => new HttpResponseParser().push(Buffer.from('HTTP/1.1 200 OK\r\nbad header\r\n\r\n')),
      HttpProtocolError,
    );
    const p = new HttpResponseParser();
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncount'));
    assert.throws(() => p.end(), HttpProtocolError);
  });
  it('limits the head size', () => {
    const p = new HttpResponseParser();
    assert.throws(() => p.push(Buffer.alloc(70 * 1024, 'a')), /too large/);
  });
});

describe('counterFromBody', () => {
  it('reads counter N', () => {
    assert.equal(counterFromBody('counter 42\n'), 42);
    assert.equal(counterFromBody(Buffer.from('hello\ncounter 7\n')), 7);
    assert.equal(counterFromBody('counter x'), undefined);
    assert.equal(counterFromBody('no'), undefined);
  });
});
