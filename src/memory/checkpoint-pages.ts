/**
 * A checkpoint's lazy process memory as its manifest names it: where each page CRIU may restore
 * lazily lies in the pages files (from the pagemap images), and which chunk holds it (from the
 * pages files' page-sized chunk lists). A destination that holds every chunk of the manifest can
 * then serve a lazy restore straight from its chunk store instead of first writing every page
 * into the pages files: pre-copy's final phase at 256 MiB spent ~0.65 s reassembling them, most
 * of it while the container was stopped.
 *
 * Contract: `read` returns exactly the bytes the manifest's pages files hold at those pages;
 * `holes` are the byte ranges of those pages in the files, which may then stay unwritten.
 */
import { PAGE_SIZE, type Digest, type Manifest, type ManifestEntry } from '../core/chunks.js';
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import { pagemapVpid, pagesLayoutOf, parsePagemapImage, type PagesFileLayout } from './criu-pagemap.js';
import { pageRefs, type HeldPage } from './memory-index.js';

type FileEntry = Extract<ManifestEntry, { type: 'file' }>;

/** A run of one process's pages: `nrPages` pages from `vaddr` on. */
export interface ProcessPageRun {
  vpid: number;
  vaddr: number;
  nrPages: number;
}

/** The lazy pages of a checkpoint manifest. */
export interface CheckpointPages {
  /** Every lazy page, as runs per process in address order. */
  readonly runs: readonly ProcessPageRun[];
  /** How many pages `runs` hold. */
  readonly pages: number;
  /** The byte ranges of a pages file (manifest path) its lazy pages fill; undefined for other files. */
  holes(relPath: string): readonly { offset: number; length: number }[] | undefined;
  /** The bytes of `n` lazy pages of `vpid` from `vaddr` on; undefined if any is not a lazy page. */
  read(vpid: number, vaddr: number, n: number): Promise<Buffer | undefined>;
}

/** What the pages of one process are, by address. */
interface ProcessPages {
  /** Lazy runs in address order, each with its first page's index into `refs`. */
  runs: { vaddr: number; nrPages: number; page: number }[];
  refs: HeldPage[];
}

function corrupt(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.CheckpointCorrupt, `checkpoint manifest: ${message}`);
}

/** The bytes of a manifest file: inline, or its chunks (zero runs as zeros) through `chunk`. */
export async function manifestFileBytes(
  e: FileEntry,
  chunk: (d: Digest) => Promise<Buffer>,
): Promise<Buffer> {
  if (e.inline !== undefined) return Buffer.from(e.inline, 'base64');
  return Buffer.concat(
    await Promise.all((e.chunks ?? []).map((c) => ('digest' in c ? chunk(c.digest) : Buffer.alloc(c.zero)))),
  );
}

/** The process pagemap images (`pagemap-<vpid>.img`) of the checkpoint `manifest`'s `dir/`. */
export function pagemapEntries(manifest: Manifest, dir = 'criu'): { vpid: number; entry: FileEntry }[] {
  const out: { vpid: number; entry: FileEntry }[] = [];
  for (const e of manifest.entries) {
    if (e.type !== 'file' || !e.path.startsWith(`${dir}/`)) continue;
    const vpid = pagemapVpid(e.path.slice(dir.length + 1));
    if (vpid !== undefined) out.push({ vpid, entry: e });
  }
  return out;
}

/**
 * The lazy pages of the checkpoint `manifest` (CRIU's images under `dir/`), their contents read
 * through `chunk`. Undefined when it has none. Throws CheckpointCorrupt when a pagemap names
 * pages its pages file does not hold in page-sized chunks.
 */
export async function checkpointPages(
  manifest: Manifest,
  chunk: (d: Digest) => Promise<Buffer>,
  dir = 'criu',
): Promise<CheckpointPages | undefined> {
  const files = new Map<string, FileEntry>();
  for (const e of manifest.entries) if (e.type === 'file') files.set(e.path, e);
  const layouts: PagesFileLayout[] = [];
  for (const { vpid, entry } of pagemapEntries(manifest, dir))
    layouts.push(pagesLayoutOf(vpid, parsePagemapImage(await manifestFileBytes(entry, chunk))));
  const procs = new Map<number, ProcessPages>();
  const holes = new Map<string, { offset: number; length: number }[]>();
  const runs: ProcessPageRun[] = [];
  let pages = 0;
  for (const l of layouts) {
    const lazy = l.runs.filter((r) => r.lazy);
    if (lazy.length === 0) continue;
    const path = `${dir}/${l.file}`;
    const e = files.get(path);
    if (!e) throw corrupt(`${path} is missing`);
    const refs = pageRefs(e);
    const p: ProcessPages = { runs: [], refs };
    for (const r of lazy) {
      if (r.fileOffset + r.nrPages * PAGE_SIZE > e.size)
        throw corrupt(`${path} is shorter than pagemap-${l.vpid}.img says`);
      p.runs.push({ vaddr: r.vaddr, nrPages: r.nrPages, page: r.fileOffset / PAGE_SIZE });
      runs.push({ vpid: l.vpid, vaddr: r.vaddr, nrPages: r.nrPages });
      pages += r.nrPages;
    }
    p.runs.sort((a, b) => a.vaddr - b.vaddr);
    procs.set(l.vpid, p);
    holes.set(
      path,
      lazy
        .map((r) => ({ offset: r.fileOffset, length: r.nrPages * PAGE_SIZE }))
        .sort((a, b) => a.offset - b.offset),
    );
  }
  if (pages === 0) return undefined;
  runs.sort((a, b) => a.vpid - b.vpid || a.vaddr - b.vaddr);

  const refAt = (p: ProcessPages, vaddr: number): HeldPage | undefined => {
    let lo = 0;
    let hi = p.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = p.runs[mid] as ProcessPages['runs'][number];
      if (vaddr < r.vaddr) hi = mid - 1;
      else if (vaddr >= r.vaddr + r.nrPages * PAGE_SIZE) lo = mid + 1;
      else return p.refs[r.page + (vaddr - r.vaddr) / PAGE_SIZE];
    }
    return undefined;
  };
  return {
    runs,
    pages,
    holes: (relPath) => holes.get(relPath),
    read: async (vpid, vaddr, n) => {
      const p = procs.get(vpid);
      if (!p) return undefined;
      const out = Buffer.alloc(n * PAGE_SIZE);
      for (let i = 0; i < n; i++) {
        const ref = refAt(p, vaddr + i * PAGE_SIZE);
        if (ref === undefined) return undefined;
        if (ref !== 'zero') (await chunk(ref)).copy(out, i * PAGE_SIZE);
      }
      return out;
    },
  };
}
