import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChunkStoreSuite } from './chunk-store-suite.js';
import { FsChunkStore } from './fs-chunk-store.js';
import { MemoryChunkStore } from './memory-chunk-store.js';

runChunkStoreSuite('MemoryChunkStore', async () => ({
  store: new MemoryChunkStore(),
  dispose: async () => {},
}));

runChunkStoreSuite('FsChunkStore', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'godwit-chunks-'));
  return {
    store: await FsChunkStore.open(join(dir, 'store')),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
});

runChunkStoreSuite('FsChunkStore (fsync, verify)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'godwit-chunks-'));
  return {
    store: await FsChunkStore.open(join(dir, 'store'), { fsync: true, verify: true, concurrency: 3 }),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
});
