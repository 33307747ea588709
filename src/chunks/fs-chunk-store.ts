/**
 * A ChunkStore on a local filesystem, laid out like containerd's content store:
 *
 *   <dir>/blobs/sha256/<2 hex>/<64 hex>   chunk bytes, written once (read-only files)
 *   <dir>/retained/<name>.json            one record per retention: the manifest's digests
 *   <dir>/ingest/                         temp files; renamed into place when complete
 *
 * Writes are atomic (temp file + rename), so a reader sees a whole chunk or none, and a
 * concurrent put of the same digest by another writer is harmless. Several processes may
 * share a directory for put/get/has/missing; run `gc` from one process only, and note that
 * a chunk put before any retention names it can be collected by a concurrent `gc` (retain
 * the manifest first, as a lease, or set `gcGraceMs`).
 */
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { mkdir, open, readdir, readFile, realpath, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { ErrorCode, FailedPreconditionError } from '../core/errors.js';
import { assertDigest, digestHex, digestOf, isDigest } from './hash.js';
import {
  closeFd,
  fsyncFd,
  openFd,
  readOnce,
  readWholeFile,
  renamePath,
  statExists,
  writeAll,
} from './fd-io.js';
import { mapLimit, Mutex } from './pool.js';
import { chunkNotFound, retentionDigests, validateRetentionName, verifyChunk } from './store-common.js';

/** Tuning of an FsChunkStore. */
export interface FsChunkStoreOptions {
  /**
   * fsync each chunk and retention record before renaming it into place, and the directory
   * after. Default false: a migration's chunks only need to outlive the process, not a power
   * cut, and the page cache serves them back far faster; turn it on for long-lived stores.
   */
  fsync?: boolean;
  /** Re-hash every chunk `get` returns; a mismatch removes the chunk and throws ChunkStoreCorrupt. Default false. */
  verify?: boolean;
  /** Parallel file system calls in missing(), usage() and gc(). Default 64. */
  concurrency?: number;
  /** Digests remembered as present before the memory is cleared and refilled. Default 1 000 000 (~150 MB). */
  cacheEntries?: number;
  /** gc keeps unreferenced chunks modified less than this many ms ago. Default 0. */
  gcGraceMs?: number;
  /** gc deletes other writers' ingest files older than this. Default 10 minutes. */
  ingestStaleMs?: number;
  clock?: Clock;
}

const HEX64 = /^[0-9a-f]{64}$/;
const RECORD_VERSION = 1;

/** What `retained/<name>.json` holds. */
interface RetentionRecord {
  version: typeof RECORD_VERSION;
  name: string;
  label: string;
  retainedAt: string;
  digests: Digest[];
}

function isNoEnt(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

/** ChunkStore in a directory; see the module comment for layout and sharing rules. */
export class FsChunkStore implements ChunkStore {
  /**
   * Digests known to be on disk: filled by put, has, get and scans. A hit is trusted
   * (only this store's gc removes chunks, and it updates the set); a miss falls back to stat.
   */
  private readonly known = new Set<Digest>();
  /** Ingest file names this instance is writing right now. */
  private readonly inflight = new Set<string>();
  private readonly token = randomBytes(6).toString('hex');
  private seq = 0;
  private readonly lock = new Mutex();
  private readonly fsync: boolean;
  private readonly verify: boolean;
  private readonly concurrency: number;
  private readonly gcGraceMs: number;
  private readonly ingestStaleMs: number;
  private readonly clock: Clock;
  private readonly cacheEntries: number;

  private constructor(
    /** Absolute, resolved path of the store. */
    readonly root: string,
    opts: FsChunkStoreOptions,
  ) {
    this.fsync = opts.fsync ?? false;
    this.verify = opts.verify ?? false;
    this.concurrency = Math.max(1, opts.concurrency ?? 64);
    this.gcGraceMs = Math.max(0, opts.gcGraceMs ?? 0);
    this.ingestStaleMs = Math.max(0, opts.ingestStaleMs ?? 10 * 60_000);
    this.clock = opts.clock ?? systemClock;
    this.cacheEntries = Math.max(0, opts.cacheEntries ?? 1_000_000);
  }

  /** Opens the store in `dir`, creating its layout if needed. */
  static async open(dir: string, opts: FsChunkStoreOptions = {}): Promise<FsChunkStore> {
    const abs = resolve(dir);
    await mkdir(abs, { recursive: true, mode: 0o700 });
    const store = new FsChunkStore(await realpath(abs), opts);
    await mkdir(store.ingestDir, { recursive: true, mode: 0o700 });
    await mkdir(store.retainedDir, { recursive: true, mode: 0o700 });
    await mkdir(store.blobsDir, { recursive: true, mode: 0o700 });
    return store;
  }

  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }
  get retainedDir(): string {
    return join(this.root, 'retained');
  }
  get ingestDir(): string {
    return join(this.root, 'ingest');
  }
  /** Where the chunk `digest` lives (whether or not it is there). */
  blobPath(digest: Digest): string {
    const hex = digestHex(digest);
    return join(this.blobsDir, hex.slice(0, 2), hex);
  }
  private retentionPath(name: string): string {
    return join(this.retainedDir, `${name}.json`);
  }

  async has(digest: Digest): Promise<boolean> {
    assertDigest(digest);
    return this.known.has(digest) || (await this.statKnown(digest));
  }

  async missing(digests: readonly Digest[]): Promise<Digest[]> {
    const seen = new Set<Digest>();
    const unique: Digest[] = [];
    for (const d of digests) {
      assertDigest(d);
      if (!seen.has(d)) {
        seen.add(d);
        unique.push(d);
      }
    }
    // Chunks this store wrote or saw are known without a promise each (a 1 GiB memory image is
    // 100,000+ of them); only the others are looked for on disk.
    const unknown = unique.filter((d) => !this.known.has(d));
    if (unknown.length === 0) return [];
    const present = await mapLimit(unknown, this.concurrency, (d) => this.statKnown(d));
    return unknown.filter((_, i) => !present[i]);
  }

  async get(digest: Digest): Promise<Buffer> {
    assertDigest(digest);
    let data: Buffer;
    try {
      data = await readWholeFile(this.blobPath(digest));
    } catch (err) {
      throw this.readFailure(digest, err);
    }
    await this.checkRead(digest, data);
    return data;
  }

  /**
   * ChunkStore.readInto: open, one read, close. A chunk file shorter than `size` throws
   * ChunkStoreCorrupt; one longer (never written so: chunks are renamed into place whole) is
   * caught only with `verify`.
   */
  async readInto(digest: Digest, out: Buffer, offset: number, size: number): Promise<void> {
    assertDigest(digest);
    let fd: number;
    try {
      fd = await openFd(this.blobPath(digest), 'r');
    } catch (err) {
      throw this.readFailure(digest, err);
    }
    let n: number;
    try {
      n = await readOnce(fd, out, offset, size, 0);
    } finally {
      await closeFd(fd);
    }
    if (n !== size) {
      throw new FailedPreconditionError(
        ErrorCode.ChunkStoreCorrupt,
        `stored chunk ${digest} has ${n} bytes where ${size} were expected`,
      );
    }
    await this.checkRead(digest, out.subarray(offset, offset + size));
  }

  /** What a failed open of a chunk's file means: ChunkNotFound (and forgotten) when it is gone. */
  private readFailure(digest: Digest, err: unknown): unknown {
    if (!isNoEnt(err)) return err;
    this.known.delete(digest);
    return chunkNotFound(digest, err);
  }

  /**
   * After a read of `data` for `digest`: with `verify`, a copy that does not hash to its digest
   * is dropped (so missing() reports the chunk and a put can replace it) and ChunkStoreCorrupt
   * thrown; else the chunk is remembered as present.
   */
  private async checkRead(digest: Digest, data: Buffer): Promise<void> {
    if (this.verify && digestOf(data) !== digest) {
      this.known.delete(digest);
      await rm(this.blobPath(digest), { force: true });
      throw new FailedPreconditionError(
        ErrorCode.ChunkStoreCorrupt,
        `stored chunk ${digest} did not match its digest and was removed`,
        { hint: 'fetch the chunk again' },
      );
    }
    this.remember(digest);
  }

  async put(digest: Digest, data: Buffer): Promise<void> {
    verifyChunk(digest, data);
    if (this.known.has(digest)) return;
    await this.writeAtomic(this.blobPath(digest), data, 0o400);
    this.remember(digest);
  }

  async retain(name: string, manifest: Manifest): Promise<void> {
    validateRetentionName(name);
    const record: RetentionRecord = {
      version: RECORD_VERSION,
      name,
      label: manifest.label,
      retainedAt: new Date(this.clock.now()).toISOString(),
      digests: retentionDigests(manifest),
    };
    const body = Buffer.from(JSON.stringify(record) + '\n');
    await this.lock.run(() => this.writeAtomic(this.retentionPath(name), body, 0o600));
  }

  /** Idempotent: releasing a name that is not retained does nothing. */
  async release(name: string): Promise<void> {
    validateRetentionName(name);
    await this.lock.run(() => rm(this.retentionPath(name), { force: true }));
  }

  /** Names of the current retentions, sorted. */
  async retentions(): Promise<string[]> {
    const names = await readdir(this.retainedDir);
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .sort();
  }

  /**
   * Deletes chunks no retention references (except those younger than `gcGraceMs`) and
   * stale ingest files. Refuses (ChunkStoreCorrupt) when a retention record is unreadable,
   * since it cannot know what that record keeps alive.
   */
  async gc(): Promise<{ chunks: number; bytes: number }> {
    return this.lock.run(async () => {
      const live = await this.liveDigests();
      const cutoff = this.clock.now() - this.gcGraceMs;
      let chunks = 0;
      let bytes = 0;
      await this.forEachBlob(async (digest, path) => {
        if (live.has(digest)) return;
        let st: Stats;
        try {
          st = await stat(path);
        } catch (err) {
          if (isNoEnt(err)) return;
          throw err;
        }
        if (this.gcGraceMs > 0 && st.mtimeMs > cutoff) return;
        // Forget first: a put racing this unlink must write the chunk again, not trust the cache.
        this.known.delete(digest);
        try {
          await unlink(path);
        } catch (err) {
          if (isNoEnt(err)) return;
          throw err;
        }
        chunks++;
        bytes += st.size;
      });
      await this.cleanIngest();
      return { chunks, bytes };
    });
  }

  /** Scans the blobs: number and total size of stored chunks. */
  async usage(): Promise<{ chunks: number; bytes: number }> {
    let chunks = 0;
    let bytes = 0;
    await this.forEachBlob(async (digest, path) => {
      try {
        const st = await stat(path);
        chunks++;
        bytes += st.size;
        this.remember(digest);
      } catch (err) {
        if (!isNoEnt(err)) throw err;
      }
    });
    return { chunks, bytes };
  }

  private remember(digest: Digest): void {
    if (this.known.size >= this.cacheEntries) this.known.clear();
    if (this.cacheEntries > 0) this.known.add(digest);
  }

  private async statKnown(digest: Digest): Promise<boolean> {
    const found = await statExists(this.blobPath(digest));
    if (found) this.remember(digest);
    return found;
  }

  /** Calls `fn` for every blob file, at most `concurrency` at a time. */
  private async forEachBlob(fn: (digest: Digest, path: string) => Promise<void>): Promise<void> {
    await mapLimit(prefixes(), 4, async (prefix) => {
      const dir = join(this.blobsDir, prefix);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (isNoEnt(err)) return;
        throw err;
      }
      const blobs = names.filter((n) => HEX64.test(n) && n.startsWith(prefix));
      await mapLimit(blobs, Math.max(1, Math.floor(this.concurrency / 4)), (n) =>
        fn(`sha256:${n}`, join(dir, n)),
      );
    });
  }

  private async liveDigests(): Promise<Set<Digest>> {
    const live = new Set<Digest>();
    for (const name of await readdir(this.retainedDir)) {
      if (!name.endsWith('.json')) continue;
      const path = join(this.retainedDir, name);
      let raw: string;
      try {
        raw = await readFile(path, 'utf8');
      } catch (err) {
        if (isNoEnt(err)) continue;
        throw err;
      }
      const digests = parseRecordDigests(raw);
      if (digests === undefined) {
        throw new FailedPreconditionError(
          ErrorCode.ChunkStoreCorrupt,
          `unreadable retention record ${path}`,
          {
            hint: 'gc refuses to run while a retention record is unreadable; repair or remove it',
          },
        );
      }
      for (const d of digests) live.add(d);
    }
    return live;
  }

  /** Removes ingest files this instance abandoned, and other writers' files older than ingestStaleMs. */
  private async cleanIngest(): Promise<void> {
    const cutoff = this.clock.now() - this.ingestStaleMs;
    const names = await readdir(this.ingestDir);
    await mapLimit(names, this.concurrency, async (name) => {
      if (this.inflight.has(name)) return;
      const path = join(this.ingestDir, name);
      if (!name.startsWith(`${this.token}-`)) {
        try {
          if ((await stat(path)).mtimeMs > cutoff) return;
        } catch (err) {
          if (isNoEnt(err)) return;
          throw err;
        }
      }
      await rm(path, { force: true, recursive: true });
    });
  }

  /** Writes `data` to an ingest file, then renames it to `path`; never leaves a partial `path`. */
  private async writeAtomic(path: string, data: Buffer, mode: number): Promise<void> {
    const name = `${this.token}-${(this.seq++).toString(36)}`;
    const tmp = join(this.ingestDir, name);
    this.inflight.add(name);
    try {
      const fd = await openFd(tmp, 'wx', mode);
      try {
        await writeAll(fd, data, null);
        if (this.fsync) await fsyncFd(fd);
      } finally {
        await closeFd(fd);
      }
      try {
        await renamePath(tmp, path);
      } catch (err) {
        if (!isNoEnt(err)) throw err;
        // Blob prefix directories are made on first use.
        await mkdir(dirname(path), { recursive: true, mode: 0o700 });
        await renamePath(tmp, path);
      }
      if (this.fsync) await syncDir(dirname(path));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    } finally {
      this.inflight.delete(name);
    }
  }
}

function prefixes(): string[] {
  const out: string[] = [];
  for (let i = 0; i < 256; i++) out.push(i.toString(16).padStart(2, '0'));
  return out;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function parseRecordDigests(raw: string): Digest[] | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const rec = value as Partial<Record<keyof RetentionRecord, unknown>>;
  if (rec.version !== RECORD_VERSION || !Array.isArray(rec.digests)) return undefined;
  const digests: unknown[] = rec.digests;
  return digests.every(isDigest) ? (digests as Digest[]) : undefined;
}
