import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, readFile, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MANIFEST_VERSION, type Manifest } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { FsChunkStore } from './fs-chunk-store.js';
import { digestOf } from './hash.js';

function chunk(text: string): { digest: string; data: Buffer } {
  const data = Buffer.from(text.repeat(100));
  return { digest: digestOf(data), data };
}

function manifestOf(...chunks: { digest: string; data: Buffer }[]): Manifest {
  return {
    version: MANIFEST_VERSION,
    label: 'test',
    createdAt: new Date(0).toISOString(),
    entries: chunks.map((c, i) => ({
      type: 'file' as const,
      path: `f${i}`,
      mode: 0o644,
      size: c.data.length,
      chunks: [{ digest: c.digest, size: c.data.length }],
    })),
  };
}

function code(expected: string): (err: unknown) => boolean {
  return (err) => err instanceof GodwitError && err.code === expected;
}

describe('FsChunkStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-fsstore-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lays chunks out as blobs/sha256/<2 hex>/<hex>, read-only, and retentions as JSON', async () => {
    const store = await FsChunkStore.open(dir);
    const c = chunk('layout');
    await store.put(c.digest, c.data);
    const hex = c.digest.slice(7);
    const path = join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex);
    assert.equal(store.blobPath(c.digest), path);
    assert.deepEqual(await readFile(path), c.data);
    assert.equal((await stat(path)).mode & 0o777, 0o400);
    await store.retain('checkpoint:web', manifestOf(c, c));
    const record = JSON.parse(await readFile(join(dir, 'retained', 'checkpoint:web.json'), 'utf8')) as {
      digests: string[];
      label: string;
    };
    assert.deepEqual(record.digests, [c.digest]);
    assert.equal(record.label, 'test');
    assert.deepEqual(await store.retentions(), ['checkpoint:web']);
    assert.deepEqual(await readdir(join(dir, 'ingest')), []);
  });

  it('sees chunks another instance wrote after its cache was filled', async () => {
    const a = await FsChunkStore.open(dir);
    const b = await FsChunkStore.open(dir);
    const c = chunk('shared');
    assert.deepEqual(await b.missing([c.digest]), [c.digest]);
    await a.put(c.digest, c.data);
    assert.deepEqual(await b.missing([c.digest]), []);
    assert.equal(await b.has(c.digest), true);
    assert.deepEqual(await b.get(c.digest), c.data);
  });

  it('get of a chunk removed behind its back fails with ChunkNotFound and forgets it', async () => {
    const store = await FsChunkStore.open(dir);
    const c = chunk('gone');
    await store.put(c.digest, c.data);
    await unlink(store.blobPath(c.digest));
    await assert.rejects(store.get(c.digest), code(ErrorCode.ChunkNotFound));
    assert.equal(await store.has(c.digest), false);
    await store.put(c.digest, c.data);
    assert.deepEqual(await store.get(c.digest), c.data);
  });

  it('readInto reads a chunk into a buffer at an offset, and refuses a missing or short one', async () => {
    const plain = await FsChunkStore.open(dir);
    const verifying = await FsChunkStore.open(dir, { verify: true });
    const c = chunk('into');
    await plain.put(c.digest, c.data);
    const out = Buffer.alloc(c.data.length + 10, 0xee);
    await plain.readInto(c.digest, out, 5, c.data.length);
    assert.deepEqual(out.subarray(5, 5 + c.data.length), c.data);
    assert.equal(out[4], 0xee);
    assert.equal(out[5 + c.data.length], 0xee, 'nothing written past the chunk');
    await assert.rejects(
      plain.readInto(c.digest, out, 0, c.data.length + 1),
      code(ErrorCode.ChunkStoreCorrupt),
    );
    // Corrupted behind its back: only a verifying store notices, and drops it.
    const path = plain.blobPath(c.digest);
    await chmod(path, 0o600);
    await writeFile(path, Buffer.from('x'.repeat(c.data.length)));
    await assert.rejects(
      verifying.readInto(c.digest, out, 0, c.data.length),
      code(ErrorCode.ChunkStoreCorrupt),
    );
    assert.deepEqual(await verifying.missing([c.digest]), [c.digest]);
    await assert.rejects(plain.readInto(c.digest, out, 0, c.data.length), code(ErrorCode.ChunkNotFound));
  });

  it('verify: true detects and drops a corrupted chunk; the default does not re-hash', async () => {
    const plain = await FsChunkStore.open(dir);
    const verifying = await FsChunkStore.open(dir, { verify: true });
    const c = chunk('corrupt');
    await plain.put(c.digest, c.data);
    const path = plain.blobPath(c.digest);
    await chmod(path, 0o600);
    await writeFile(path, Buffer.from('x'.repeat(c.data.length)));
    assert.equal((await plain.get(c.digest)).toString(), 'x'.repeat(c.data.length));
    await assert.rejects(verifying.get(c.digest), code(ErrorCode.ChunkStoreCorrupt));
    assert.deepEqual(await verifying.missing([c.digest]), [c.digest], 'the bad copy is gone');
    await verifying.put(c.digest, c.data);
    assert.deepEqual(await verifying.get(c.digest), c.data);
  });

  it('gc honours retentions written by another instance', async () => {
    const a = await FsChunkStore.open(dir);
    const b = await FsChunkStore.open(dir);
    const kept = chunk('kept');
    const dropped = chunk('dropped');
    await a.put(kept.digest, kept.data);
    await a.put(dropped.digest, dropped.data);
    await b.retain('b', manifestOf(kept));
    assert.deepEqual(await a.gc(), { chunks: 1, bytes: dropped.data.length });
    assert.deepEqual(await a.missing([kept.digest, dropped.digest]), [dropped.digest]);
  });

  it('gc refuses to run while a retention record is unreadable', async () => {
    const store = await FsChunkStore.open(dir);
    const c = chunk('precious');
    await store.put(c.digest, c.data);
    await writeFile(join(dir, 'retained', 'broken.json'), '{"version":1,"digests":["sha256:zz"]}');
    await assert.rejects(store.gc(), code(ErrorCode.ChunkStoreCorrupt));
    assert.equal(await store.has(c.digest), true);
    await writeFile(join(dir, 'retained', 'broken.json'), 'not json');
    await assert.rejects(store.gc(), code(ErrorCode.ChunkStoreCorrupt));
    await store.release('broken');
    assert.deepEqual(await store.gc(), { chunks: 1, bytes: c.data.length });
  });

  it('gc removes stale ingest files and keeps other writers fresh ones', async () => {
    const store = await FsChunkStore.open(dir, { ingestStaleMs: 60_000 });
    const ingest = join(dir, 'ingest');
    await writeFile(join(ingest, 'other-1'), 'fresh partial write');
    await writeFile(join(ingest, 'other-2'), 'abandoned');
    const old = new Date(Date.now() - 3_600_000);
    await utimes(join(ingest, 'other-2'), old, old);
    await store.gc();
    assert.deepEqual(await readdir(ingest), ['other-1']);
  });

  it('gcGraceMs keeps recently written unreferenced chunks', async () => {
    let now = Date.now();
    const clock: Clock = { now: () => now, monotonic: () => now, sleep: async () => {} };
    const store = await FsChunkStore.open(dir, { gcGraceMs: 60_000, clock });
    const c = chunk('young');
    await store.put(c.digest, c.data);
    assert.deepEqual(await store.gc(), { chunks: 0, bytes: 0 });
    now += 120_000;
    assert.deepEqual(await store.gc(), { chunks: 1, bytes: c.data.length });
  });

  it('stays correct when its digest cache overflows', async () => {
    const store = await FsChunkStore.open(dir, { cacheEntries: 2 });
    const cs = ['a', 'b', 'c', 'd', 'e'].map(chunk);
    for (const c of cs) await store.put(c.digest, c.data);
    assert.deepEqual(await store.missing(cs.map((c) => c.digest)), []);
    assert.deepEqual(await store.usage(), { chunks: 5, bytes: 5 * 100 });
  });

  it('usage() ignores foreign files in the blob tree', async () => {
    const store = await FsChunkStore.open(dir);
    const c = chunk('usage');
    await store.put(c.digest, c.data);
    await writeFile(join(dir, 'blobs', 'sha256', c.digest.slice(7, 9), 'README'), 'not a chunk');
    assert.deepEqual(await store.usage(), { chunks: 1, bytes: c.data.length });
    await store.gc();
    assert.deepEqual(await store.usage(), { chunks: 0, bytes: 0 });
  });
});
