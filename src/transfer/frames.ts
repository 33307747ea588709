/**
 * The sync protocol's framing. A frame is a u32 big-endian length (of type + payload),
 * a u8 type and the payload:
 *
 *   HELLO     JSON HelloMessage                     sender → receiver, first on every connection
 *   HELLO_OK  JSON HelloOkMessage                   receiver → sender
 *   ERROR     JSON {code, message, category?}       either way, then the sender of it closes
 *   OFFER     manifest JSON (≤ maxOfferBytes)       sender → receiver, on stream 0
 *   WANT      u8 flags (1 = last), N × 32-byte sha256 digests the receiver lacks
 *   CHUNK     32-byte digest, u8 codec, u32 BE raw size, encoded bytes
 *   END       JSON EndMessage                       sender: no more chunks on this connection
 *   DONE      JSON DoneMessage                      receiver's answer to END
 *   PING/PONG up to 64 opaque bytes, echoed
 *
 * `FrameDecoder` is incremental: it checks a frame's type and length against the limits as
 * soon as the 5-byte header is in, before buffering the payload, so it holds at most one
 * frame's bytes, and any malformed input ends in a typed error (TransferProtocol,
 * TransferTooLarge, ManifestInvalid), never a hang or an allocation past the limits.
 */
import { createHash } from 'node:crypto';
import type { Digest, Manifest } from '../core/chunks.js';
import { GodwitError } from '../core/errors.js';
import { isDigest, isManifestDelta, parseManifest } from '../chunks/index.js';
import {
  ChunkCompressor,
  decompressChunk,
  isCodecId,
  maxEncodedSize,
  MAX_CHUNK_BYTES,
  type CodecIdValue,
} from './codec.js';
import { protocolError, tooLargeError, type WireError } from './errors.js';
import {
  parseDone,
  parseEnd,
  parseHello,
  parseHelloOk,
  parseWireError,
  type DoneMessage,
  type EndMessage,
  type HelloMessage,
  type HelloOkMessage,
} from './messages.js';

export enum FrameType {
  Hello = 1,
  HelloOk = 2,
  Error = 3,
  Offer = 4,
  Want = 5,
  Chunk = 6,
  End = 7,
  Done = 8,
  Ping = 9,
  Pong = 10,
}

/** Length prefix plus type byte. */
export const FRAME_HEADER_BYTES = 5;
/** Digest, codec and raw size in front of a chunk's bytes. */
export const CHUNK_HEADER_BYTES = 32 + 1 + 4;
export const DIGEST_BYTES = 32;
/** Largest JSON payload of a control frame (HELLO, HELLO_OK, ERROR, END, DONE). */
export const MAX_CONTROL_BYTES = 64 * 1024;
export const MAX_PING_BYTES = 64;
export const DEFAULT_MAX_OFFER_BYTES = 64 * 1024 * 1024;
/** Digests per WANT frame (2 MiB of payload). */
export const MAX_WANT_DIGESTS = 65_536;

/** Sizes a decoder accepts; each defaults to the protocol's ceiling. */
export interface FrameLimits {
  maxOfferBytes: number;
  maxChunkSize: number;
  maxWantDigests: number;
}

export const DEFAULT_FRAME_LIMITS: Readonly<FrameLimits> = Object.freeze({
  maxOfferBytes: DEFAULT_MAX_OFFER_BYTES,
  maxChunkSize: MAX_CHUNK_BYTES,
  maxWantDigests: MAX_WANT_DIGESTS,
});

/** A decoded, validated frame. */
export type Frame =
  | { type: FrameType.Hello; hello: HelloMessage }
  | { type: FrameType.HelloOk; ok: HelloOkMessage }
  | { type: FrameType.Error; error: WireError }
  | {
      type: FrameType.Offer;
      /** The offered manifest, or undefined when the offer is a delta against a base. */
      manifest: Manifest | undefined;
      /** A manifest delta (unvalidated JSON naming its `base`), expanded by the receiver. */
      delta: { base: string } | undefined;
      offerDigest: string;
      bytes: number;
    }
  | { type: FrameType.Want; last: boolean; digests: Digest[] }
  | { type: FrameType.Chunk; digest: Digest; codec: CodecIdValue; rawSize: number; data: Buffer }
  | { type: FrameType.End; end: EndMessage }
  | { type: FrameType.Done; done: DoneMessage }
  | { type: FrameType.Ping; payload: Buffer }
  | { type: FrameType.Pong; payload: Buffer };

/** Frame types each side may receive. */
export const RECEIVER_ACCEPTS: ReadonlySet<FrameType> = new Set([
  FrameType.Hello,
  FrameType.Error,
  FrameType.Offer,
  FrameType.Chunk,
  FrameType.End,
  FrameType.Ping,
  FrameType.Pong,
]);
/** What may open each direction: HELLO from a sender; HELLO_OK or ERROR from a receiver. */
export const RECEIVER_FIRST: ReadonlySet<FrameType> = new Set([FrameType.Hello]);
export const SENDER_FIRST: ReadonlySet<FrameType> = new Set([FrameType.HelloOk, FrameType.Error]);
export const SENDER_ACCEPTS: ReadonlySet<FrameType> = new Set([
  FrameType.HelloOk,
  FrameType.Error,
  FrameType.Want,
  FrameType.Done,
  FrameType.Ping,
  FrameType.Pong,
]);

/** Largest payload of a frame type under `limits`, and the smallest. */
export function payloadBounds(type: FrameType, limits: FrameLimits): { min: number; max: number } {
  switch (type) {
    case FrameType.Offer:
      return { min: 2, max: limits.maxOfferBytes };
    case FrameType.Want:
      return { min: 1, max: 1 + DIGEST_BYTES * limits.maxWantDigests };
    case FrameType.Chunk:
      return { min: CHUNK_HEADER_BYTES, max: CHUNK_HEADER_BYTES + maxEncodedSize(limits.maxChunkSize) };
    case FrameType.Ping:
    case FrameType.Pong:
      return { min: 0, max: MAX_PING_BYTES };
    default:
      return { min: 2, max: MAX_CONTROL_BYTES };
  }
}

// ---- encoding ----

/** One frame of `type` around `payload`. */
export function encodeFrame(type: FrameType, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length + 1, 0);
  out.writeUInt8(type, 4);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

export function encodeJsonFrame(
  type: FrameType.Hello | FrameType.HelloOk | FrameType.Error | FrameType.End | FrameType.Done,
  body: HelloMessage | HelloOkMessage | WireError | EndMessage | DoneMessage,
): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(body)));
}

/**
 * The OFFER frame for a manifest already serialized to JSON bytes. Payload: u8 codec,
 * u32 raw length, the encoded JSON. A manifest of page-sized chunks is megabytes of JSON that
 * compresses about tenfold, and on a return trip it is most of what crosses the link.
 */
export function encodeOffer(manifestJson: Buffer): Buffer {
  const enc = offerCompressor.compress(manifestJson);
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(enc.codec, 0);
  head.writeUInt32BE(manifestJson.length, 1);
  return encodeFrame(FrameType.Offer, Buffer.concat([head, enc.data]));
}

const offerCompressor = new ChunkCompressor('zstd', 3);

/** The JSON of an OFFER payload, decoded within `maxRawBytes`. */
function decodeOffer(payload: Buffer, maxRawBytes: number): Buffer {
  if (payload.length < 5) throw protocolError('OFFER is shorter than its header');
  const codec = payload.readUInt8(0);
  const raw = payload.readUInt32BE(1);
  try {
    return decompressChunk(codec, payload.subarray(5), raw, maxRawBytes);
  } catch (err) {
    throw protocolError(`OFFER does not decode: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function digestBytes(d: Digest): Buffer {
  if (!isDigest(d)) throw protocolError(`not a digest: ${String(d).slice(0, 80)}`);
  return Buffer.from(d.slice(7), 'hex');
}

/** WANT frames listing `digests`, at most `perFrame` each; the last one is flagged (one frame when empty). */
export function encodeWant(digests: readonly Digest[], perFrame: number = MAX_WANT_DIGESTS): Buffer[] {
  const frames: Buffer[] = [];
  for (let i = 0; i === 0 || i < digests.length; i += perFrame) {
    const part = digests.slice(i, i + perFrame);
    const payload = Buffer.allocUnsafe(1 + DIGEST_BYTES * part.length);
    payload.writeUInt8(i + perFrame >= digests.length ? 1 : 0, 0);
    part.forEach((d, j) => digestBytes(d).copy(payload, 1 + DIGEST_BYTES * j));
    frames.push(encodeFrame(FrameType.Want, payload));
  }
  return frames;
}

/** A CHUNK frame, built in one buffer (header and encoded bytes). */
export function encodeChunk(digest: Digest, codec: CodecIdValue, rawSize: number, data: Buffer): Buffer {
  const len = 1 + CHUNK_HEADER_BYTES + data.length;
  const out = Buffer.allocUnsafe(4 + len);
  out.writeUInt32BE(len, 0);
  out.writeUInt8(FrameType.Chunk, 4);
  digestBytes(digest).copy(out, FRAME_HEADER_BYTES);
  out.writeUInt8(codec, FRAME_HEADER_BYTES + 32);
  out.writeUInt32BE(rawSize, FRAME_HEADER_BYTES + 33);
  data.copy(out, FRAME_HEADER_BYTES + CHUNK_HEADER_BYTES);
  return out;
}

// ---- decoding ----

function parseJson(payload: Buffer, what: string): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw protocolError(`${what} payload is not JSON`, { cause: err });
  }
}

/** Decodes one frame's payload; the length was already checked against the type's bounds. */
export function decodePayload(type: FrameType, payload: Buffer, limits: FrameLimits): Frame {
  switch (type) {
    case FrameType.Hello:
      return { type, hello: parseHello(parseJson(payload, 'HELLO')) };
    case FrameType.HelloOk:
      return { type, ok: parseHelloOk(parseJson(payload, 'HELLO_OK')) };
    case FrameType.Error:
      return { type, error: parseWireError(parseJson(payload, 'ERROR')) };
    case FrameType.End:
      return { type, end: parseEnd(parseJson(payload, 'END')) };
    case FrameType.Done:
      return { type, done: parseDone(parseJson(payload, 'DONE')) };
    case FrameType.Offer: {
      const json = decodeOffer(payload, limits.maxOfferBytes);
      const value = parseJson(json, 'OFFER');
      const offerDigest = createHash('sha256').update(json).digest('hex');
      if (isManifestDelta(value)) {
        return { type, manifest: undefined, delta: value, offerDigest, bytes: payload.length };
      }
      const manifest = parseManifest(value, { maxChunkSize: limits.maxChunkSize });
      return { type, manifest, delta: undefined, offerDigest, bytes: payload.length };
    }
    case FrameType.Want: {
      const flags = payload.readUInt8(0);
      if ((flags & ~1) !== 0) throw protocolError(`WANT has unknown flags ${flags}`);
      if ((payload.length - 1) % DIGEST_BYTES !== 0)
        throw protocolError('WANT payload is not a list of digests');
      const digests: Digest[] = [];
      for (let o = 1; o < payload.length; o += DIGEST_BYTES) {
        digests.push(`sha256:${payload.toString('hex', o, o + DIGEST_BYTES)}`);
      }
      return { type, last: (flags & 1) === 1, digests };
    }
    case FrameType.Chunk: {
      const digest = `sha256:${payload.toString('hex', 0, 32)}`;
      const codec = payload.readUInt8(32);
      const rawSize = payload.readUInt32BE(33);
      if (!isCodecId(codec)) throw protocolError(`CHUNK ${digest} has unknown codec ${codec}`);
      if (rawSize > limits.maxChunkSize) {
        throw tooLargeError(
          `CHUNK ${digest} declares ${rawSize} bytes, over the limit ${limits.maxChunkSize}`,
        );
      }
      const data = payload.subarray(CHUNK_HEADER_BYTES);
      if (data.length > maxEncodedSize(rawSize)) {
        throw tooLargeError(`CHUNK ${digest} carries ${data.length} bytes for ${rawSize} raw bytes`);
      }
      return { type, digest, codec, rawSize, data };
    }
    case FrameType.Ping:
    case FrameType.Pong:
      return { type, payload: Buffer.from(payload) };
  }
}

/**
 * Incremental frame decoder. `push` returns the frames completed by the bytes given; after
 * it throws, the decoder stays failed. Holds at most one frame's bytes plus a header.
 */
export class FrameDecoder {
  private readonly accept: ReadonlySet<FrameType>;
  private readonly limits: FrameLimits;
  private pieces: Buffer[] = [];
  private head = 0;
  private available = 0;
  private pending: { type: FrameType; length: number } | undefined;
  private failure: GodwitError | undefined;
  private first: ReadonlySet<FrameType> | undefined;

  /**
   * `accept`: the frame types this side may receive; `first`: the types the first frame may
   * have (HELLO for a receiver), so nothing large is buffered before the handshake.
   */
  constructor(
    accept: ReadonlySet<FrameType>,
    limits: Partial<FrameLimits> = {},
    first?: ReadonlySet<FrameType>,
  ) {
    this.accept = accept;
    this.limits = { ...DEFAULT_FRAME_LIMITS, ...limits };
    this.first = first;
  }

  /** Bytes held for frames not yet complete. */
  get bufferedBytes(): number {
    return this.available;
  }

  /** Feeds bytes from the peer; returns completed frames in order. */
  push(data: Buffer): Frame[] {
    if (this.failure) throw this.failure;
    try {
      if (data.length > 0) {
        this.pieces.push(data);
        this.available += data.length;
      }
      const out: Frame[] = [];
      for (;;) {
        if (this.pending === undefined) {
          if (this.available < FRAME_HEADER_BYTES) break;
          const header = this.take(FRAME_HEADER_BYTES);
          const length = header.readUInt32BE(0) - 1;
          const type = header.readUInt8(4) as FrameType;
          if (length < 0) throw protocolError('frame length 0 (no type byte)');
          if (!this.accept.has(type)) throw protocolError(`unexpected frame type ${type}`);
          if (this.first !== undefined) {
            if (!this.first.has(type)) throw protocolError(`${FrameType[type]} frame before the handshake`);
            this.first = undefined;
          }
          const { min, max } = payloadBounds(type, this.limits);
          if (length > max) {
            throw tooLargeError(
              `${FrameType[type] ?? type} frame of ${length} bytes exceeds the limit ${max}`,
            );
          }
          if (length < min)
            throw protocolError(`${FrameType[type] ?? type} frame of ${length} bytes is too short`);
          this.pending = { type, length };
        }
        if (this.available < this.pending.length) break;
        const { type, length } = this.pending;
        this.pending = undefined;
        out.push(decodePayload(type, this.take(length), this.limits));
      }
      return out;
    } catch (err) {
      this.failure =
        err instanceof GodwitError ? err : protocolError('undecodable frame', { cause: err as unknown });
      this.pieces = [];
      this.available = 0;
      throw this.failure;
    }
  }

  /** The peer finished sending; throws TransferProtocol when it stopped inside a frame. */
  finish(): void {
    if (this.failure) throw this.failure;
    if (this.available > 0 || this.pending !== undefined) {
      const what = this.pending
        ? `${FrameType[this.pending.type] ?? this.pending.type} frame`
        : 'frame header';
      this.failure = protocolError(`connection ended inside a ${what} (${this.available} bytes buffered)`);
      throw this.failure;
    }
  }

  /** Removes `n ≤ available` bytes; a view when they lie in one piece, else one copy. */
  private take(n: number): Buffer {
    this.available -= n;
    const first = this.pieces[0];
    if (n === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.pieces.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const piece = this.pieces[0] as Buffer;
      const m = Math.min(n - filled, piece.length - this.head);
      piece.copy(out, filled, this.head, this.head + m);
      filled += m;
      this.head += m;
      if (this.head === piece.length) {
        this.pieces.shift();
        this.head = 0;
      }
    }
    return out;
  }
}
