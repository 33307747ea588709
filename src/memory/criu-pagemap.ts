/**
 * Reads CRIU's pagemap images, which say where each page of a `pages-<id>.img` file belongs:
 * `pagemap-<vpid>.img` is a magic header, then a `pagemap_head { pages_id }` message, then one
 * `pagemap_entry { vaddr, nr_pages, in_parent, flags, pages }` per run of pages, each message
 * preceded by its u32 little-endian length. Entries flagged PE_PRESENT have their pages in
 * `pages-<pages_id>.img`, in entry order. (CRIU ≥ 4 writes the page count in field 5 and
 * leaves `nr_pages` 0; older images use `nr_pages`.) Only this much of protobuf is decoded.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_SIZE } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** CRIU's common image magic, then the pagemap image's own. */
export const IMG_COMMON_MAGIC = 0x54564319;
export const PAGEMAP_MAGIC = 0x56084025;
/** pagemap_entry flags. */
export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;

/** One run of a process's pages in CRIU's image. */
export interface PagemapEntry {
  vaddr: number;
  nrPages: number;
  flags: number;
}

/** A parsed pagemap image. */
export interface PagemapImage {
  pagesId: number;
  entries: PagemapEntry[];
}

/** Where the pages of one `pages-<id>.img` file come from: one process, runs in file order. */
export interface PagesFileLayout {
  /** Path relative to the checkpoint's CRIU directory, e.g. `pages-1.img`. */
  file: string;
  /** The process's pid inside its pid namespace (the N of `pagemap-N.img`). */
  vpid: number;
  /**
   * Runs of pages present in the file, each at `fileOffset` (bytes) for `nrPages` pages; `lazy`
   * when CRIU may restore them lazily (userfaultfd: private anonymous memory).
   */
  runs: { vaddr: number; nrPages: number; fileOffset: number; lazy: boolean }[];
  /**
   * Runs CRIU left out of the file for a lazy page server (a `--lazy-pages` dump: flag PE_LAZY
   * without PE_PRESENT): the process still holds them. Empty for an ordinary dump.
   */
  lazyRuns: { vaddr: number; nrPages: number }[];
}

function bad(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.CheckpointCorrupt, `pagemap image: ${message}`);
}

/** Decodes a base-128 varint at `pos` (at most 2^53 − 1); returns value and next position. */
function varint(buf: Buffer, pos: number, end: number): [number, number] {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw bad('truncated varint');
    const b = buf[pos++] as number;
    value += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) {
      if (!Number.isSafeInteger(value)) throw bad('varint out of range');
      return [value, pos];
    }
    mul *= 128;
  }
  throw bad('varint longer than 10 bytes');
}

/** Decodes one message's varint fields (others skipped) into a field → value map. */
function fields(buf: Buffer, start: number, end: number): Map<number, number> {
  const out = new Map<number, number>();
  let pos = start;
  while (pos < end) {
    let key: number;
    [key, pos] = varint(buf, pos, end);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      let v: number;
      [v, pos] = varint(buf, pos, end);
      out.set(field, v);
    } else if (wire === 2) {
      let len: number;
      [len, pos] = varint(buf, pos, end);
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw bad(`unsupported wire type ${wire}`);
  }
  if (pos !== end) throw bad('field runs past its message');
  return out;
}

/** Parses a `pagemap-<vpid>.img`. Throws CheckpointInvalid on anything malformed. */
export function parsePagemapImage(buf: Buffer): PagemapImage {
  if (buf.length < 8) throw bad('shorter than its magic');
  if (buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== PAGEMAP_MAGIC)
    throw bad('wrong magic');
  let pos = 8;
  let pagesId: number | undefined;
  const entries: PagemapEntry[] = [];
  while (pos < buf.length) {
    if (pos + 4 > buf.length) throw bad('truncated message length');
    const len = buf.readUInt32LE(pos);
    pos += 4;
    if (pos + len > buf.length) throw bad('truncated message');
    const f = fields(buf, pos, pos + len);
    pos += len;
    if (pagesId === undefined) {
      const id = f.get(1);
      if (id === undefined) throw bad('head without pages_id');
      pagesId = id;
      continue;
    }
    const vaddr = f.get(1);
    if (vaddr === undefined || vaddr % PAGE_SIZE !== 0) throw bad('entry without an aligned vaddr');
    const nrPages = f.get(5) ?? f.get(2) ?? 0;
    entries.push({ vaddr, nrPages, flags: f.get(4) ?? 0 });
  }
  if (pagesId === undefined) throw bad('no head');
  return { pagesId, entries };
}

/**
 * The parts of a pages file's `runs` that lie within its bytes [offset, offset + length): for
 * each, the file bytes [from, to) it covers there and the address of the page at `from`.
 */
export function runsWithin<R extends PagesFileLayout['runs'][number]>(
  runs: readonly R[],
  offset: number,
  length: number,
): { run: R; from: number; to: number; vaddr: number }[] {
  const end = offset + length;
  const out: { run: R; from: number; to: number; vaddr: number }[] = [];
  for (const run of runs) {
    const runEnd = run.fileOffset + run.nrPages * PAGE_SIZE;
    if (runEnd <= offset || run.fileOffset >= end) continue;
    const from = Math.max(offset, run.fileOffset);
    out.push({ run, from, to: Math.min(end, runEnd), vaddr: run.vaddr + (from - run.fileOffset) });
  }
  return out;
}

/**
 * Every page the layouts' pagemaps mark lazy, as runs per process in address order: those in
 * the pages files (a plain lazy dump) and those a held dump left in the processes.
 */
export function everyLazyRun(
  layouts: readonly PagesFileLayout[],
): { vpid: number; vaddr: number; nrPages: number }[] {
  return layouts.flatMap((l) =>
    [...l.runs.filter((r) => r.lazy), ...l.lazyRuns]
      .sort((a, b) => a.vaddr - b.vaddr)
      .map((r) => ({ vpid: l.vpid, vaddr: r.vaddr, nrPages: r.nrPages })),
  );
}

/** The layout of the pages file process `vpid`'s pagemap image `img` describes. */
export function pagesLayoutOf(vpid: number, img: PagemapImage): PagesFileLayout {
  let offset = 0;
  const runs: PagesFileLayout['runs'] = [];
  const lazyRuns: PagesFileLayout['lazyRuns'] = [];
  for (const e of img.entries) {
    if ((e.flags & PE_PRESENT) === 0) {
      if ((e.flags & PE_LAZY) !== 0 && e.nrPages > 0) lazyRuns.push({ vaddr: e.vaddr, nrPages: e.nrPages });
      continue;
    }
    runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, fileOffset: offset, lazy: (e.flags & PE_LAZY) !== 0 });
    offset += e.nrPages * PAGE_SIZE;
  }
  return { file: `pages-${img.pagesId}.img`, vpid, runs, lazyRuns };
}

/** The vpid N of a process's pagemap image name `pagemap-N.img`, or undefined for other names. */
export function pagemapVpid(name: string): number | undefined {
  const m = /^pagemap-(\d+)\.img$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * The layout of every `pages-<id>.img` of a CRIU image directory that belongs to a process
 * (`pagemap-<vpid>.img`; shared-memory pagemaps are left out: their pages are not a process's).
 */
export async function readPagesLayouts(criuDir: string): Promise<PagesFileLayout[]> {
  const out: PagesFileLayout[] = [];
  for (const name of await readdir(criuDir)) {
    const vpid = pagemapVpid(name);
    if (vpid === undefined) continue;
    out.push(pagesLayoutOf(vpid, parsePagemapImage(await readFile(join(criuDir, name)))));
  }
  return out;
}
