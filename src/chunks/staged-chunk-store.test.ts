import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { digestOf } from './hash.js';
import { MemoryChunkStore } from './memory-chunk-store.js';
import { StagedChunkStore } from './staged-chunk-store.js';

const a = Buffer.alloc(4096, 1);
const b = Buffer.alloc(4096, 2);
const da = digestOf(a);
const db = digestOf(b);

describe('StagedChunkStore', () => {
  it('stages puts in memory, reads both layers, and flushes only on request', async () => {
    const durable = new MemoryChunkStore();
    await durable.put(db, b);
    const s = new StagedChunkStore(durable);
    await s.put(da, a);
    assert.equal(await durable.has(da), false, 'not written through');
    assert.equal(await s.has(da), true);
    assert.deepEqual(await s.get(da), a);
    assert.deepEqual(await s.get(db), b);
    assert.deepEqual(await s.missing([da, db, digestOf(Buffer.alloc(1))]), [digestOf(Buffer.alloc(1))]);
    assert.equal(await s.stagedBytes(), 4096);
    assert.deepEqual(await s.flush([da]), { chunks: 1, bytes: 4096 });
    assert.equal(await durable.has(da), true);
    assert.equal(await s.stagedBytes(), 0);
  });

  it('readInto reads staged and durable chunks alike', async () => {
    const durable = new MemoryChunkStore();
    await durable.put(db, b);
    const s = new StagedChunkStore(durable);
    await s.put(da, a);
    const out = Buffer.alloc(8192);
    await s.readInto(da, out, 0, 4096);
    await s.readInto(db, out, 4096, 4096);
    assert.deepEqual(out, Buffer.concat([a, b]));
    await assert.rejects(s.readInto(da, out, 0, 100), /where 100 were expected/);
    await assert.rejects(s.readInto(digestOf(Buffer.alloc(1)), out, 0, 1));
  });

  it('verifies digests like any store and can discard without writing', async () => {
    const durable = new MemoryChunkStore();
    const s = new StagedChunkStore(durable);
    await assert.rejects(s.put(da, b));
    assert.equal(await s.has(da), false);
    await s.put(da, a);
    s.discard([da]);
    assert.equal(await s.has(da), false);
    assert.deepEqual(await s.flush(), { chunks: 0, bytes: 0 });
  });
});
