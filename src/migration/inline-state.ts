/**
 * A small final state sent inside the restore request instead of over a transfer session: the
 * manifest and the chunks the destination lacks, compressed. A hybrid final phase moves no
 * memory, so what is left (CRIU's images but the lazy pages, the root filesystem changes) is a
 * few hundred KB of which a few tens are new; sending it with the request saves the transfer
 * protocol's round trips (connect, HELLO, OFFER/WANT, END/DONE: about 4 × RTT while stopped).
 * It is still content-addressed state: the receiver verifies every chunk by its digest and
 * records the session as if it had crossed the wire.
 */
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { manifestDigests } from '../chunks/index.js';
import { ChunkCompressor, CodecId, decompressChunk } from '../transfer/codec.js';

/** The wire form (inside the restore request's JSON body). */
export interface InlineState {
  /**
   * The manifest (or a delta against a session the receiver completed): JSON, compressed with
   * `manifestCodec` (absent: raw), base64.
   */
  manifest: string;
  /** The codec of `manifest` (transfer/codec.ts CodecId) and its size in bytes before it. */
  manifestCodec?: number;
  manifestSize?: number;
  chunks: InlineChunk[];
  /**
   * How many more parts of this state come in requests of their own (`splitInlineState`): the
   * receiver waits for their chunks before it takes the state. Absent: none.
   */
  parts?: number;
}

/** One chunk of an inline state: compressed with `codec` (transfer/codec.ts), base64. */
export interface InlineChunk {
  digest: string;
  codec: number;
  size: number;
  data: string;
}

/** A part of an inline state sent apart from the restore request: more of its chunks. */
export interface InlineStatePart {
  chunks: InlineChunk[];
}

/**
 * What a request's body may carry and still arrive in one flight of a TCP connection whose
 * congestion window restarted after idle: 10 segments (RFC 6928) of 1448 bytes, less the HTTP
 * headers and the request's other fields.
 */
export const ONE_FLIGHT_BODY_BYTES = 12 * 1024;

/**
 * Splits `state` so that each request carries at most about `maxBytes` (of its base64 text): the
 * manifest and the chunks that fit with it stay in `head` (its `parts` says how many follow);
 * the other chunks go in `parts`, each sent in a request of its own, at the same time, on
 * connections of their own. At 1 GiB the restore request's state is ~18.7 KB, two flights after
 * idle: 20 ms more of the edge link, while the container is stopped. A chunk larger than
 * `maxBytes` gets a part of its own.
 */
export function splitInlineState(
  state: InlineState,
  maxBytes = ONE_FLIGHT_BODY_BYTES,
): { head: InlineState; parts: InlineStatePart[] } {
  const cost = (c: InlineChunk): number => c.data.length + c.digest.length + 48;
  let headBytes = state.manifest.length;
  const head: InlineChunk[] = [];
  const parts: InlineStatePart[] = [];
  let part: InlineChunk[] = [];
  let partBytes = 0;
  for (const c of state.chunks) {
    if (parts.length === 0 && part.length === 0 && headBytes + cost(c) <= maxBytes) {
      head.push(c);
      headBytes += cost(c);
      continue;
    }
    if (part.length > 0 && partBytes + cost(c) > maxBytes) {
      parts.push({ chunks: part });
      part = [];
      partBytes = 0;
    }
    part.push(c);
    partBytes += cost(c);
  }
  if (part.length > 0) parts.push({ chunks: part });
  const first: InlineState = { ...state, chunks: head };
  delete first.parts;
  if (parts.length > 0) first.parts = parts.length;
  return { head: first, parts };
}

/** Largest manifest an inline state may expand to (the request limit's order of magnitude). */
export const MAX_INLINE_MANIFEST_BYTES = 16 * 1024 * 1024;

/** Encoded state larger than this goes over a transfer session instead (the request limit is 1 MiB). */
export const MAX_INLINE_STATE_BYTES = 640 * 1024;

/**
 * The inline form of `manifest` with every chunk not in `known` (what the destination holds
 * for certain: the last round's chunks), or undefined when it would be larger than the limit.
 */
export async function encodeInlineState(
  manifest: Manifest,
  known: ReadonlySet<Digest> | ((d: Digest) => boolean),
  store: Pick<ChunkStore, 'get'>,
  limit = MAX_INLINE_STATE_BYTES,
): Promise<{ state: InlineState; rawBytes: number; wireBytes: number } | undefined> {
  const compressor = new ChunkCompressor('zstd', 1);
  const json = Buffer.from(JSON.stringify(manifest));
  // Compressed: the small CRIU images the manifest carries inline and its hex digests are
  // ~70 % of a 64 MiB container's restore request (~33 KB raw), which then needs three flights
  // of a congestion window restarted after idle (10 segments) instead of one.
  const packed = manifestCompressor.compress(json);
  const manifestB64 = packed.data.toString('base64');
  let wire = manifestB64.length;
  if (wire > limit) return undefined;
  let raw = 0;
  const chunks: InlineState['chunks'] = [];
  const isKnown = typeof known === 'function' ? known : (d: Digest): boolean => known.has(d);
  for (const d of new Set(manifestDigests(manifest))) {
    if (isKnown(d)) continue;
    const data = await store.get(d);
    const enc = compressor.compress(data);
    const b64 = enc.data.toString('base64');
    wire += b64.length + d.length + 32;
    raw += data.length;
    if (wire > limit) return undefined;
    chunks.push({ digest: d, codec: enc.codec, size: data.length, data: b64 });
  }
  const state: InlineState = {
    manifest: manifestB64,
    ...(packed.codec !== CodecId.none ? { manifestCodec: packed.codec, manifestSize: json.length } : {}),
    chunks,
  };
  return { state, rawBytes: raw, wireBytes: wire };
}

/** The manifest's compressor: a higher level than the chunks' (it is small; ratio is what counts). */
const manifestCompressor = new ChunkCompressor('zstd', 9);

/**
 * Decodes an inline state: the manifest or delta (unchecked JSON: the receiver parses or expands
 * it) and the chunks.
 */
export function decodeInlineState(s: InlineState): { manifest: unknown; chunks: Map<Digest, Buffer> } {
  let manifest: unknown;
  try {
    const packed = Buffer.from(s.manifest, 'base64');
    const json =
      s.manifestCodec === undefined
        ? packed
        : decompressChunk(s.manifestCodec, packed, s.manifestSize ?? -1, MAX_INLINE_MANIFEST_BYTES);
    manifest = JSON.parse(json.toString('utf8'));
  } catch {
    throw new InvalidArgumentError(ErrorCode.ManifestInvalid, 'the inline state has no valid manifest');
  }
  return { manifest, chunks: decodeInlineChunks(s.chunks) };
}

/** The chunks of an inline state or part, decompressed (unverified: the store checks digests). */
export function decodeInlineChunks(
  list: readonly InlineChunk[],
  into = new Map<Digest, Buffer>(),
): Map<Digest, Buffer> {
  for (const c of list) into.set(c.digest, decompressChunk(c.codec, Buffer.from(c.data, 'base64'), c.size));
  return into;
}
