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
import { ChunkCompressor, decompressChunk } from '../transfer/codec.js';

/** The wire form (inside the restore request's JSON body). */
export interface InlineState {
  /** The manifest (or a delta against a session the receiver completed), JSON, base64. */
  manifest: string;
  chunks: { digest: string; codec: number; size: number; data: string }[];
}

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
  let wire = Math.ceil((json.length * 4) / 3);
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
  return { state: { manifest: json.toString('base64'), chunks }, rawBytes: raw, wireBytes: wire };
}

/**
 * Decodes an inline state: the manifest or delta (unchecked JSON: the receiver parses or expands
 * it) and the chunks.
 */
export function decodeInlineState(s: InlineState): { manifest: unknown; chunks: Map<Digest, Buffer> } {
  let manifest: unknown;
  try {
    manifest = JSON.parse(Buffer.from(s.manifest, 'base64').toString('utf8'));
  } catch {
    throw new InvalidArgumentError(ErrorCode.ManifestInvalid, 'the inline state has no valid manifest');
  }
  const chunks = new Map<Digest, Buffer>();
  for (const c of s.chunks) {
    chunks.set(c.digest, decompressChunk(c.codec, Buffer.from(c.data, 'base64'), c.size));
  }
  return { manifest, chunks };
}
