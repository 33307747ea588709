import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { digestOf } from './hash.js';
import { MemoryChunkStore } from './memory-chunk-store.js';
import { snapshotDirectory, type KnownPage } from './snapshot.js';

describe('snapshotDirectory with knownPages', () => {
  let dir: string;
  const pages = 300;
  const file = Buffer.alloc(pages * PAGE_SIZE);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-known-'));
    for (let p = 0; p < pages; p++)
      if (p % 3 !== 0) file.fill((p % 251) + 1, p * PAGE_SIZE, p * PAGE_SIZE + 100);
    await mkdir(join(dir, 'criu'));
    await writeFile(join(dir, 'criu', 'pages-1.img'), file);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const opts = { label: 'x', chunkSizeFor: () => PAGE_SIZE };

  it('gives the same manifest as hashing, and stores only the pages it was not told about', async () => {
    const plain = await snapshotDirectory(dir, new MemoryChunkStore(), opts);
    const store = new MemoryChunkStore();
    const asked: number[] = [];
    const known = await snapshotDirectory(dir, store, {
      ...opts,
      knownPages: (rel, offset, data) => {
        assert.equal(rel, 'criu/pages-1.img');
        asked.push(offset);
        return Array.from({ length: data.length / PAGE_SIZE }, (_, i): KnownPage => {
          const p = offset / PAGE_SIZE + i;
          if (p % 3 === 0) return 'zero';
          if (p < 150) return digestOf(file.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
          return undefined;
        });
      },
    });
    assert.deepEqual(known.manifest.entries, plain.manifest.entries);
    assert.deepEqual(asked, [0]);
    // Pages ≥ 150 that are not zero were hashed and stored here; the known ones were not.
    const usage = await store.usage();
    const unknownNonZero = Array.from({ length: pages }, (_, p) => p).filter((p) => p >= 150 && p % 3 !== 0);
    const distinct = new Set(unknownNonZero.map((p) => (p % 251) + 1)).size;
    assert.equal(usage.chunks, distinct);
  });

  it('records holes as zero runs without reading or storing them (and with knownPages for the rest)', async () => {
    // A 6 MiB file: more than one read batch, so whole batches are skipped and one is split.
    const big = Buffer.alloc(1536 * PAGE_SIZE);
    for (let p = 0; p < 1536; p++) big.fill((p % 200) + 1, p * PAGE_SIZE, p * PAGE_SIZE + 64);
    const d = await mkdtemp(join(tmpdir(), 'godwit-holes-'));
    try {
      await mkdir(join(d, 'criu'));
      await writeFile(join(d, 'criu', 'pages-2.img'), big);
      const holes = [
        { offset: 0, length: 1100 * PAGE_SIZE },
        { offset: 1200 * PAGE_SIZE, length: 10 * PAGE_SIZE },
      ];
      const store = new MemoryChunkStore();
      const askedAt: number[] = [];
      const r = await snapshotDirectory(d, store, {
        ...opts,
        holes: (rel) => (rel === 'criu/pages-2.img' ? holes : undefined),
        knownPages: (_rel, offset) => {
          askedAt.push(offset);
          return undefined;
        },
      });
      const e = r.manifest.entries.find((x) => x.type === 'file' && x.path === 'criu/pages-2.img');
      assert.ok(e && e.type === 'file');
      assert.equal(e.size, big.length);
      const refs = e.chunks ?? [];
      assert.deepEqual(refs[0], { zero: 1100 * PAGE_SIZE });
      // The batch wholly inside the first hole was not even offered to knownPages.
      assert.ok(!askedAt.includes(0), `asked at ${askedAt.join(',')}`);
      let at = 0;
      for (const c of refs) {
        const len = 'zero' in c ? c.zero : c.size;
        const inHole = holes.some((h) => at >= h.offset && at + len <= h.offset + h.length);
        if (!('zero' in c)) assert.ok(!inHole, `a chunk at ${at} lies in a hole`);
        at += len;
      }
      // Stored: the distinct pages outside the holes only.
      const outside = Array.from({ length: 1536 }, (_, p) => p).filter(
        (p) => p >= 1100 && (p < 1200 || p >= 1210),
      );
      assert.equal((await store.usage()).chunks, new Set(outside.map((p) => (p % 200) + 1)).size);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
