import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MANIFEST_VERSION,
  type ChunkRef,
  type ChunkStore,
  type Digest,
  type Manifest,
} from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { digestOf, MemoryChunkStore } from '../chunks/index.js';
import { CodecId } from '../transfer/codec.js';
import { mixedPages } from '../transfer/mixed-content.js';
import {
  decodeInlineChunks,
  decodeInlineState,
  encodeInlineState,
  MAX_INLINE_STATE_BYTES,
  splitInlineState,
  type InlineState,
} from './inline-state.js';

function hasCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    if (err instanceof GodwitError && err.code === code) return true;
    throw err;
  };
}

/** A manifest of one file per element of `files`, made of the given chunks in order. */
function manifestOf(files: readonly (readonly Buffer[])[]): Manifest {
  return {
    version: MANIFEST_VERSION,
    label: 'inline-test',
    createdAt: new Date(0).toISOString(),
    entries: [
      { type: 'dir', path: 'criu', mode: 0o755 },
      ...files.map((pieces, i) => {
        const chunks: ChunkRef[] = pieces.map((p) => ({ digest: digestOf(p), size: p.length }));
        const size = pieces.reduce((n, p) => n + p.length, 0);
        return { type: 'file' as const, path: `criu/f${i}.img`, mode: 0o600, size, chunks };
      }),
      { type: 'symlink', path: 'criu/link', target: 'f0.img' },
    ],
  };
}

/** A store holding `pieces`, counting the reads per digest. */
async function storeOf(
  pieces: readonly Buffer[],
): Promise<{ store: Pick<ChunkStore, 'get'>; gets: Digest[] }> {
  const mem = new MemoryChunkStore();
  for (const p of pieces) await mem.put(digestOf(p), p);
  const gets: Digest[] = [];
  return {
    gets,
    store: {
      get: (d) => {
        gets.push(d);
        return mem.get(d);
      },
    },
  };
}

// Deterministic content: compressible (text, repeat) and incompressible (random) chunks.
const text = mixedPages(8192, 1, 'text');
const repeat = mixedPages(4096, 2, 'repeat');
const random = mixedPages(4096, 3, 'random');

describe('inline state', () => {
  it('round-trips the manifest and the chunks not known to the destination', async () => {
    const manifest = manifestOf([[text, random], [repeat]]);
    const { store, gets } = await storeOf([text, repeat, random]);
    const known = new Set([digestOf(repeat)]);

    const enc = await encodeInlineState(manifest, known, store);
    assert.ok(enc);
    const { state } = enc;
    assert.deepEqual(
      state.chunks.map((c) => c.digest),
      [digestOf(text), digestOf(random)],
      'the unknown chunks, in manifest order',
    );
    assert.deepEqual(gets, [digestOf(text), digestOf(random)], 'known chunks are not even read');
    const byDigest = new Map(state.chunks.map((c) => [c.digest, c]));
    assert.equal(byDigest.get(digestOf(text))?.codec, CodecId.zstd);
    assert.equal(byDigest.get(digestOf(random))?.codec, CodecId.none, 'incompressible chunks go raw');
    assert.equal(byDigest.get(digestOf(text))?.size, text.length);
    assert.equal(byDigest.get(digestOf(random))?.size, random.length);

    // The manifest (hex digests, JSON) goes compressed.
    assert.equal(state.manifestCodec, CodecId.zstd);
    assert.equal(state.manifestSize, Buffer.byteLength(JSON.stringify(manifest)));
    assert.ok(
      state.manifest.length < ((state.manifestSize ?? 0) * 4) / 3,
      'smaller than the raw JSON in base64',
    );

    // It survives the trip through a JSON request body.
    const decoded = decodeInlineState(JSON.parse(JSON.stringify(state)) as InlineState);
    assert.deepEqual(decoded.manifest, manifest);
    assert.equal(decoded.chunks.size, 2);
    assert.ok(decoded.chunks.get(digestOf(text))?.equals(text));
    assert.ok(decoded.chunks.get(digestOf(random))?.equals(random));
    assert.equal(decoded.chunks.has(digestOf(repeat)), false);
    for (const [d, data] of decoded.chunks) assert.equal(digestOf(data), d);
  });

  it('encodes a chunk referenced several times once', async () => {
    const manifest = manifestOf([
      [text, text, repeat, text],
      [repeat, text],
    ]);
    const { store, gets } = await storeOf([text, repeat]);

    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    assert.deepEqual(
      enc.state.chunks.map((c) => c.digest),
      [digestOf(text), digestOf(repeat)],
    );
    assert.equal(gets.length, 2);
    assert.equal(enc.rawBytes, text.length + repeat.length);
    const decoded = decodeInlineState(enc.state);
    assert.equal(decoded.chunks.size, 2);
    assert.ok(decoded.chunks.get(digestOf(text))?.equals(text));
    assert.ok(decoded.chunks.get(digestOf(repeat))?.equals(repeat));
  });

  it('accounts raw bytes as the encoded chunks and wire bytes as about the JSON it adds', async () => {
    const manifest = manifestOf([[text, random], [repeat]]);
    const { store } = await storeOf([text, repeat, random]);

    const all = await encodeInlineState(manifest, new Set(), store);
    assert.ok(all);
    assert.equal(all.rawBytes, text.length + random.length + repeat.length);
    assert.equal(
      all.rawBytes,
      all.state.chunks.reduce((n, c) => n + c.size, 0),
    );
    const wireJson = Buffer.byteLength(JSON.stringify(all.state));
    const payload = all.state.manifest.length + all.state.chunks.reduce((n, c) => n + c.data.length, 0);
    assert.ok(all.wireBytes >= payload - 2, `wire ${all.wireBytes} counts the base64 payload ${payload}`);
    assert.ok(
      Math.abs(all.wireBytes - wireJson) <= 32 * (all.state.chunks.length + 1),
      `wire ${all.wireBytes} vs JSON ${wireJson}`,
    );
    assert.ok(all.wireBytes < all.rawBytes, 'compressible chunks shrink on the wire');

    const some = await encodeInlineState(manifest, new Set([digestOf(text)]), store);
    assert.ok(some);
    assert.equal(some.rawBytes, random.length + repeat.length);
    assert.ok(some.wireBytes < all.wireBytes);

    const none = await encodeInlineState(manifest, new Set([text, repeat, random].map(digestOf)), store);
    assert.ok(none);
    assert.deepEqual(none.state.chunks, []);
    assert.equal(none.rawBytes, 0);
    assert.ok(Math.abs(none.wireBytes - none.state.manifest.length) <= 2);
    assert.deepEqual(decodeInlineState(none.state).manifest, manifest);
  });

  it('gives up (undefined) when the encoded state would exceed the limit', async () => {
    const manifest = manifestOf([[text, random], [repeat]]);
    const { store } = await storeOf([text, repeat, random]);

    assert.equal(await encodeInlineState(manifest, new Set(), store, 100), undefined);
    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    assert.ok(enc.wireBytes < MAX_INLINE_STATE_BYTES);
    // The limit is inclusive, and one byte less is too little.
    assert.ok(await encodeInlineState(manifest, new Set(), store, enc.wireBytes));
    assert.equal(await encodeInlineState(manifest, new Set(), store, enc.wireBytes - 1), undefined);
    // A big chunk the destination lacks does not fit the default limit.
    const big = mixedPages(MAX_INLINE_STATE_BYTES, 4, 'random');
    const bigStore = await storeOf([big]);
    assert.equal(await encodeInlineState(manifestOf([[big]]), new Set(), bigStore.store), undefined);
  });

  it('also counts the manifest alone against the limit', async () => {
    const manifest = manifestOf([[text, random], [repeat]]);
    const { store } = await storeOf([text, repeat, random]);
    const known = new Set([text, repeat, random].map(digestOf));
    assert.equal(await encodeInlineState(manifest, known, store, 100), undefined);
  });

  it('rejects a corrupt manifest with ManifestInvalid', async () => {
    const manifest = manifestOf([[text]]);
    const { store } = await storeOf([text]);
    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    const corrupt: string[] = [
      '!!!!not base64 at all!!!!',
      enc.state.manifest.slice(0, Math.floor(enc.state.manifest.length / 2)),
      Buffer.from('{"version": 1, "label": ').toString('base64'),
      '',
    ];
    // A manifest sent raw (no codec) is read as JSON.
    const raw = Buffer.from(JSON.stringify(manifest)).toString('base64');
    assert.deepEqual(decodeInlineState({ manifest: raw, chunks: [] }).manifest, manifest);
    assert.throws(
      () => decodeInlineState({ ...enc.state, manifestSize: (enc.state.manifestSize ?? 0) + 1 }),
      hasCode(ErrorCode.ManifestInvalid),
      'a wrong declared size',
    );
    for (const m of corrupt) {
      assert.throws(
        () => decodeInlineState({ ...enc.state, manifest: m }),
        hasCode(ErrorCode.ManifestInvalid),
        JSON.stringify(m.slice(0, 20)),
      );
    }
  });

  it('rejects a corrupt chunk with DecompressFailed', async () => {
    const manifest = manifestOf([[text]]);
    const { store } = await storeOf([text]);
    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    const c = enc.state.chunks[0];
    assert.ok(c);
    const truncated = { ...c, data: c.data.slice(0, 8) };
    assert.throws(
      () => decodeInlineState({ ...enc.state, chunks: [truncated] }),
      hasCode(ErrorCode.DecompressFailed),
    );
    const wrongSize = { ...c, size: c.size + 1 };
    assert.throws(
      () => decodeInlineState({ ...enc.state, chunks: [wrongSize] }),
      hasCode(ErrorCode.DecompressFailed),
    );
  });

  it('splits a state into requests of one flight each, the manifest in the first', async () => {
    // 12 pages of random bytes: ~5.5 KB of base64 each, incompressible.
    const pages = Array.from({ length: 12 }, (_, i) => mixedPages(4096, 100 + i, 'random'));
    const manifest = manifestOf([pages]);
    const { store } = await storeOf(pages);
    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    const { head, parts } = splitInlineState(enc.state, 12 * 1024);
    assert.equal(head.manifest, enc.state.manifest);
    assert.equal(head.parts, parts.length);
    assert.ok(parts.length >= 5, `${parts.length} parts`);
    for (const r of [head, ...parts]) {
      const bytes = JSON.stringify(r).length;
      assert.ok(bytes <= 12 * 1024 + 512, `${bytes} bytes in one request`);
    }
    // Every chunk exactly once, and the parts' chunks decode into the whole.
    const all = [...head.chunks, ...parts.flatMap((p) => p.chunks)].map((c) => c.digest);
    assert.deepEqual(all.sort(), enc.state.chunks.map((c) => c.digest).sort());
    const chunks = decodeInlineState(head).chunks;
    for (const p of parts) decodeInlineChunks(p.chunks, chunks);
    for (const p of pages) assert.deepEqual(chunks.get(digestOf(p)), p);
  });

  it('leaves a state that fits in one request whole', async () => {
    const manifest = manifestOf([[text]]);
    const { store } = await storeOf([text]);
    const enc = await encodeInlineState(manifest, new Set(), store);
    assert.ok(enc);
    const { head, parts } = splitInlineState(enc.state);
    assert.deepEqual(head, enc.state);
    assert.equal(head.parts, undefined);
    assert.deepEqual(parts, []);
  });
});
