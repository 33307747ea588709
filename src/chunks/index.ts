/**
 * Content-addressed chunks: hashing, the chunk stores, manifest validation, and snapshots of
 * directory trees. The shared store test suite lives in `./chunk-store-suite.js` (it imports
 * node:test, so it is not re-exported here).
 */
export { DIGEST_ALGORITHM, assertDigest, digestHex, digestOf, isDigest, isZero } from './hash.js';
export { FsChunkStore, type FsChunkStoreOptions } from './fs-chunk-store.js';
export { MemoryChunkStore } from './memory-chunk-store.js';
export { RETENTION_NAME, validateRetentionName, verifyChunk } from './store-common.js';
export {
  DEFAULT_MANIFEST_LIMITS,
  MAX_CHUNK_SIZE,
  MAX_INLINE_SIZE,
  manifestDigests,
  manifestStats,
  parseManifest,
  validateEntryPath,
  validateLabel,
  type ManifestLimits,
} from './manifest.js';
export {
  DEFAULT_CHUNK_SIZE,
  DEFAULT_INLINE_MAX,
  materialize,
  snapshotDirectory,
  type KnownPage,
  type MaterializeOptions,
  type SnapshotTimings,
  type SnapshotOptions,
} from './snapshot.js';
export { StagedChunkStore } from './staged-chunk-store.js';
export {
  applyManifestDelta,
  encodeManifestDelta,
  flattenRefs,
  isManifestDelta,
  type DeltaOp,
  type ManifestDelta,
} from './manifest-delta.js';
