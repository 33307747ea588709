/**
 * Directory trees to manifests and back. `snapshotDirectory` cuts every regular file into
 * fixed-size chunks aligned at offset 0, stores the non-zero ones, and records all-zero
 * chunks as zero runs; `materialize` recreates the tree from a manifest, leaving zero runs
 * as holes. Ownership, timestamps, xattrs and hard links are not captured (the manifest
 * format has no place for them): hard-linked files become separate files sharing chunks.
 */
import type { Stats } from 'node:fs';
import { constants as fsc } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readlink, realpath, rm, stat, symlink } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import {
  MANIFEST_VERSION,
  PAGE_SIZE,
  type ChunkRef,
  type ChunkStore,
  type Digest,
  type Manifest,
  type ManifestEntry,
  type ManifestStats,
} from '../core/chunks.js';
import { ErrorCode, FailedPreconditionError, InvalidArgumentError } from '../core/errors.js';
import { digestOf, isZero } from './hash.js';
import {
  DEFAULT_MANIFEST_LIMITS,
  MAX_CHUNK_SIZE,
  MAX_INLINE_SIZE,
  manifestStats,
  parseManifest,
  validateLabel,
} from './manifest.js';
import { closeFd, fchmodFd, fstatFd, ftruncateFd, openFd, readFull, writeAll } from './fd-io.js';
import { mapLimit, Semaphore } from './pool.js';

/** Default chunk size: 16 pages. */
export const DEFAULT_CHUNK_SIZE = 65536;
/** Default largest file carried inline. */
export const DEFAULT_INLINE_MAX = 4096;
/** Bytes read per syscall while chunking (rounded down to whole chunks). */
const READ_SIZE = 4 * 1024 * 1024;
/** Read buffers per file being chunked. */
const RING = 3;
/** Files read or written at once: small files are mostly syscall latency, so many. */
const FILE_CONCURRENCY = 16;
/** Of those, files larger than one read batch (each holds RING × READ_SIZE of buffers). */
const LARGE_FILE_CONCURRENCY = 4;
/** Chunk reads and writes in flight per file while materializing. */
const CHUNK_CONCURRENCY = 8;
/** Bytes of contiguous chunks written with one writev while materializing. */
const WRITE_BATCH_BYTES = 1024 * 1024;
/** Recently fetched chunks kept while materializing (repeated content is fetched once). */
const CHUNK_CACHE_ENTRIES = 64;

/** A page the caller already knows: its digest, or `zero`; undefined: unknown. */
export type KnownPage = Digest | 'zero' | undefined;

/** Options of `snapshotDirectory`. */
export interface SnapshotOptions {
  /** What the snapshot is of (e.g. `checkpoint:web`); printable, at most 256 bytes. */
  label: string;
  /** Chunk size in bytes: a multiple of 4096, at most 16 MiB. Default 65536. */
  chunkSize?: number;
  /**
   * Per-file chunk size (same rules), by path relative to the snapshot root; undefined keeps
   * `chunkSize`. Memory images use 4096: page-sized chunks dedup identical pages wherever
   * they sit, so pages sent in a pre-copy round or held from an earlier trip are found again.
   */
  chunkSizeFor?: (relPath: string) => number | undefined;
  /**
   * What the caller already knows about the pages of a file cut into page-sized chunks, asked
   * once per read batch: for each page of `data` (read at byte `offset` of `relPath`), its digest
   * when the caller holds exactly these bytes under it, `zero` when it knows the page is all
   * zeros, or undefined to look at it here. Known pages are neither hashed nor stored: the caller
   * guarantees they are held elsewhere (the destination has them, the caller can serve them).
   */
  knownPages?: (relPath: string, offset: number, data: Buffer) => readonly KnownPage[] | undefined;
  /**
   * Page-aligned byte ranges of a file cut into page-sized chunks that the snapshot records as
   * zero runs without reading them (sorted, not overlapping): bytes the caller keeps elsewhere and
   * hands over by other means (post-copy leaves lazy memory on the source). Undefined: none.
   */
  holes?: (relPath: string) => readonly { offset: number; length: number }[] | undefined;
  /** Files up to this size are carried inline. Default 4096, at most 64 KiB. */
  /** Paths (relative, `/`-separated) left out, with everything below them. */
  exclude?: (relPath: string) => boolean;
  inlineMax?: number;
  /** Called with the bytes of file content processed so far (monotonic). */
  onProgress?: (bytesDone: number) => void;
  clock?: Clock;
}

/**
 * Where a snapshot's time went, in ms: reading and cutting its files (`filesMs`), of which
 * waiting for reads, asking `knownPages` and hashing/cutting pages; summing up the manifest.
 */
export interface SnapshotTimings {
  filesMs: number;
  readWaitMs: number;
  knownPagesMs: number;
  cutMs: number;
  statsMs: number;
}

/** Options of `materialize`. */
export interface MaterializeOptions {
  /** Called with the bytes of file content (zero runs included) written so far. */
  onProgress?: (bytesDone: number) => void;
  /**
   * Byte ranges of a file (by manifest path; sorted, not overlapping) left unwritten: holes that
   * read as zeros. Chunks lying wholly inside one are neither read from the store nor written (a
   * destination serving those pages from its store by other means). Undefined: none.
   */
  holes?: (relPath: string) => readonly { offset: number; length: number }[] | undefined;
}

interface WalkItem {
  rel: string;
  abs: string;
  st: Stats;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function unsupported(path: string, problem: string): InvalidArgumentError {
  return new InvalidArgumentError(
    ErrorCode.UnsupportedFile,
    `cannot snapshot ${JSON.stringify(path)}: ${problem}`,
  );
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'of an unsupported type';
}

function checkOptions(opts: SnapshotOptions): { chunkSize: number; inlineMax: number } {
  validateLabel(opts.label);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (
    !Number.isInteger(chunkSize) ||
    chunkSize <= 0 ||
    chunkSize % PAGE_SIZE !== 0 ||
    chunkSize > MAX_CHUNK_SIZE
  ) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `chunk size ${chunkSize} must be a positive multiple of ${PAGE_SIZE}, at most ${MAX_CHUNK_SIZE}`,
    );
  }
  const inlineMax = opts.inlineMax ?? DEFAULT_INLINE_MAX;
  if (!Number.isInteger(inlineMax) || inlineMax < 0 || inlineMax > MAX_INLINE_SIZE) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `inline limit ${inlineMax} must be in 0..${MAX_INLINE_SIZE}`,
    );
  }
  return { chunkSize, inlineMax };
}

/** Lists the tree below `root` depth-first, siblings in byte order of their names. */
async function walkTree(root: string, exclude?: (relPath: string) => boolean): Promise<WalkItem[]> {
  const out: WalkItem[] = [];
  const visit = async (absDir: string, relDir: string): Promise<void> => {
    const names = await readdir(absDir, { encoding: 'buffer' });
    names.sort(Buffer.compare);
    const items = await mapLimit(names, 32, async (raw): Promise<WalkItem> => {
      let name: string;
      try {
        name = utf8.decode(raw);
      } catch {
        throw unsupported(`${relDir}/${raw.toString('latin1')}`, 'its name is not valid UTF-8');
      }
      const rel = relDir === '' ? name : `${relDir}/${name}`;
      const abs = join(absDir, name);
      return { rel, abs, st: await lstat(abs) };
    });
    for (const item of items) {
      if (exclude?.(item.rel)) continue;
      if (Buffer.byteLength(item.rel) > DEFAULT_MANIFEST_LIMITS.maxPathBytes) {
        throw unsupported(item.rel, `its path is longer than ${DEFAULT_MANIFEST_LIMITS.maxPathBytes} bytes`);
      }
      out.push(item);
      if (out.length > DEFAULT_MANIFEST_LIMITS.maxEntries) {
        throw unsupported(
          relDir || '.',
          `the tree has more than ${DEFAULT_MANIFEST_LIMITS.maxEntries} entries`,
        );
      }
      if (item.st.isDirectory()) await visit(item.abs, item.rel);
      else if (!item.st.isFile() && !item.st.isSymbolicLink())
        throw unsupported(item.rel, `it is ${kindOf(item.st)}`);
    }
  };
  await visit(root, '');
  return out;
}

/** Shared state of one snapshot run. */
class Chunker {
  /** Chunks stored (or being stored) during this run: each is looked up and put once. */
  private readonly ensured = new Map<Digest, Promise<void>>();
  private readonly largeFiles = new Semaphore(LARGE_FILE_CONCURRENCY);
  private done = 0;
  /** Where the time went (ms): waiting for reads, asking `knownPages`, hashing and cutting. */
  readonly timings = { readWaitMs: 0, knownPagesMs: 0, cutMs: 0 };

  constructor(
    private readonly store: ChunkStore,
    private readonly chunkSize: number,
    private readonly inlineMax: number,
    private readonly onProgress: ((bytesDone: number) => void) | undefined,
    private readonly chunkSizeFor: ((relPath: string) => number | undefined) | undefined = undefined,
    private readonly knownPages: SnapshotOptions['knownPages'] = undefined,
    private readonly holes: SnapshotOptions['holes'] = undefined,
  ) {}

  private progress(n: number): void {
    this.done += n;
    this.onProgress?.(this.done);
  }

  /**
   * Stores the chunks the store lacks (one `missing` call per batch, then puts in parallel).
   * The returned promise settles once their buffers may be reused; it is marked handled,
   * so a failure surfaces where it is awaited.
   */
  private storeBatch(batch: { digest: Digest; data: Buffer }[]): Promise<void> {
    if (batch.length === 0) return Promise.resolve();
    const p = (async () => {
      const missing = new Set(await this.store.missing(batch.map((c) => c.digest)));
      await Promise.all(
        batch.filter((c) => missing.has(c.digest)).map((c) => this.store.put(c.digest, c.data)),
      );
    })();
    p.catch(() => undefined);
    for (const c of batch) this.ensured.set(c.digest, p);
    return p;
  }

  async file(item: WalkItem): Promise<ManifestEntry> {
    const mode = item.st.mode & 0o7777;
    let fd: number;
    try {
      // O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a FIFO since lstat fails or shows below.
      fd = await openFd(item.abs, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP')
        throw unsupported(item.rel, 'it changed during the snapshot');
      throw err;
    }
    try {
      const st = await fstatFd(fd);
      if (!st.isFile()) throw unsupported(item.rel, 'it changed during the snapshot');
      // Read what the file holds now, up to its size at open; a file that shrank ends early.
      const expected = st.size;
      if (expected <= this.inlineMax) {
        const buf = Buffer.alloc(expected);
        const n = await readFull(fd, buf, expected, 0);
        this.progress(n);
        return { type: 'file', path: item.rel, mode, size: n, inline: buf.subarray(0, n).toString('base64') };
      }
      const chunks =
        expected > READ_SIZE
          ? await this.largeFiles.run(() => this.chunkFile(fd, expected, this.sizeFor(item.rel), item.rel))
          : await this.chunkFile(fd, expected, this.sizeFor(item.rel), item.rel);
      let size = 0;
      for (const c of chunks) size += 'zero' in c ? c.zero : c.size;
      return { type: 'file', path: item.rel, mode, size, chunks };
    } finally {
      await closeFd(fd);
    }
  }

  /**
   * Reads `size` bytes in batches through a ring of buffers: while one batch is hashed, the
   * next is being read and earlier batches' chunks are being stored. A buffer is read into
   * again only once the puts of its previous batch have finished.
   */
  private sizeFor(rel: string): number {
    const cs = this.chunkSizeFor?.(rel);
    if (cs === undefined) return this.chunkSize;
    return checkOptions({ label: 'x', chunkSize: cs }).chunkSize;
  }

  private async chunkFile(fd: number, size: number, cs: number, rel: string): Promise<ChunkRef[]> {
    const knownPages = cs === PAGE_SIZE ? this.knownPages : undefined;
    const holes = (cs === PAGE_SIZE ? this.holes?.(rel) : undefined) ?? [];
    /** The hole that holds all of [from, to), if one does. */
    const holeOver = (from: number, to: number): boolean => {
      let lo = 0;
      let hi = holes.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const h = holes[mid] as { offset: number; length: number };
        if (from < h.offset) hi = mid - 1;
        else if (from >= h.offset + h.length) lo = mid + 1;
        else return to <= h.offset + h.length;
      }
      return false;
    };
    const batchSize = Math.min(cs * Math.max(1, Math.floor(READ_SIZE / cs)), Math.ceil(size / cs) * cs);
    const ring = Array.from({ length: Math.min(RING, Math.ceil(size / batchSize)) }, () =>
      Buffer.allocUnsafe(batchSize),
    );
    const busy: Promise<void>[] = ring.map(() => Promise.resolve());
    const refs: ChunkRef[] = [];
    const readInto = async (slot: number, pos: number): Promise<number> => {
      const len = Math.min(batchSize, size - pos);
      if (holeOver(pos, pos + len)) return len; // not read: recorded as a zero run below
      await busy[slot];
      return readFull(fd, ring[slot] as Buffer, len, pos);
    };
    let pos = 0;
    let slot = 0;
    let pending = readInto(0, 0);
    const t = this.timings;
    for (;;) {
      let t0 = performance.now();
      const n = await pending;
      t.readWaitMs += performance.now() - t0;
      if (n === 0) break;
      const buf = ring[slot] as Buffer;
      const start = pos;
      pos += n;
      const more = pos < size && n === Math.min(batchSize, size - start);
      const nextSlot = (slot + 1) % ring.length;
      pending = more ? readInto(nextSlot, pos) : Promise.resolve(0);
      const fresh: { digest: Digest; data: Buffer }[] = [];
      const addZero = (len: number): void => {
        const last = refs[refs.length - 1];
        if (last !== undefined && 'zero' in last) last.zero += len;
        else refs.push({ zero: len });
      };
      const addData = (data: Buffer): void => {
        const digest = digestOf(data);
        refs.push({ digest, size: data.length });
        if (!this.ensured.has(digest)) {
          this.ensured.set(digest, Promise.resolve());
          fresh.push({ digest, data });
        }
      };
      if (holes.length > 0 && holeOver(start, start + n)) {
        addZero(n);
        this.progress(n);
        if (!more) break;
        slot = nextSlot;
        continue;
      }
      t0 = performance.now();
      let hints = knownPages?.(rel, start, buf.subarray(0, n));
      t.knownPagesMs += performance.now() - t0;
      t0 = performance.now();
      if (holes.length > 0) {
        const h: KnownPage[] = hints ? [...hints] : new Array<KnownPage>(Math.ceil(n / cs));
        for (let off = 0; off < n; off += cs)
          if (holeOver(start + off, start + off + cs)) h[off / cs] = 'zero';
        hints = h;
      }
      for (let off = 0; off < n; off += cs) {
        const hint = hints?.[off / cs];
        if (hint === 'zero') {
          addZero(Math.min(cs, n - off));
          continue;
        }
        if (hint !== undefined && n - off >= cs) {
          refs.push({ digest: hint, size: cs });
          continue;
        }
        const piece = buf.subarray(off, Math.min(off + cs, n));
        if (isZero(piece)) {
          addZero(piece.length);
          continue;
        }
        if (piece.length <= PAGE_SIZE) {
          addData(piece);
          continue;
        }
        // Zero pages are recognised page by page, also inside a chunk window: a window is cut
        // into its runs of non-zero pages (chunks) and zero pages (zero runs). Windows stay
        // aligned, so the same content at the same offset always gives the same chunks.
        let runStart = 0;
        for (let p = 0; p < piece.length; p += PAGE_SIZE) {
          const page = piece.subarray(p, Math.min(p + PAGE_SIZE, piece.length));
          if (!isZero(page)) continue;
          if (p > runStart) addData(piece.subarray(runStart, p));
          addZero(page.length);
          runStart = p + page.length;
        }
        if (runStart < piece.length) addData(piece.subarray(runStart));
      }
      t.cutMs += performance.now() - t0;
      busy[slot] = this.storeBatch(fresh);
      this.progress(n);
      if (!more) break;
      slot = nextSlot;
    }
    await Promise.all(busy);
    return refs;
  }

  /** Waits for every put started in this run; rethrows the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.ensured.values());
  }
}

/**
 * Snapshots the tree below `dir` into `store` and returns its manifest (entries in a
 * deterministic order: depth-first, siblings by name) and stats. Regular files, directories
 * and symlinks only; anything else fails with UnsupportedFile naming the path. The tree
 * should not change meanwhile (freeze the container first); a file that does is captured
 * as some mix of old and new content.
 */
export async function snapshotDirectory(
  dir: string,
  store: ChunkStore,
  opts: SnapshotOptions,
): Promise<{ manifest: Manifest; stats: ManifestStats; timings: SnapshotTimings }> {
  const { chunkSize, inlineMax } = checkOptions(opts);
  const root = resolve(dir);
  let rootStat: Stats;
  try {
    rootStat = await stat(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw unsupported(root, 'it does not exist');
    throw err;
  }
  if (!rootStat.isDirectory()) throw unsupported(root, 'it is not a directory');
  const createdAt = new Date((opts.clock ?? systemClock).now()).toISOString();

  const items = await walkTree(root, opts.exclude);
  const chunker = new Chunker(
    store,
    chunkSize,
    inlineMax,
    opts.onProgress,
    opts.chunkSizeFor,
    opts.knownPages,
    opts.holes,
  );
  const files = items.filter((it) => it.st.isFile());
  const t0 = performance.now();
  const fileEntries = await mapLimit(files, FILE_CONCURRENCY, (it) => chunker.file(it));
  await chunker.settle();
  const filesMs = performance.now() - t0;

  const links = items.filter((it) => it.st.isSymbolicLink());
  const targets = await mapLimit(links, 32, readLinkText);
  const byPath = new Map<string, ManifestEntry>();
  files.forEach((it, i) => byPath.set(it.rel, fileEntries[i] as ManifestEntry));
  links.forEach((it, i) =>
    byPath.set(it.rel, { type: 'symlink', path: it.rel, target: targets[i] as string }),
  );
  const entries: ManifestEntry[] = items.map(
    (it) => byPath.get(it.rel) ?? { type: 'dir', path: it.rel, mode: it.st.mode & 0o7777 },
  );
  const manifest: Manifest = { version: MANIFEST_VERSION, label: opts.label, createdAt, entries };
  const t1 = performance.now();
  const stats = manifestStats(manifest);
  const ms = (x: number): number => Math.round(x);
  const { readWaitMs, knownPagesMs, cutMs } = chunker.timings;
  return {
    manifest,
    stats,
    timings: {
      filesMs: ms(filesMs),
      readWaitMs: ms(readWaitMs),
      knownPagesMs: ms(knownPagesMs),
      cutMs: ms(cutMs),
      statsMs: ms(performance.now() - t1),
    },
  };
}

async function readLinkText(item: WalkItem): Promise<string> {
  const raw = await readlink(item.abs, { encoding: 'buffer' });
  try {
    return utf8.decode(raw);
  } catch {
    throw unsupported(item.rel, 'its symlink target is not valid UTF-8');
  }
}

/** A small LRU of chunk fetches, so repeated content is read from the store once. */
class ChunkCache {
  private readonly entries = new Map<Digest, Promise<Buffer>>();
  constructor(
    private readonly store: ChunkStore,
    private readonly capacity: number,
  ) {}

  get(digest: Digest): Promise<Buffer> {
    const hit = this.entries.get(digest);
    if (hit !== undefined) {
      this.entries.delete(digest);
      this.entries.set(digest, hit);
      return hit;
    }
    const p = this.store.get(digest);
    this.entries.set(digest, p);
    p.catch(() => this.entries.delete(digest));
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as Digest;
      this.entries.delete(oldest);
    }
    return p;
  }
}

/** Fails unless `target` is absent (then creates it) or an empty directory; returns whether it was created. */
async function prepareTarget(target: string): Promise<boolean> {
  let names: string[];
  try {
    names = await readdir(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      await mkdir(target, { recursive: true, mode: 0o755 });
      return true;
    }
    if (code === 'ENOTDIR') {
      throw new FailedPreconditionError(ErrorCode.TargetNotEmpty, `${target} exists and is not a directory`);
    }
    throw err;
  }
  if (names.length > 0) {
    throw new FailedPreconditionError(ErrorCode.TargetNotEmpty, `${target} is not empty`, {
      hint: 'materialize into an absent or empty directory',
    });
  }
  return false;
}

/**
 * Recreates the manifest's tree in `targetDir`, which must be absent or empty: contents,
 * permission bits (set last, so read-only directories can be filled), symlinks, and zero
 * runs as holes. The manifest is validated again (ManifestInvalid), no path can leave
 * `targetDir`, and files are created with O_EXCL | O_NOFOLLOW. A chunk missing from `store`
 * fails with ChunkNotFound. On failure, what was created is removed again.
 */
export async function materialize(
  manifest: Manifest,
  store: ChunkStore,
  targetDir: string,
  opts: MaterializeOptions = {},
): Promise<void> {
  const m = parseManifest(manifest);
  const requested = resolve(targetDir);
  const created = await prepareTarget(requested);
  try {
    const base = await realpath(requested);
    await build(m, store, base, opts);
  } catch (err) {
    await cleanup(requested, created);
    throw err;
  }
}

async function cleanup(target: string, created: boolean): Promise<void> {
  try {
    if (created) {
      await rm(target, { recursive: true, force: true });
    } else {
      for (const name of await readdir(target))
        await rm(join(target, name), { recursive: true, force: true });
    }
  } catch {
    // Best effort: the original error is what the caller needs.
  }
}

async function build(m: Manifest, store: ChunkStore, base: string, opts: MaterializeOptions): Promise<void> {
  const prefix = base.endsWith(sep) ? base : base + sep;
  const inside = (path: string): string => {
    const abs = join(base, ...path.split('/'));
    if (!abs.startsWith(prefix)) {
      throw new InvalidArgumentError(
        ErrorCode.ManifestInvalid,
        `invalid manifest: path ${path} leaves the target`,
      );
    }
    return abs;
  };
  const made = new Set<string>([base]);
  const ensureParent = async (abs: string): Promise<void> => {
    const parent = abs.slice(0, abs.lastIndexOf(sep)) || sep;
    if (made.has(parent)) return;
    await mkdir(parent, { recursive: true, mode: 0o755 });
    made.add(parent);
  };

  const dirs = m.entries.filter((e): e is Extract<ManifestEntry, { type: 'dir' }> => e.type === 'dir');
  const depth = (p: string): number => p.split('/').length;
  dirs.sort((a, b) => depth(a.path) - depth(b.path));
  for (const d of dirs) {
    const abs = inside(d.path);
    await ensureParent(abs);
    await mkdir(abs, { mode: 0o700 });
    made.add(abs);
  }

  let done = 0;
  const progress = (n: number): void => {
    done += n;
    opts.onProgress?.(done);
  };
  const cache = new ChunkCache(store, CHUNK_CACHE_ENTRIES);
  const files = m.entries.filter((e): e is Extract<ManifestEntry, { type: 'file' }> => e.type === 'file');
  await mapLimit(files, FILE_CONCURRENCY, async (f) => {
    const abs = inside(f.path);
    await ensureParent(abs);
    const fd = await openFd(abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      if (f.inline !== undefined) {
        await writeAll(fd, Buffer.from(f.inline, 'base64'), 0);
        progress(f.size);
      } else {
        // Contiguous chunks are written together: one writev per WRITE_BATCH_BYTES, several
        // batches in flight (a memory image is tens of thousands of page-sized chunks).
        const batches: { offset: number; size: number; chunks: { digest: Digest; size: number }[] }[] = [];
        const holes = opts.holes?.(f.path) ?? [];
        let hole = 0;
        let offset = 0;
        for (const c of f.chunks ?? []) {
          if ('zero' in c) {
            progress(c.zero);
            offset += c.zero;
            continue;
          }
          let h = holes[hole];
          while (h !== undefined && h.offset + h.length <= offset) h = holes[++hole];
          if (h !== undefined && h.offset <= offset && offset + c.size <= h.offset + h.length) {
            progress(c.size);
            offset += c.size;
            continue;
          }
          const last = batches[batches.length - 1];
          if (last !== undefined && last.offset + last.size === offset && last.size < WRITE_BATCH_BYTES) {
            last.chunks.push(c);
            last.size += c.size;
          } else {
            batches.push({ offset, size: c.size, chunks: [c] });
          }
          offset += c.size;
        }
        await mapLimit(batches, CHUNK_CONCURRENCY, async (batch) => {
          const data: Buffer[] = [];
          for (const c of batch.chunks) data.push(store.peek?.(c.digest) ?? (await cache.get(c.digest)));
          data.forEach((d, i) => {
            const c = batch.chunks[i] as { digest: Digest; size: number };
            if (d.length !== c.size) {
              throw new FailedPreconditionError(
                ErrorCode.ChunkStoreCorrupt,
                `chunk ${c.digest} holds ${d.length} bytes, the manifest says ${c.size}`,
              );
            }
          });
          // One copy into a single buffer and one write: measured faster here than writev of
          // the page buffers (whose per-buffer setup cost dominated).
          await writeAll(
            fd,
            data.length === 1 ? (data[0] as Buffer) : Buffer.concat(data, batch.size),
            batch.offset,
          );
          progress(batch.size);
        });
      }
      // Sets the final size; zero runs not written stay holes. The mode comes last, after
      // the writes, so set-id bits survive.
      await ftruncateFd(fd, f.size);
      await fchmodFd(fd, f.mode);
    } finally {
      await closeFd(fd);
    }
  });

  for (const e of m.entries) {
    if (e.type !== 'symlink') continue;
    const abs = inside(e.path);
    await ensureParent(abs);
    await symlink(e.target, abs);
  }
  for (let i = dirs.length - 1; i >= 0; i--) {
    const d = dirs[i] as Extract<ManifestEntry, { type: 'dir' }>;
    await chmod(inside(d.path), d.mode);
  }
}
