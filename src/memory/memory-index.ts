/**
 * Which page of which process each chunk of a pre-copy round's manifest is. A round's manifest
 * lists a process's known pages as the file `memory/<vpid>` (pages in address order, without
 * their addresses); the file `memory/<vpid>.map` beside it says where they are: runs of
 * (u64 first address, u64 pages), little-endian, in address order, covering the pages of
 * `memory/<vpid>` one for one. With both, a destination can name the content it holds for any
 * page of the container, which is what a lazy final phase serves its restored processes from.
 */
import { PAGE_SIZE, type ChunkRef, type Digest, type Manifest, type ManifestEntry } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';

/** A run of pages of one process: `nrPages` pages from `vaddr` on. */
export interface PageRun {
  vaddr: number;
  nrPages: number;
}

const RUN_BYTES = 16;

/** The manifest path of process `vpid`'s pages, and of their address map. */
export function memoryPath(vpid: number): string {
  return `memory/${vpid}`;
}
export function memoryMapPath(vpid: number): string {
  return `${memoryPath(vpid)}.map`;
}

/** Encodes sorted, disjoint page runs as a `.map` file. */
export function encodePageRuns(runs: readonly PageRun[]): Buffer {
  const out = Buffer.alloc(runs.length * RUN_BYTES);
  runs.forEach((r, i) => {
    out.writeBigUInt64LE(BigInt(r.vaddr), i * RUN_BYTES);
    out.writeBigUInt64LE(BigInt(r.nrPages), i * RUN_BYTES + 8);
  });
  return out;
}

function corrupt(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.CheckpointCorrupt, `memory map: ${message}`);
}

/** Decodes a `.map` file; rejects runs out of order, overlapping, unaligned or empty. */
export function decodePageRuns(data: Buffer): PageRun[] {
  if (data.length % RUN_BYTES !== 0) throw corrupt(`${data.length} bytes is not a whole number of runs`);
  const runs: PageRun[] = [];
  let end = 0;
  for (let o = 0; o < data.length; o += RUN_BYTES) {
    const vaddr = Number(data.readBigUInt64LE(o));
    const nrPages = Number(data.readBigUInt64LE(o + 8));
    if (!Number.isSafeInteger(vaddr) || vaddr % PAGE_SIZE !== 0 || vaddr < end)
      throw corrupt(`run at 0x${vaddr.toString(16)} is unaligned or out of order`);
    if (nrPages <= 0 || !Number.isSafeInteger(vaddr + nrPages * PAGE_SIZE))
      throw corrupt(`run at 0x${vaddr.toString(16)} has ${nrPages} pages`);
    runs.push({ vaddr, nrPages });
    end = vaddr + nrPages * PAGE_SIZE;
  }
  return runs;
}

/** What a destination holds for one page: a chunk, or zeros. */
export type HeldPage = Digest | 'zero';

/** The pages one process's round manifest names, by address. */
export class ProcessPageIndex {
  /** First page index (into `pages`) of each run. */
  private readonly starts: number[] = [];

  constructor(
    private readonly runs: readonly PageRun[],
    private readonly pages: readonly HeldPage[],
  ) {
    let n = 0;
    for (const r of runs) {
      this.starts.push(n);
      n += r.nrPages;
    }
    if (n !== pages.length) throw corrupt(`the map names ${n} pages, the memory file holds ${pages.length}`);
  }

  get size(): number {
    return this.pages.length;
  }

  /** What is held for the page at `vaddr`, or undefined. */
  lookup(vaddr: number): HeldPage | undefined {
    let lo = 0;
    let hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.runs[mid] as PageRun;
      if (vaddr < r.vaddr) hi = mid - 1;
      else if (vaddr >= r.vaddr + r.nrPages * PAGE_SIZE) lo = mid + 1;
      else return this.pages[(this.starts[mid] as number) + (vaddr - r.vaddr) / PAGE_SIZE];
    }
    return undefined;
  }
}

/** Per-page refs of a file entry cut into page-sized chunks (zero runs split into pages). */
export function pageRefs(e: Extract<ManifestEntry, { type: 'file' }>): HeldPage[] {
  const out: HeldPage[] = [];
  for (const c of e.chunks ?? ([] as ChunkRef[])) {
    if ('zero' in c) {
      if (c.zero % PAGE_SIZE !== 0) throw corrupt(`${e.path} has a zero run of ${c.zero} bytes`);
      for (let k = 0; k < c.zero / PAGE_SIZE; k++) out.push('zero');
    } else {
      if (c.size !== PAGE_SIZE) throw corrupt(`${e.path} has a chunk of ${c.size} bytes`);
      out.push(c.digest);
    }
  }
  return out;
}

/**
 * The page index of every process a round manifest names. `readFile` returns a map file's bytes
 * (inline or from its chunks). Processes without a map are left out.
 */
export async function readMemoryIndex(
  manifest: Manifest,
  readFile: (e: Extract<ManifestEntry, { type: 'file' }>) => Promise<Buffer>,
): Promise<Map<number, ProcessPageIndex>> {
  const files = new Map<string, Extract<ManifestEntry, { type: 'file' }>>();
  for (const e of manifest.entries) if (e.type === 'file') files.set(e.path, e);
  const out = new Map<number, ProcessPageIndex>();
  for (const [path, e] of files) {
    const m = /^memory\/(\d+)$/.exec(path);
    if (!m) continue;
    const vpid = Number(m[1]);
    const map = files.get(memoryMapPath(vpid));
    if (!map) continue;
    out.set(vpid, new ProcessPageIndex(decodePageRuns(await readFile(map)), pageRefs(e)));
  }
  return out;
}

/**
 * What is held for a page through layers of indexes (vpid → index), the first layer that names
 * the page winning: closing passes, the latest first, over the last round. Undefined where no
 * layer names it.
 */
export function layeredLookup(
  layers: readonly ReadonlyMap<number, ProcessPageIndex>[],
): (vpid: number, vaddr: number) => HeldPage | undefined {
  return (vpid, vaddr) => {
    for (const l of layers) {
      const h = l.get(vpid)?.lookup(vaddr);
      if (h !== undefined) return h;
    }
    return undefined;
  };
}
