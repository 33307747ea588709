import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import zstd from 'zstd-napi/binding.js';
import lz4 from 'lz4-napi';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { ChunkCompressor, CodecId, decompressChunk, MAX_CHUNK_BYTES, parseCodecName } from './codec.js';
import { mixedPages, PAGE_KINDS } from './mixed-content.js';

function rejects(fn: () => unknown, code: string = ErrorCode.DecompressFailed): void {
  assert.throws(fn, (err: unknown) => err instanceof GodwitError && err.code === code);
}

function zstdFrame(raw: Buffer, level = 1): Buffer {
  const dst = Buffer.alloc(zstd.compressBound(raw.length));
  const n = new zstd.CCtx().compress(dst, raw, level);
  return dst.subarray(0, n);
}

describe('codec', () => {
  it('round-trips every page kind with every codec', () => {
    for (const kind of [...PAGE_KINDS, 'mixed' as const]) {
      const raw = mixedPages(65536, 7, kind);
      for (const name of ['zstd', 'lz4', 'none'] as const) {
        const enc = new ChunkCompressor(name).compress(raw);
        assert.ok(enc.data.length <= raw.length, `${name} ${kind} never grows`);
        if (kind === 'random') assert.equal(enc.codec, CodecId.none, 'incompressible chunks go raw');
        if (kind === 'zero' && name !== 'none') assert.ok(enc.data.length < 300);
        assert.ok(decompressChunk(enc.codec, enc.data, raw.length).equals(raw), `${name} ${kind}`);
      }
    }
  });

  it('handles empty chunks and zstd levels', () => {
    const empty = new ChunkCompressor('zstd').compress(Buffer.alloc(0));
    assert.equal(decompressChunk(empty.codec, empty.data, 0).length, 0);
    const raw = mixedPages(65536, 3, 'text');
    for (const level of [-7, 1, 3, 19]) {
      const enc = new ChunkCompressor('zstd', level).compress(raw);
      assert.ok(decompressChunk(enc.codec, enc.data, raw.length).equals(raw));
    }
    rejects(() => new ChunkCompressor('zstd', 23), ErrorCode.InvalidFlag);
    rejects(() => new ChunkCompressor('zstd', 1.5), ErrorCode.InvalidFlag);
    rejects(() => parseCodecName('gzip'), ErrorCode.InvalidFlag);
  });

  it('rejects a zstd bomb: a frame that expands past the declared size', () => {
    const bomb = zstdFrame(Buffer.alloc(8 * 1024 * 1024));
    assert.ok(bomb.length < 1024);
    rejects(() => decompressChunk(CodecId.zstd, bomb, 65536));
    // Without the content size in the header the output buffer still bounds it.
    const cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.contentSizeFlag, 0);
    const dst = Buffer.alloc(zstd.compressBound(8 << 20));
    const n = cctx.compress2(dst, Buffer.alloc(8 << 20));
    const headerless = dst.subarray(0, n);
    assert.equal(zstd.getFrameContentSize(headerless), null);
    rejects(() => decompressChunk(CodecId.zstd, headerless, 65536));
    // and a good chunk decodes afterwards
    const ok = zstdFrame(Buffer.alloc(65536, 7));
    assert.equal(decompressChunk(CodecId.zstd, ok, 65536).length, 65536);
  });

  it('rejects short output, trailing bytes, garbage and unknown codecs', () => {
    const raw = mixedPages(65536, 9, 'text');
    const frame = zstdFrame(raw);
    rejects(() => decompressChunk(CodecId.zstd, frame, 65537));
    rejects(() => decompressChunk(CodecId.zstd, Buffer.concat([frame, Buffer.from([1, 2, 3])]), 65536));
    rejects(() => decompressChunk(CodecId.zstd, Buffer.concat([frame, frame]), 65536 * 2));
    rejects(() => decompressChunk(CodecId.zstd, frame.subarray(0, frame.length - 3), 65536));
    rejects(() => decompressChunk(CodecId.zstd, Buffer.from('not a zstd frame at all'), 100));
    rejects(() => decompressChunk(CodecId.none, raw, 100));
    rejects(() => decompressChunk(9, raw, raw.length));
    rejects(() => decompressChunk(CodecId.none, Buffer.alloc(10), MAX_CHUNK_BYTES + 1));
    rejects(() => decompressChunk(CodecId.none, Buffer.alloc(10), -1));
    // an encoded chunk far larger than its raw size
    rejects(() => decompressChunk(CodecId.zstd, Buffer.alloc(70_000), 1000));
  });

  it('rejects an lz4 block whose prepended size differs from the declared one, without allocating it', () => {
    const good = lz4.compressSync(Buffer.alloc(65536, 1));
    const bomb = Buffer.from(good);
    bomb.writeUInt32LE(0xfffffff0, 0);
    const t0 = Date.now();
    rejects(() => decompressChunk(CodecId.lz4, bomb, 65536));
    assert.ok(Date.now() - t0 < 100, 'rejected before decoding');
    rejects(() => decompressChunk(CodecId.lz4, Buffer.alloc(2), 0));
    const mangled = Buffer.from(good);
    mangled.fill(0xff, 4);
    rejects(() => decompressChunk(CodecId.lz4, mangled, 65536));
    assert.equal(decompressChunk(CodecId.lz4, good, 65536).length, 65536);
  });
});
