/**
 * Content-addressed state: chunks keyed by digest, and manifests that describe a tree of
 * files as lists of chunks. Everything that crosses a link (CRIU images, root filesystem
 * changes, memory pages read live, volumes) moves as a manifest plus the chunks the
 * destination lacks. Value types and interfaces only.
 */

/** A chunk digest: `sha256:` followed by 64 lower-case hex digits. */
export type Digest = string;

/** Page size all chunk boundaries align to. */
export const PAGE_SIZE = 4096;

/** One piece of a file: a stored chunk, or a run of zero bytes that is never stored or sent. */
export type ChunkRef = { digest: Digest; size: number } | { zero: number };

/** One entry of a manifest. Paths are relative, `/`-separated, without `..` or a leading `/`. */
export type ManifestEntry =
  | {
      type: 'file';
      path: string;
      /** Permission bits (e.g. 0o644). */
      mode: number;
      size: number;
      /** Small files carry their bytes inline (base64) instead of chunks. */
      inline?: string;
      chunks?: ChunkRef[];
    }
  | { type: 'dir'; path: string; mode: number }
  | { type: 'symlink'; path: string; target: string };

/** Format tag of manifests written by this version. */
export const MANIFEST_VERSION = 1;

/** A snapshot of a directory tree as chunks. */
export interface Manifest {
  version: typeof MANIFEST_VERSION;
  /** What the snapshot is of, for logs and reports (e.g. `checkpoint:web`). */
  label: string;
  createdAt: string;
  entries: ManifestEntry[];
}

/** Counts of a manifest, for accounting. */
export interface ManifestStats {
  files: number;
  /** Sum of file sizes. */
  logicalBytes: number;
  /** Bytes in zero runs. */
  zeroBytes: number;
  /** Bytes carried inline. */
  inlineBytes: number;
  /** Distinct chunks and their total size. */
  uniqueChunks: number;
  uniqueChunkBytes: number;
}

/**
 * A content-addressed chunk store. Chunks are immutable; `put` verifies the digest.
 * Retention: chunks referenced by a retained manifest are kept; `gc` removes the rest.
 */
export interface ChunkStore {
  /** True when the store holds the chunk (verified when it was written). */
  has(digest: Digest): Promise<boolean>;
  /** The digests of `digests` the store does not hold, in input order, without duplicates. */
  missing(digests: readonly Digest[]): Promise<Digest[]>;
  /** The chunk's bytes; NotFound when absent. */
  get(digest: Digest): Promise<Buffer>;
  /**
   * The chunk's bytes when the store holds them in memory (no I/O, not copied: do not modify);
   * undefined otherwise. Optional: a fast path for tight loops over many small chunks.
   */
  peek?(digest: Digest): Buffer | undefined;
  /**
   * Reads the chunk, `size` bytes, into `out` at `offset`; NotFound when absent. Optional: a
   * read without a buffer of its own per chunk, for loops over many small chunks (a lazy fill
   * of 1 GiB reads 262,144 pages, and a buffer each kept V8's collector busy).
   */
  readInto?(digest: Digest, out: Buffer, offset: number, size: number): Promise<void>;
  /**
   * Stores `data` under `digest`. Throws FailedPrecondition (digest mismatch) when the
   * bytes do not hash to `digest`; nothing is stored then. Idempotent.
   */
  put(digest: Digest, data: Buffer): Promise<void>;
  /** Keeps the manifest's chunks alive under `name` (replacing an earlier one of that name). */
  retain(name: string, manifest: Manifest): Promise<void>;
  /** Drops the retention `name`; its chunks go at the next `gc` unless retained elsewhere. */
  release(name: string): Promise<void>;
  /** Removes chunks no retained manifest references; returns what it freed. */
  gc(): Promise<{ chunks: number; bytes: number }>;
  /** Number and total size of stored chunks. */
  usage(): Promise<{ chunks: number; bytes: number }>;
}
