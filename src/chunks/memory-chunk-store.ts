/** An in-memory ChunkStore for tests and the simulator. */
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { assertDigest } from './hash.js';
import { chunkNotFound, retentionDigests, validateRetentionName, verifyChunk } from './store-common.js';

/** ChunkStore held in a Map. Chunks are copied in and out, so callers may reuse their buffers. */
export class MemoryChunkStore implements ChunkStore {
  private readonly chunks = new Map<Digest, Buffer>();
  private readonly retained = new Map<string, readonly Digest[]>();

  async has(digest: Digest): Promise<boolean> {
    assertDigest(digest);
    return this.chunks.has(digest);
  }

  async missing(digests: readonly Digest[]): Promise<Digest[]> {
    const seen = new Set<Digest>();
    const out: Digest[] = [];
    for (const d of digests) {
      assertDigest(d);
      if (seen.has(d)) continue;
      seen.add(d);
      if (!this.chunks.has(d)) out.push(d);
    }
    return out;
  }

  async get(digest: Digest): Promise<Buffer> {
    assertDigest(digest);
    const data = this.chunks.get(digest);
    if (data === undefined) throw chunkNotFound(digest);
    return Buffer.from(data);
  }

  async put(digest: Digest, data: Buffer): Promise<void> {
    verifyChunk(digest, data);
    if (!this.chunks.has(digest)) this.chunks.set(digest, Buffer.from(data));
  }

  async retain(name: string, manifest: Manifest): Promise<void> {
    validateRetentionName(name);
    this.retained.set(name, retentionDigests(manifest));
  }

  async release(name: string): Promise<void> {
    validateRetentionName(name);
    this.retained.delete(name);
  }

  async gc(): Promise<{ chunks: number; bytes: number }> {
    const live = new Set<Digest>();
    for (const digests of this.retained.values()) for (const d of digests) live.add(d);
    let chunks = 0;
    let bytes = 0;
    for (const [d, data] of this.chunks) {
      if (live.has(d)) continue;
      this.chunks.delete(d);
      chunks++;
      bytes += data.length;
    }
    return { chunks, bytes };
  }

  async usage(): Promise<{ chunks: number; bytes: number }> {
    let bytes = 0;
    for (const data of this.chunks.values()) bytes += data.length;
    return { chunks: this.chunks.size, bytes };
  }

  /** Names of the current retentions, sorted. */
  async retentions(): Promise<string[]> {
    return [...this.retained.keys()].sort();
  }
}
