/**
 * One behavioural test suite for every ChunkStore implementation (containerd's ContentSuite
 * pattern). Call `runChunkStoreSuite` from a `*.test.ts` file; it registers node:test blocks.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MANIFEST_VERSION, type ChunkStore, type Digest, type Manifest } from '../core/chunks.js';
import { ErrorCategory, ErrorCode, GodwitError } from '../core/errors.js';
import { digestOf } from './hash.js';

/** A fresh, empty store and how to dispose of it. */
export type ChunkStoreFactory = () => Promise<{ store: ChunkStore; dispose(): Promise<void> }>;

function chunk(seed: number, size = 4096): { digest: Digest; data: Buffer } {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  data.writeUInt32LE(seed, 0);
  return { digest: digestOf(data), data };
}

function manifestOf(label: string, ...chunks: { digest: Digest; data: Buffer }[]): Manifest {
  return {
    version: MANIFEST_VERSION,
    label,
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

function hasCode(code: string, category: ErrorCategory): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof GodwitError, `expected a GodwitError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.category, category);
    return true;
  };
}

/** Registers the shared ChunkStore tests under `describe(name)`. */
export function runChunkStoreSuite(name: string, factory: ChunkStoreFactory): void {
  describe(`ChunkStore suite: ${name}`, () => {
    let store: ChunkStore;
    let dispose: () => Promise<void>;

    beforeEach(async () => {
      const made = await factory();
      store = made.store;
      dispose = () => made.dispose();
    });
    afterEach(async () => {
      await dispose();
    });

    it('round-trips a chunk through put and get', async () => {
      const c = chunk(1, 65536);
      assert.equal(await store.has(c.digest), false);
      await store.put(c.digest, c.data);
      assert.equal(await store.has(c.digest), true);
      assert.deepEqual(await store.get(c.digest), c.data);
    });

    it('stores an empty chunk', async () => {
      const empty = Buffer.alloc(0);
      await store.put(digestOf(empty), empty);
      assert.equal((await store.get(digestOf(empty))).length, 0);
    });

    it('keeps its copy when the caller reuses the buffer', async () => {
      const c = chunk(2);
      const buf = Buffer.from(c.data);
      await store.put(c.digest, buf);
      buf.fill(0xee);
      const got = await store.get(c.digest);
      assert.deepEqual(got, c.data);
      got.fill(0x11);
      assert.deepEqual(await store.get(c.digest), c.data);
    });

    it('rejects data that does not match the digest and stores nothing', async () => {
      const a = chunk(3);
      const b = chunk(4);
      await assert.rejects(
        store.put(a.digest, b.data),
        hasCode(ErrorCode.ChunkDigestMismatch, ErrorCategory.FailedPrecondition),
      );
      assert.equal(await store.has(a.digest), false);
      assert.equal(await store.has(b.digest), false);
      assert.deepEqual(await store.usage(), { chunks: 0, bytes: 0 });
    });

    it('rejects malformed digests', async () => {
      const c = chunk(5);
      const bad = [
        '',
        'sha256:',
        c.digest.toUpperCase(),
        c.digest.replace('sha256', 'sha512'),
        `${c.digest}0`,
        '../x',
      ];
      for (const d of bad) {
        await assert.rejects(
          store.put(d, c.data),
          hasCode(ErrorCode.InvalidDigest, ErrorCategory.InvalidArgument),
        );
        await assert.rejects(store.get(d), hasCode(ErrorCode.InvalidDigest, ErrorCategory.InvalidArgument));
        await assert.rejects(store.has(d), hasCode(ErrorCode.InvalidDigest, ErrorCategory.InvalidArgument));
        await assert.rejects(
          store.missing([d]),
          hasCode(ErrorCode.InvalidDigest, ErrorCategory.InvalidArgument),
        );
      }
    });

    it('is idempotent, also for concurrent puts of one chunk', async () => {
      const c = chunk(6, 8192);
      await store.put(c.digest, c.data);
      await store.put(c.digest, c.data);
      await Promise.all(Array.from({ length: 8 }, () => store.put(c.digest, Buffer.from(c.data))));
      assert.deepEqual(await store.usage(), { chunks: 1, bytes: 8192 });
      assert.deepEqual(await store.get(c.digest), c.data);
    });

    it('get of an absent chunk fails with ChunkNotFound', async () => {
      await assert.rejects(
        store.get(chunk(7).digest),
        hasCode(ErrorCode.ChunkNotFound, ErrorCategory.NotFound),
      );
    });

    it('missing() keeps input order and drops duplicates', async () => {
      const [a, b, c, d] = [chunk(10), chunk(11), chunk(12), chunk(13)];
      await store.put(b.digest, b.data);
      await store.put(d.digest, d.data);
      assert.deepEqual(await store.missing([]), []);
      assert.deepEqual(await store.missing([c.digest, a.digest, b.digest, c.digest, d.digest, a.digest]), [
        c.digest,
        a.digest,
      ]);
      assert.deepEqual(await store.missing([b.digest, d.digest, b.digest]), []);
    });

    it('missing() answers for many digests', async () => {
      const all = Array.from({ length: 500 }, (_, i) => chunk(1000 + i, 64));
      for (const c of all.filter((_, i) => i % 3 === 0)) await store.put(c.digest, c.data);
      const want = all.filter((_, i) => i % 3 !== 0).map((c) => c.digest);
      assert.deepEqual(await store.missing(all.map((c) => c.digest)), want);
    });

    it('usage() counts chunks and bytes', async () => {
      assert.deepEqual(await store.usage(), { chunks: 0, bytes: 0 });
      await store.put(chunk(20, 100).digest, chunk(20, 100).data);
      await store.put(chunk(21, 4096).digest, chunk(21, 4096).data);
      assert.deepEqual(await store.usage(), { chunks: 2, bytes: 4196 });
    });

    it('gc removes unretained chunks and reports what it freed', async () => {
      const a = chunk(30, 1000);
      const b = chunk(31, 2000);
      await store.put(a.digest, a.data);
      await store.put(b.digest, b.data);
      assert.deepEqual(await store.gc(), { chunks: 2, bytes: 3000 });
      assert.deepEqual(await store.usage(), { chunks: 0, bytes: 0 });
      assert.equal(await store.has(a.digest), false);
      await assert.rejects(store.get(a.digest), hasCode(ErrorCode.ChunkNotFound, ErrorCategory.NotFound));
      assert.deepEqual(await store.gc(), { chunks: 0, bytes: 0 });
    });

    it('shared chunks survive while any retention holds them', async () => {
      const shared = chunk(40, 4096);
      const onlyA = chunk(41, 4096);
      const onlyB = chunk(42, 4096);
      const loose = chunk(43, 4096);
      for (const c of [shared, onlyA, onlyB, loose]) await store.put(c.digest, c.data);
      await store.retain('a', manifestOf('a', shared, onlyA, shared));
      await store.retain('b', manifestOf('b', onlyB, shared));

      assert.deepEqual(await store.gc(), { chunks: 1, bytes: 4096 });
      assert.deepEqual(await store.missing([shared.digest, onlyA.digest, onlyB.digest, loose.digest]), [
        loose.digest,
      ]);

      await store.release('a');
      assert.deepEqual(await store.gc(), { chunks: 1, bytes: 4096 });
      assert.deepEqual(await store.missing([shared.digest, onlyA.digest, onlyB.digest]), [onlyA.digest]);

      await store.release('b');
      assert.deepEqual(await store.gc(), { chunks: 2, bytes: 8192 });
      assert.deepEqual(await store.usage(), { chunks: 0, bytes: 0 });
    });

    it('retain replaces an earlier retention of the same name', async () => {
      const old = chunk(50);
      const next = chunk(51);
      await store.put(old.digest, old.data);
      await store.put(next.digest, next.data);
      await store.retain('web', manifestOf('v1', old));
      await store.retain('web', manifestOf('v2', next));
      await store.gc();
      assert.deepEqual(await store.missing([old.digest, next.digest]), [old.digest]);
    });

    it('retain may name chunks that arrive later (a lease before the transfer)', async () => {
      const c = chunk(52);
      await store.retain('incoming', manifestOf('incoming', c));
      await store.put(c.digest, c.data);
      await store.gc();
      assert.equal(await store.has(c.digest), true);
    });

    it('release of an unknown name does nothing', async () => {
      await store.release('never-retained');
    });

    it('refuses invalid retention names', async () => {
      for (const bad of ['', '../x', 'a/b', '.hidden', 'x'.repeat(201)]) {
        await assert.rejects(
          store.retain(bad, manifestOf('x')),
          hasCode(ErrorCode.InvalidName, ErrorCategory.InvalidArgument),
        );
        await assert.rejects(
          store.release(bad),
          hasCode(ErrorCode.InvalidName, ErrorCategory.InvalidArgument),
        );
      }
      await store.retain('checkpoint:web@3', manifestOf('ok'));
      await store.release('checkpoint:web@3');
    });

    it('inline files and zero runs retain nothing', async () => {
      const c = chunk(60);
      await store.put(c.digest, c.data);
      const m: Manifest = {
        version: MANIFEST_VERSION,
        label: 'no chunks',
        createdAt: new Date(0).toISOString(),
        entries: [
          { type: 'file', path: 'small', mode: 0o600, size: 2, inline: 'aGk=' },
          { type: 'file', path: 'sparse', mode: 0o600, size: 8192, chunks: [{ zero: 8192 }] },
          { type: 'dir', path: 'd', mode: 0o755 },
          { type: 'symlink', path: 'l', target: 'small' },
        ],
      };
      await store.retain('m', m);
      assert.deepEqual(await store.gc(), { chunks: 1, bytes: 4096 });
    });
  });
}
