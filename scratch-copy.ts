import { MemoryChunkStore, StagedChunkStore, snapshotDirectory, materialize } from './src/chunks/index.js';
import { chunkSizeForCheckpoint } from './src/migration/service.js';
const [src, dst] = process.argv.slice(2);
const store = new StagedChunkStore(new MemoryChunkStore(), { trustPuts: true });
const r = await snapshotDirectory(src!, store, { label: 'a', chunkSizeFor: chunkSizeForCheckpoint });
const t = performance.now();
await materialize(r.manifest, store, dst!);
console.log('materialize', (performance.now() - t).toFixed(0));
