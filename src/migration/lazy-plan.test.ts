import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { MemoryChunkStore, snapshotDirectory, type KnownPage } from '../chunks/index.js';
import { digestOf } from '../chunks/hash.js';
import { fakePage, writeFakeCriuImages } from '../pages/testing.js';
import { planLazyPages } from './lazy-plan.js';

const A = 0x7f0000000000;

describe('planLazyPages', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-lazy-plan-'));
    await mkdir(join(dir, 'criu'));
    await writeFakeCriuImages(join(dir, 'criu'), [
      {
        vpid: 1,
        pagesId: 1,
        runs: [
          { vaddr: 0x400000, nrPages: 2, lazy: false },
          { vaddr: A, nrPages: 10, lazy: true },
          { vaddr: A + 10 * PAGE_SIZE, nrPages: 6, lazy: true },
        ],
      },
    ]);
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const opts = { label: 'x', chunkSizeFor: () => PAGE_SIZE };

  it('post-copy: every lazy page stays behind as a hole; the non-lazy ones cross', async () => {
    const plan = await planLazyPages(dir);
    assert.equal(plan.hook, undefined);
    assert.equal(plan.everyLazyPage, true);
    const store = new MemoryChunkStore();
    const s = await snapshotDirectory(dir, store, { ...opts, ...(plan.holes ? { holes: plan.holes } : {}) });
    assert.deepEqual(plan.remote(), [
      { vpid: 1, vaddr: A, nrPages: 10 },
      { vpid: 1, vaddr: A + 10 * PAGE_SIZE, nrPages: 6 },
    ]);
    const e = s.manifest.entries.find((x) => x.type === 'file' && x.path === 'criu/pages-1.img');
    assert.ok(e && e.type === 'file');
    assert.deepEqual(e.chunks?.slice(2), [{ zero: 16 * PAGE_SIZE }]);
    assert.equal((await store.usage()).chunks, 2);
  });

  it('hybrid: lazy pages the destination holds cross by digest, the others stay behind', async () => {
    // The destination holds lazy pages 0–3 and 12–15 (by digest) and knows page 5 is zero.
    const held = (p: number): KnownPage => {
      if (p === 5) return 'zero';
      if (p < 4 || p >= 12) return digestOf(fakePage(1, A + p * PAGE_SIZE));
      return undefined;
    };
    const plan = await planLazyPages(dir, (rel, offset, data) => {
      if (rel !== 'criu/pages-1.img') return undefined;
      return Array.from({ length: data.length / PAGE_SIZE }, (_, i) => {
        const fileOff = offset + i * PAGE_SIZE;
        return fileOff < 2 * PAGE_SIZE ? undefined : held((fileOff - 2 * PAGE_SIZE) / PAGE_SIZE);
      });
    });
    assert.ok(plan.hook);
    assert.equal(plan.everyLazyPage, false);
    await snapshotDirectory(dir, new MemoryChunkStore(), { ...opts, knownPages: plan.hook });
    assert.deepEqual(plan.remote(), [
      { vpid: 1, vaddr: A + 4 * PAGE_SIZE, nrPages: 1 },
      { vpid: 1, vaddr: A + 6 * PAGE_SIZE, nrPages: 6 },
    ]);
  });
});
