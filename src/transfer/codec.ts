/**
 * Chunk compression for the sync protocol: 'zstd' (zstd-napi, with a level), 'lz4'
 * (lz4-napi, block format with the raw size prepended) or 'none'. Every chunk travels with
 * the id of the codec actually used: a chunk that does not shrink goes as 'none'.
 *
 * Measured on this machine (Node 20.20, one thread, 64 KiB chunks of seeded pages from
 * mixed-content.ts, `npm run bench:transfer -- --codecs-only`, median of 3 over 64 MiB,
 * GB/s of raw bytes; a chunk that does not shrink is sent raw, which `decompress` includes):
 *
 *   mixed (20% zero, 15% repeated, 20% random, 20% text-like, 25% heap-like pages)
 *     zstd -1    compress 0.58  decompress 1.17  ratio 2.44
 *     zstd 1     compress 0.54  decompress 1.17  ratio 2.43
 *     zstd 3     compress 0.42  decompress 1.45  ratio 2.50
 *     lz4        compress 0.34  decompress 2.00  ratio 2.16
 *     deflate 1  compress 0.13  decompress 0.50  ratio 2.42   (node:zlib, for reference)
 *   compress GB/s per kind, zstd 1 vs lz4: zero 7.5 vs 9.9, repeated 5.6 vs 7.5, random 5.8 vs
 *   0.20 (zstd gives up on incompressible blocks early, lz4-napi's pure-Rust encoder does not),
 *   text 0.26 vs 0.24 (ratio 2.89 vs 1.89), heap 0.31 vs 0.26 (ratio 2.50 vs 1.87).
 * Sending a 256 MiB tree (bench-main.ts), wire bytes were 95 MB with zstd 1, 111 MB with lz4
 * and 235 MB raw: at 100 Mbit/s that is 7.6 s against 8.9 s and 18.8 s.
 *
 * Default: zstd level 1: faster than lz4-napi on mixed pages at a better ratio; only its
 * decompression is slower, and 1.2 GB/s is ten times a 1 Gbit/s link. Level 3 buys 3% ratio
 * for 20% speed; level -1 loses ratio on text. (DESIGN.md's 2.4 GB/s at ratio 5.9 was on 1 MiB
 * batches of more compressible pages; these synthetic text and heap pages are high-entropy.)
 *
 * `decompressChunk` never allocates more than the declared raw size, which the caller has
 * already bounded (≤ MAX_CHUNK_BYTES), and rejects any payload that does not decode to
 * exactly that size (bombs, truncation, trailing garbage).
 */
import zstd from 'zstd-napi/binding.js';
import lz4 from 'lz4-napi';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** Codec names accepted in options. */
export type CodecName = 'zstd' | 'lz4' | 'none';

/** Codec ids on the wire (the u8 in a CHUNK frame). */
export const CodecId = { none: 0, zstd: 1, lz4: 2 } as const;
export type CodecIdValue = (typeof CodecId)[keyof typeof CodecId];

export const CODEC_NAMES: readonly CodecName[] = ['zstd', 'lz4', 'none'];
export const DEFAULT_CODEC: CodecName = 'zstd';
export const DEFAULT_ZSTD_LEVEL = 1;
/** zstd levels accepted: the fast negative levels through 19 (20–22 need large windows). */
export const ZSTD_MIN_LEVEL = -7;
export const ZSTD_MAX_LEVEL = 19;

/** Largest chunk the protocol carries (matches the chunk store's MAX_CHUNK_SIZE). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;

/** Upper bound of an encoded chunk's size for a raw size of `n` (any codec). */
export function maxEncodedSize(n: number): number {
  return n + Math.ceil(n / 128) + 1024;
}

/** True when `v` is a codec id this version understands. */
export function isCodecId(v: number): v is CodecIdValue {
  return v === CodecId.none || v === CodecId.zstd || v === CodecId.lz4;
}

/** Throws InvalidArgument unless `name` is a codec name. */
export function parseCodecName(name: string): CodecName {
  if ((CODEC_NAMES as readonly string[]).includes(name)) return name as CodecName;
  throw new InvalidArgumentError(ErrorCode.InvalidFlag, `unknown codec ${JSON.stringify(name)}`, {
    hint: `use one of ${CODEC_NAMES.join(', ')}`,
  });
}

/** A chunk as it goes on the wire. `data` may be the raw buffer itself (codec none). */
export interface EncodedChunk {
  codec: CodecIdValue;
  data: Buffer;
}

/** Compresses chunks with one codec and level. Not thread-safe; calls are synchronous. */
export class ChunkCompressor {
  readonly codec: CodecName;
  readonly level: number;
  private readonly cctx: InstanceType<typeof zstd.CCtx> | undefined;
  private scratch: Buffer = Buffer.alloc(0);

  constructor(codec: CodecName = DEFAULT_CODEC, level?: number) {
    this.codec = parseCodecName(codec);
    this.level = codec === 'zstd' ? (level ?? DEFAULT_ZSTD_LEVEL) : 0;
    if (codec === 'zstd') {
      if (!Number.isInteger(this.level) || this.level < ZSTD_MIN_LEVEL || this.level > ZSTD_MAX_LEVEL) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `zstd level must be an integer in ${ZSTD_MIN_LEVEL}..${ZSTD_MAX_LEVEL}, not ${String(level)}`,
        );
      }
      this.cctx = new zstd.CCtx();
    }
  }

  /** The chunk encoded with this codec, or raw when that does not make it smaller. */
  compress(raw: Buffer): EncodedChunk {
    if (this.codec === 'none' || raw.length === 0) return { codec: CodecId.none, data: raw };
    if (this.codec === 'lz4') {
      const out = lz4.compressSync(raw);
      return out.length < raw.length ? { codec: CodecId.lz4, data: out } : { codec: CodecId.none, data: raw };
    }
    const bound = zstd.compressBound(raw.length);
    if (this.scratch.length < bound) this.scratch = Buffer.allocUnsafe(bound);
    const n = (this.cctx as InstanceType<typeof zstd.CCtx>).compress(this.scratch, raw, this.level);
    if (n >= raw.length) return { codec: CodecId.none, data: raw };
    const out = Buffer.allocUnsafe(n);
    this.scratch.copy(out, 0, 0, n);
    return { codec: CodecId.zstd, data: out };
  }
}

let dctx: InstanceType<typeof zstd.DCtx> | undefined;

function bad(message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.DecompressFailed, message, cause === undefined ? {} : { cause });
}

/**
 * Decodes a chunk to exactly `rawSize` bytes. Throws DecompressFailed for an unknown codec,
 * a size over `maxRawSize`, or a payload that does not decode to exactly `rawSize` bytes.
 * Allocates at most `rawSize` bytes besides the codec's fixed state.
 */
export function decompressChunk(
  codec: number,
  data: Buffer,
  rawSize: number,
  maxRawSize: number = MAX_CHUNK_BYTES,
): Buffer {
  if (!Number.isSafeInteger(rawSize) || rawSize < 0 || rawSize > maxRawSize) {
    throw bad(`declared chunk size ${rawSize} is outside 0..${maxRawSize}`);
  }
  if (data.length > maxEncodedSize(rawSize)) {
    throw bad(`encoded chunk of ${data.length} bytes is too large for ${rawSize} raw bytes`);
  }
  switch (codec) {
    case CodecId.none:
      if (data.length !== rawSize) throw bad(`raw chunk has ${data.length} bytes, declared ${rawSize}`);
      return data;
    case CodecId.zstd: {
      let declared: number | null;
      try {
        declared = zstd.getFrameContentSize(data);
        if (zstd.findFrameCompressedSize(data) !== data.length)
          throw new Error('trailing bytes after the frame');
      } catch (err) {
        throw bad('malformed zstd frame', err);
      }
      if (declared !== null && declared !== rawSize) {
        throw bad(`zstd frame declares ${declared} bytes, the chunk ${rawSize}`);
      }
      const out = Buffer.allocUnsafe(rawSize);
      let n: number;
      try {
        dctx ??= new zstd.DCtx();
        n = dctx.decompress(out, data);
      } catch (err) {
        // A failed call may leave the context mid-frame; start the next one clean.
        dctx = undefined;
        throw bad('zstd frame does not decode within the declared size', err);
      }
      if (n !== rawSize) throw bad(`zstd frame decodes to ${n} bytes, declared ${rawSize}`);
      return out;
    }
    case CodecId.lz4: {
      // lz4-napi allocates whatever the prepended size says: check it against ours first.
      if (data.length < 4 || data.readUInt32LE(0) !== rawSize) {
        throw bad(`lz4 block does not declare the chunk size ${rawSize}`);
      }
      let out: Buffer;
      try {
        out = lz4.uncompressSync(data);
      } catch (err) {
        throw bad('malformed lz4 block', err);
      }
      if (out.length !== rawSize) throw bad(`lz4 block decodes to ${out.length} bytes, declared ${rawSize}`);
      return out;
    }
    default:
      throw bad(`unknown codec id ${codec}`);
  }
}
