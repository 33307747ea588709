import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  describeReply,
  encodeCommand,
  RESP_LIMITS,
  RespParser,
  RespProtocolError,
  type RespValue,
} from './resp.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('encodeCommand', () => {
  it('writes an array of bulk strings', () => {
    assert.equal(
      encodeCommand(['INCR', 'godwit:probe']).toString('latin1'),
      '*2\r\n$4\r\nINCR\r\n$12\r\ngodwit:probe\r\n',
    );
    assert.equal(
      encodeCommand(['SET', 'k', Buffer.from([0, 13, 10])]).toString('latin1'),
      '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\x00\r\n\r\n',
    );
    assert.equal(encodeCommand(['ECHO', 'é']).toString('latin1'), '*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n');
  });
});

describe('RespParser', () => {
  it('parses each type', () => {
    const p = new RespParser();
    const got = p.push(
      b(
        '+PONG\r\n-ERR unknown command\r\n:42\r\n:-7\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n*2\r\n:1\r\n*1\r\n+x\r\n*0\r\n*-1\r\n',
      ),
    );
    const want: RespValue[] = [
      { type: 'simple', value: 'PONG' },
      { type: 'error', message: 'ERR unknown command' },
      { type: 'integer', value: 42 },
      { type: 'integer', value: -7 },
      { type: 'bulk', value: b('he\r\no') },
      { type: 'bulk', value: b('') },
      { type: 'bulk', value: null },
      {
        type: 'array',
        items: [
          { type: 'integer', value: 1 },
          { type: 'array', items: [{ type: 'simple', value: 'x' }] },
        ],
      },
      { type: 'array', items: [] },
      { type: 'array', items: null },
    ];
    assert.deepEqual(got, want);
    assert.equal(p.inProgress, false);
    p.end();
  });

  it('is incremental: any split gives the same replies', () => {
    const text = b(':1\r\n$3\r\nabc\r\n*2\r\n$1\r\nx\r\n:9\r\n+OK\r\n');
    const whole = new RespParser().push(text);
    assert.equal(whole.length, 4);
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new RespParser();
      const got = [...p.push(text.subarray(0, cut)), ...p.push(text.subarray(cut))];
      assert.deepEqual(got, whole, `cut at ${cut}`);
    }
    const p = new RespParser();
    const got: RespValue[] = [];
    for (const byte of text) got.push(...p.push(Buffer.from([byte])));
    assert.deepEqual(got, whole, 'byte by byte');
  });

  it('says a reply is in progress, and end() refuses a cut reply', () => {
    const p = new RespParser();
    assert.deepEqual(p.push(b('$5\r\nab')), []);
    assert.equal(p.inProgress, true);
    assert.throws(() => p.end(), RespProtocolError);
    const q = new RespParser();
    assert.deepEqual(q.push(b(':1')), []);
    assert.throws(() => q.end(), /in the middle of a reply/);
  });

  it('refuses malformed replies', () => {
    for (const bad of [
      '!oops\r\n',
      '\r\n',
      ':12x\r\n',
      ':\r\n',
      ':99999999999999999999\r\n',
      '$abc\r\n',
      '$-2\r\n',
      '$3\r\nabcd\r\n',
      '*x\r\n',
      '*-5\r\n',
    ]) {
      assert.throws(() => new RespParser().push(b(bad)), RespProtocolError, JSON.stringify(bad));
    }
  });

  it('keeps within its limits', () => {
    assert.throws(() => new RespParser().push(b(`$${RESP_LIMITS.bulkBytes + 1}\r\n`)), /too large/);
    assert.throws(() => new RespParser().push(b(`*${RESP_LIMITS.arrayItems + 1}\r\n`)), /too large/);
    assert.throws(
      () => new RespParser().push(b('+' + 'a'.repeat(RESP_LIMITS.lineBytes + 10))),
      /longer than/,
    );
    assert.throws(
      () => new RespParser().push(b('*1\r\n'.repeat(RESP_LIMITS.depth + 1) + ':1\r\n')),
      /nested/,
    );
    const deepest = '*1\r\n'.repeat(RESP_LIMITS.depth) + ':1\r\n';
    assert.equal(new RespParser().push(b(deepest)).length, 1);
    assert.throws(() => new RespParser().push(b(`:${2 ** 53 + 2}\r\n`)), /beyond/);
  });

  it('describes replies in one line', () => {
    const [v] = new RespParser().push(b('*3\r\n+OK\r\n:3\r\n$1\r\nx\r\n'));
    assert.ok(v);
    assert.equal(describeReply(v), '[+OK, :3, "x"]');
    assert.equal(describeReply({ type: 'error', message: 'ERR x' }), '-ERR x');
    assert.equal(describeReply({ type: 'bulk', value: null }), '(nil)');
  });
});
