/**
 * Which pages of a checkpoint stay on the source in a lazy final phase (post-copy, hybrid).
 * CRIU restores private anonymous memory lazily (pagemap flag PE_LAZY); of those pages, the ones
 * the destination does not already hold stay behind: the snapshot records them as holes and they
 * are listed as remote runs, to be fetched after the restore. Everything else (non-lazy pages,
 * pages pre-copy rounds brought and the frozen dump proves unchanged) crosses before it, as usual.
 */
import { join } from 'node:path';
import { PAGE_SIZE } from '../core/chunks.js';
import type { KnownPage, SnapshotOptions } from '../chunks/index.js';
import { everyLazyRun, readPagesLayouts, runsWithin, type PagesFileLayout } from '../memory/criu-pagemap.js';
import type { RemoteRun } from '../pages/lazy-page-broker.js';

type KnownPagesHook = NonNullable<SnapshotOptions['knownPages']>;

/** A plan for the final snapshot: its hooks, then the remote runs it found. */
export interface LazyPagesPlan {
  /** Hybrid: says per page read whether the destination holds it. */
  hook?: KnownPagesHook;
  /** Post-copy: the file ranges left unread (every lazy page stays on the source). */
  holes?: NonNullable<SnapshotOptions['holes']>;
  /** The remote runs, coalesced, once the snapshot has run. */
  remote(): RemoteRun[];
  /**
   * The remote runs are exactly the images' lazy pages (post-copy, a held dump): the destination
   * reads them from the pagemaps it receives, and the restore request need not list them (at
   * 1 GiB of scattered memory, some 35,000 runs: ~1.6 MB of JSON, ~0.1 s on a 100 Mbit/s link).
   */
  everyLazyPage: boolean;
}

/**
 * Plans the lazy final phase of the checkpoint in `checkpointDir` (its CRIU images under
 * `criu/`). `known` (hybrid) says which pages the destination already holds; without it
 * (post-copy) every lazy page stays on the source. `held`: a held dump, whose lazy pages are
 * all still in the processes: they all stay on the source (the destination learns which of
 * them it holds from the source's verdicts), and `known` applies to the pages in the files.
 */
export async function planLazyPages(
  checkpointDir: string,
  known?: KnownPagesHook,
  opts: { held?: boolean; layouts?: Promise<PagesFileLayout[]> } = {},
): Promise<LazyPagesPlan> {
  const layouts = await (opts.layouts ?? readPagesLayouts(join(checkpointDir, 'criu')));
  if (!known || opts.held) {
    // Post-copy: no page needs reading to know it stays behind.
    const holes = new Map(
      layouts.map((l) => [
        `criu/${l.file}`,
        l.runs.filter((r) => r.lazy).map((r) => ({ offset: r.fileOffset, length: r.nrPages * PAGE_SIZE })),
      ]),
    );
    // Lazy pages in the file (a plain dump), and those a held dump left in the processes.
    const runs = everyLazyRun(layouts);
    return {
      holes: (rel) => holes.get(rel),
      remote: () => runs,
      everyLazyPage: true,
      ...(known ? { hook: known } : {}),
    };
  }
  const byFile = new Map(layouts.map((l) => [`criu/${l.file}`, l]));
  // Remote pages per process, as page numbers in the order the snapshot meets them.
  const remote = new Map<number, number[]>();
  const hook: KnownPagesHook = (rel, offset, data) => {
    const l = byFile.get(rel);
    if (l === undefined) return known(rel, offset, data);
    const n = data.length / PAGE_SIZE;
    const base = known(rel, offset, data);
    const out: KnownPage[] = base ? [...base] : new Array<KnownPage>(n);
    for (const { run, from, to, vaddr } of runsWithin(l.runs, offset, data.length)) {
      if (!run.lazy) continue;
      let pages = remote.get(l.vpid);
      if (!pages) remote.set(l.vpid, (pages = []));
      for (let b = from; b < to; b += PAGE_SIZE) {
        const i = (b - offset) / PAGE_SIZE;
        if (out[i] !== undefined) continue; // the destination holds it
        out[i] = 'zero'; // a hole there, filled from the source after the restore
        pages.push((vaddr + (b - from)) / PAGE_SIZE);
      }
    }
    return out;
  };
  return {
    hook,
    everyLazyPage: false,
    remote: () => {
      const runs: RemoteRun[] = [];
      for (const [vpid, pages] of [...remote].sort((a, b) => a[0] - b[0])) {
        pages.sort((a, b) => a - b);
        let last: RemoteRun | undefined;
        for (const pg of pages) {
          if (last && last.vaddr / PAGE_SIZE + last.nrPages === pg) last.nrPages++;
          else runs.push((last = { vpid, vaddr: pg * PAGE_SIZE, nrPages: 1 }));
        }
      }
      return runs;
    },
  };
}
