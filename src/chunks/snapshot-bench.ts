/**
 * Measures hashing, snapshot and materialize throughput on one machine.
 * Usage: node --import tsx src/chunks/snapshot-bench.ts [--mib 256] [--reps 3] [--dir /tmp] [--json]
 * The test file is one file of 4 KiB pages in runs of 1..256 pages, each run all zero,
 * one repeated page, or random (about a third each). Source and store sit in the page cache.
 * Each run writes a fresh store; all are deleted at the end.
 */
import * as crypto from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PAGE_SIZE } from '../core/chunks.js';
import { FsChunkStore } from './fs-chunk-store.js';
import { digestOf, isZero } from './hash.js';
import { manifestDigests } from './manifest.js';
import { materialize, snapshotDirectory } from './snapshot.js';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    reps: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/tmp' },
    json: { type: 'boolean', default: false },
  },
});
const mib = Number(values.mib);
const reps = Number(values.reps);

function mixedFile(bytes: number, seed: number): Buffer {
  const buf = Buffer.alloc(bytes);
  const page = crypto.randomBytes(PAGE_SIZE);
  let s = seed >>> 0;
  const rand = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const pages = bytes / PAGE_SIZE;
  for (let p = 0; p < pages;) {
    const run = Math.min(pages - p, 1 + Math.floor(rand() * 256));
    const kind = Math.floor(rand() * 3);
    if (kind === 1) for (let i = 0; i < run; i++) page.copy(buf, (p + i) * PAGE_SIZE);
    else if (kind === 2) crypto.randomFillSync(buf, p * PAGE_SIZE, run * PAGE_SIZE);
    p += run;
  }
  return buf;
}

function rate(bytes: number, ms: number): number {
  return Math.round(bytes / 1e6 / (ms / 1000));
}

function hashRates(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const size of [4096, 65536]) {
    const buf = crypto.randomBytes(size);
    const n = Math.floor((256 * 1024 * 1024) / size);
    for (let i = 0; i < 1000; i++) digestOf(buf);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) digestOf(buf);
    out[`sha256_${size}_MBps`] = rate(n * size, performance.now() - t0);
    out[`sha256_${size}_blocks_per_s`] = Math.round(n / ((performance.now() - t0) / 1000));
    const z = Buffer.alloc(size);
    const t1 = performance.now();
    for (let i = 0; i < n; i++) isZero(z);
    out[`isZero_${size}_MBps`] = rate(n * size, performance.now() - t1);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function main(): Promise<void> {
  const bytes = mib * 1024 * 1024;
  const tmp = await mkdtemp(join(values.dir, 'godwit-bench-'));
  try {
    const src = join(tmp, 'src');
    const data = mixedFile(bytes, 42);
    await rm(src, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(src));
    await writeFile(join(src, 'pages.img'), data);

    const results: Record<string, unknown> = { mib, reps, hash: hashRates() };
    const cold: number[] = [];
    const warm: number[] = [];
    const mat: number[] = [];
    const missingPresent: number[] = [];
    let chunkInfo: Record<string, number> = {};
    for (let r = 0; r < reps; r++) {
      const storeDir = join(tmp, `store-${r}`);
      const store = await FsChunkStore.open(storeDir);
      let t = performance.now();
      const { manifest, stats } = await snapshotDirectory(src, store, { label: 'bench' });
      cold.push(performance.now() - t);

      const fresh = await FsChunkStore.open(storeDir);
      t = performance.now();
      await snapshotDirectory(src, fresh, { label: 'bench' });
      warm.push(performance.now() - t);

      const again = await FsChunkStore.open(storeDir);
      const digests = manifestDigests(manifest);
      t = performance.now();
      const missing = await again.missing(digests);
      missingPresent.push(performance.now() - t);
      if (missing.length !== 0) throw new Error('store lost chunks');

      const out = join(tmp, `out-${r}`);
      const reader = await FsChunkStore.open(storeDir);
      t = performance.now();
      await materialize(manifest, reader, out);
      mat.push(performance.now() - t);
      if (!(await readFile(join(out, 'pages.img'))).equals(data))
        throw new Error('materialized file differs');

      const refs = manifest.entries.flatMap((e) => (e.type === 'file' ? (e.chunks ?? []) : []));
      chunkInfo = {
        chunkRefs: refs.filter((c) => 'digest' in c).length,
        zeroRuns: refs.filter((c) => 'zero' in c).length,
        uniqueChunks: stats.uniqueChunks,
        uniqueChunkMiB: Math.round((stats.uniqueChunkBytes / 1048576) * 10) / 10,
        zeroMiB: Math.round((stats.zeroBytes / 1048576) * 10) / 10,
      };
      // Nothing is deleted until the end: on ext4 mounted with `discard` (as here), deleting
      // hundreds of MB stalls the next journal commits and so the next run's file creation.
    }
    const absent = Array.from({ length: chunkInfo['uniqueChunks'] ?? 0 }, (_, i) =>
      digestOf(Buffer.from(`absent-${i}`)),
    );
    const empty = await FsChunkStore.open(join(tmp, 'empty-store'));
    let t = performance.now();
    await empty.missing(absent);
    const missingAbsentMs = performance.now() - t;

    Object.assign(results, {
      chunks: chunkInfo,
      snapshotColdMs: cold.map(Math.round),
      snapshotColdMBps: rate(bytes, median(cold)),
      snapshotWarmMs: warm.map(Math.round),
      snapshotWarmMBps: rate(bytes, median(warm)),
      materializeMs: mat.map(Math.round),
      materializeMBps: rate(bytes, median(mat)),
      missingAllPresentMs: missingPresent.map((x) => Math.round(x * 10) / 10),
      missingAllAbsentMs: Math.round(missingAbsentMs * 10) / 10,
    });
    t = 0;
    console.log(values.json ? JSON.stringify(results) : JSON.stringify(results, null, 2));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

await main();
