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
});
