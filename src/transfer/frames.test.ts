import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MANIFEST_VERSION, type Manifest } from '../core/chunks.js';
import { ErrorCategory, ErrorCode, GodwitError } from '../core/errors.js';
import { digestOf } from '../chunks/index.js';
import { CodecId } from './codec.js';
import {
  CHUNK_HEADER_BYTES,
  encodeChunk,
  encodeFrame,
  encodeJsonFrame,
  encodeOffer,
  encodeWant,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  MAX_CONTROL_BYTES,
  RECEIVER_ACCEPTS,
  RECEIVER_FIRST,
  SENDER_ACCEPTS,
  SENDER_FIRST,
  type Frame,
} from './frames.js';
import { seededRandom } from './mixed-content.js';

const TYPED_CODES = new Set<string>([
  ErrorCode.TransferProtocol,
  ErrorCode.TransferTooLarge,
  ErrorCode.ManifestInvalid,
]);

function isTyped(err: unknown): boolean {
  return err instanceof GodwitError && TYPED_CODES.has(err.code);
}

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof GodwitError && err.code === code);
}

const d1 = digestOf(Buffer.from('one'));
const d2 = digestOf(Buffer.from('two'));

const manifest: Manifest = {
  version: MANIFEST_VERSION,
  label: 'frames-test',
  createdAt: new Date(0).toISOString(),
  entries: [
    { type: 'dir', path: 'a', mode: 0o755 },
    { type: 'file', path: 'a/f', mode: 0o644, size: 8195, chunks: [{ digest: d1, size: 3 }, { zero: 8192 }] },
    { type: 'file', path: 'a/g', mode: 0o644, size: 3, chunks: [{ digest: d2, size: 3 }] },
  ],
};

/** A valid sender → receiver stream of every frame type the receiver accepts. */
function senderStream(): Buffer {
  return Buffer.concat([
    encodeJsonFrame(FrameType.Hello, {
      protocol: 1,
      role: 'sender',
      sessionId: 's-1',
      stream: 0,
      streams: 2,
    }),
    encodeOffer(Buffer.from(JSON.stringify(manifest))),
    encodeChunk(d1, CodecId.none, 3, Buffer.from('one')),
    encodeChunk(d2, CodecId.none, 3, Buffer.from('two')),
    encodeFrame(FrameType.Ping, Buffer.from('p')),
    encodeJsonFrame(FrameType.End, { chunks: 2, rawBytes: 6 }),
  ]);
}

/** A valid receiver → sender stream. */
function receiverStream(): Buffer {
  return Buffer.concat([
    encodeJsonFrame(FrameType.HelloOk, {
      protocol: 1,
      sessionId: 's-1',
      resumeToken: '0123456789abcdef0123456789abcdef',
      maxChunkSize: 65536,
      maxOfferBytes: 1 << 20,
    }),
    ...encodeWant([d1, d2, d1], 2),
    encodeJsonFrame(FrameType.Done, {
      complete: true,
      missing: 0,
      chunks: 2,
      rawBytes: 6,
      duplicates: 0,
      sessionChunks: 2,
      sessionRawBytes: 6,
    }),
    encodeJsonFrame(FrameType.Error, {
      code: 'GODWIT_X',
      message: 'bye',
      category: ErrorCategory.Unavailable,
    }),
  ]);
}

function decodeAll(dec: FrameDecoder, data: Buffer, pieces: number[]): Frame[] {
  const out: Frame[] = [];
  let off = 0;
  for (const n of pieces) {
    out.push(...dec.push(data.subarray(off, off + n)));
    off += n;
  }
  out.push(...dec.push(data.subarray(off)));
  dec.finish();
  return out;
}

describe('frames', () => {
  it('decodes what it encodes, split at every byte boundary', () => {
    const data = senderStream();
    const whole = decodeAll(new FrameDecoder(RECEIVER_ACCEPTS), data, []);
    assert.deepEqual(
      whole.map((f) => f.type),
      [FrameType.Hello, FrameType.Offer, FrameType.Chunk, FrameType.Chunk, FrameType.Ping, FrameType.End],
    );
    const offer = whole[1] as Extract<Frame, { type: FrameType.Offer }>;
    assert.deepEqual(offer.manifest, manifest);
    assert.match(offer.offerDigest, /^[0-9a-f]{64}$/);
    const chunk = whole[3] as Extract<Frame, { type: FrameType.Chunk }>;
    assert.equal(chunk.digest, d2);
    assert.equal(chunk.data.toString(), 'two');
    for (let cut = 1; cut < data.length; cut++) {
      const frames = decodeAll(new FrameDecoder(RECEIVER_ACCEPTS), data, [cut]);
      assert.deepEqual(frames, whole, `split at ${cut}`);
    }
    const bytewise = decodeAll(new FrameDecoder(RECEIVER_ACCEPTS), data, Array<number>(data.length).fill(1));
    assert.deepEqual(bytewise, whole);
  });

  it('decodes the receiver side: WANT split over frames, DONE, ERROR', () => {
    const frames = decodeAll(new FrameDecoder(SENDER_ACCEPTS), receiverStream(), [7, 100]);
    const wants = frames.filter((f) => f.type === FrameType.Want) as Extract<
      Frame,
      { type: FrameType.Want }
    >[];
    assert.deepEqual(
      wants.map((w) => [w.last, w.digests]),
      [
        [false, [d1, d2]],
        [true, [d1]],
      ],
    );
    assert.deepEqual(
      encodeWant([]).map((b) => b.length),
      [FRAME_HEADER_BYTES + 1],
    );
    const err = frames.at(-1) as Extract<Frame, { type: FrameType.Error }>;
    assert.equal(err.error.code, 'GODWIT_X');
  });

  it('rejects an oversize length from the header alone, before buffering the payload', () => {
    const dec = new FrameDecoder(RECEIVER_ACCEPTS, { maxOfferBytes: 1024 });
    const header = Buffer.alloc(5);
    header.writeUInt32BE(2048, 0);
    header.writeUInt8(FrameType.Offer, 4);
    expectCode(() => dec.push(header), ErrorCode.TransferTooLarge);
    expectCode(() => dec.push(Buffer.alloc(10)), ErrorCode.TransferTooLarge); // stays failed
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff, FrameType.Chunk]);
    expectCode(() => new FrameDecoder(RECEIVER_ACCEPTS).push(huge), ErrorCode.TransferTooLarge);
    const ctl = Buffer.alloc(5);
    ctl.writeUInt32BE(MAX_CONTROL_BYTES + 2, 0);
    ctl.writeUInt8(FrameType.Hello, 4);
    expectCode(() => new FrameDecoder(RECEIVER_ACCEPTS).push(ctl), ErrorCode.TransferTooLarge);
    const chunk = encodeChunk(d1, CodecId.none, 3, Buffer.from('one'));
    chunk.writeUInt32BE(70_000, FRAME_HEADER_BYTES + 33); // raw size over the limit
    expectCode(
      () => new FrameDecoder(RECEIVER_ACCEPTS, { maxChunkSize: 65536 }).push(chunk),
      ErrorCode.TransferTooLarge,
    );
  });

  it('rejects malformed frames with TransferProtocol', () => {
    expectCode(
      () => new FrameDecoder(RECEIVER_ACCEPTS).push(encodeFrame(FrameType.Ping, Buffer.alloc(65))),
      ErrorCode.TransferTooLarge,
    );
    const bad: [string, Buffer][] = [
      ['zero length', Buffer.from([0, 0, 0, 0, 1])],
      ['unknown type', encodeFrame(200 as FrameType, Buffer.from('{}'))],
      ['type for the other side', encodeFrame(FrameType.Want, Buffer.from([1]))],
      ['not JSON', encodeFrame(FrameType.Hello, Buffer.from('{nope'))],
      ['unknown field', encodeFrame(FrameType.End, Buffer.from('{"chunks":1,"rawBytes":1,"x":1}'))],
      [
        'bad session id',
        encodeFrame(
          FrameType.Hello,
          Buffer.from(
            JSON.stringify({ protocol: 1, role: 'sender', sessionId: '../x', stream: 0, streams: 1 }),
          ),
        ),
      ],
      [
        'stream out of range',
        encodeFrame(
          FrameType.Hello,
          Buffer.from(JSON.stringify({ protocol: 1, role: 'sender', sessionId: 'x', stream: 2, streams: 2 })),
        ),
      ],
      ['negative count', encodeFrame(FrameType.End, Buffer.from('{"chunks":-1,"rawBytes":1}'))],
      ['array', encodeFrame(FrameType.End, Buffer.from('[1,2]'))],
      ['short chunk', encodeFrame(FrameType.Chunk, Buffer.alloc(CHUNK_HEADER_BYTES - 1))],
      [
        'unknown codec',
        (() => {
          const c = encodeChunk(d1, CodecId.none, 3, Buffer.from('one'));
          c.writeUInt8(9, FRAME_HEADER_BYTES + 32);
          return c;
        })(),
      ],
    ];
    for (const [what, buf] of bad) {
      assert.throws(
        () => new FrameDecoder(RECEIVER_ACCEPTS).push(buf),
        (err: unknown) => err instanceof GodwitError && err.code === ErrorCode.TransferProtocol,
        what,
      );
    }
    expectCode(
      () => new FrameDecoder(RECEIVER_ACCEPTS).push(encodeOffer(Buffer.from('{"version":2}'))),
      ErrorCode.ManifestInvalid,
    );
    // An OFFER whose payload is not codec + length + encoded JSON.
    expectCode(
      () =>
        new FrameDecoder(RECEIVER_ACCEPTS).push(encodeFrame(FrameType.Offer, Buffer.from('{"version":2}'))),
      ErrorCode.TransferProtocol,
    );
    const want = encodeFrame(FrameType.Want, Buffer.alloc(1 + 31));
    expectCode(() => new FrameDecoder(SENDER_ACCEPTS).push(want), ErrorCode.TransferProtocol);
    const flags = encodeFrame(FrameType.Want, Buffer.from([2]));
    expectCode(() => new FrameDecoder(SENDER_ACCEPTS).push(flags), ErrorCode.TransferProtocol);
  });

  it('accepts only the handshake frame first, judged from the header', () => {
    const dec = new FrameDecoder(RECEIVER_ACCEPTS, {}, RECEIVER_FIRST);
    const offerHeader = encodeOffer(Buffer.alloc(1000)).subarray(0, FRAME_HEADER_BYTES);
    expectCode(() => dec.push(offerHeader), ErrorCode.TransferProtocol);
    const ok = new FrameDecoder(RECEIVER_ACCEPTS, {}, RECEIVER_FIRST);
    assert.equal(ok.push(senderStream()).length, 6);
    const sender = new FrameDecoder(SENDER_ACCEPTS, {}, SENDER_FIRST);
    expectCode(() => sender.push(encodeWant([d1])[0] as Buffer), ErrorCode.TransferProtocol);
  });

  it('reports a stream that ends inside a frame', () => {
    const data = senderStream();
    for (const cut of [1, 4, 5, 6, 40, data.length - 1]) {
      const dec = new FrameDecoder(RECEIVER_ACCEPTS);
      dec.push(data.subarray(0, cut));
      expectCode(() => dec.finish(), ErrorCode.TransferProtocol);
    }
  });

  it('fuzz: random, mutated and truncated streams end only in typed errors, quickly, within bounded memory', () => {
    const rnd = seededRandom(20240607);
    const valid = [senderStream(), receiverStream()];
    const limits = { maxOfferBytes: 64 * 1024, maxChunkSize: 65536, maxWantDigests: 64 };
    // One frame plus a header is all a decoder may hold.
    const bound = 64 * 1024 + 65536 + 2048 + 16;
    const started = Date.now();
    let errors = 0;
    let frames = 0;
    for (let iter = 0; iter < 3000; iter++) {
      const side = iter % 2;
      const accept = side === 0 ? RECEIVER_ACCEPTS : SENDER_ACCEPTS;
      let data: Buffer;
      const mode = iter % 3;
      if (mode === 0) {
        data = Buffer.alloc(1 + (rnd() % 4096));
        for (let i = 0; i < data.length; i++) data[i] = rnd() & 255;
        // Bias the type byte and length towards plausible values now and then.
        if (rnd() % 2 === 0 && data.length > 5) {
          data.writeUInt32BE(rnd() % 200, 0);
          data[4] = 1 + (rnd() % 10);
        }
      } else {
        data = Buffer.from(valid[side] as Buffer);
        const flips = 1 + (rnd() % 8);
        for (let k = 0; k < flips; k++) data[rnd() % data.length] = rnd() & 255;
        if (mode === 2) data = data.subarray(0, rnd() % data.length);
      }
      const dec = new FrameDecoder(accept, limits);
      try {
        let off = 0;
        while (off < data.length) {
          const n = 1 + (rnd() % 300);
          frames += dec.push(data.subarray(off, off + n)).length;
          assert.ok(dec.bufferedBytes <= bound, `decoder holds ${dec.bufferedBytes} bytes`);
          off += n;
        }
        dec.finish();
      } catch (err) {
        if (!isTyped(err)) throw err;
        errors++;
      }
    }
    assert.ok(errors > 2000, `most streams are rejected (${errors})`);
    assert.ok(frames > 0);
    assert.ok(Date.now() - started < 20_000, 'bounded time');
  });
});
