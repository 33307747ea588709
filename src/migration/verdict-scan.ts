/**
 * The source's verdicts in a hybrid final phase: with the container frozen and its memory left
 * in place by CRIU's lazy dump, every page the dump left out is read through /proc/PID/mem and
 * compared with the copy the last pre-copy round gave the destination. Equal: `known`, the
 * destination serves it from its own store. Different, or never sent: the destination fetches it.
 * The scan runs while the small state crosses and the destination restores, so it is off the
 * stopped phase; it judges first the pages written during the rounds (those a restored process
 * touches first), then the rest in address order, and pushes verdicts as it goes.
 *
 * Contract: a page is judged `known` only on an exact byte match with the content the
 * destination holds for it (MemoryMirror.knownPages), and only while the processes are frozen.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { PAGE_SIZE } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode, InternalError } from '../core/errors.js';
import type { KnownPage } from '../chunks/index.js';
import type { PageRun } from '../memory/memory-index.js';
import { findRun, type VerdictRun } from '../pages/page-fetch.js';

/** What the scan needs of the pre-copy rounds' record (a MemoryMirror). */
export interface VerdictMirror {
  knownPages(vpid: number, vaddr: number, data: Buffer): KnownPage[];
  rewrittenPages(vpid: number): number[];
}

/** Options of `scanVerdicts`. */
export interface VerdictScanOptions {
  mirror: VerdictMirror;
  /** The frozen processes: virtual pid → pid on this host. */
  processes: ReadonlyMap<number, number>;
  /** Per process, the pages the dump left in it (sorted, disjoint). */
  lazyRuns: ReadonlyMap<number, readonly PageRun[]>;
  /** Receives verdicts as they are found; called once more with [] at the end. */
  push(runs: VerdictRun[]): void;
  clock: Clock;
  signal?: AbortSignal;
  /** Pages read at once. Default 1024 (4 MiB). */
  batchPages?: number;
  /** How `/proc/PID/mem` is opened (tests). */
  openMemory?: (pid: number) => Promise<Pick<FileHandle, 'read' | 'close'>>;
}

/** What a scan found. */
export interface VerdictScanResult {
  pages: number;
  known: number;
  changed: number;
  /** Pages written during the rounds, judged first, and when that pass ended (ms). */
  firstPassPages: number;
  firstPassMs: number;
  ms: number;
}

/** Judges every page the dump left in the processes; see the module comment. */
export async function scanVerdicts(o: VerdictScanOptions): Promise<VerdictScanResult> {
  const t0 = o.clock.monotonic();
  const batch = o.batchPages ?? 1024;
  const res: VerdictScanResult = { pages: 0, known: 0, changed: 0, firstPassPages: 0, firstPassMs: 0, ms: 0 };
  const files = new Map<number, Pick<FileHandle, 'read' | 'close'>>();
  const memory = async (vpid: number): Promise<Pick<FileHandle, 'read' | 'close'>> => {
    let f = files.get(vpid);
    if (!f) {
      const pid = o.processes.get(vpid);
      if (pid === undefined) throw new InternalError(ErrorCode.Internal, `process ${vpid} is not held`);
      f = await (o.openMemory ?? ((p) => open(`/proc/${p}/mem`, 'r')))(pid);
      files.set(vpid, f);
    }
    return f;
  };
  let out: VerdictRun[] = [];
  const flush = (): void => {
    if (out.length > 0) o.push(out);
    out = [];
  };
  /** Judges `n` pages of `vpid` from `vaddr`, skipping those in `skip` (page numbers). */
  const judge = async (vpid: number, vaddr: number, n: number, skip?: ReadonlySet<number>): Promise<void> => {
    if (o.signal?.aborted) throw new InternalError(ErrorCode.Internal, 'verdict scan aborted');
    const data = Buffer.allocUnsafe(n * PAGE_SIZE);
    const { bytesRead } = await (await memory(vpid)).read(data, 0, data.length, vaddr);
    const got = Math.floor(bytesRead / PAGE_SIZE);
    const known = o.mirror.knownPages(vpid, vaddr, data.subarray(0, got * PAGE_SIZE));
    for (let i = 0; i < n; i++) {
      const page = vaddr / PAGE_SIZE + i;
      if (skip?.has(page)) continue;
      // A page that cannot be read is judged changed: the destination asks for it and learns why.
      const k = i < got && known[i] !== undefined;
      res.pages++;
      if (k) res.known++;
      else res.changed++;
      const last = out[out.length - 1];
      const at = page * PAGE_SIZE;
      if (last && last.vpid === vpid && last.known === k && last.vaddr + last.nrPages * PAGE_SIZE === at)
        last.nrPages++;
      else out.push({ vpid, vaddr: at, nrPages: 1, known: k });
    }
  };
  try {
    // First the pages written during the rounds, as contiguous ranges within the lazy runs.
    const first = new Map<number, Set<number>>();
    for (const [vpid, runs] of o.lazyRuns) {
      const inRuns = o.mirror.rewrittenPages(vpid).filter((pg) => findRun(runs, pg * PAGE_SIZE));
      first.set(vpid, new Set(inRuns));
      for (let i = 0; i < inRuns.length;) {
        let j = i + 1;
        const start = inRuns[i] as number;
        const run = findRun(runs, start * PAGE_SIZE) as PageRun;
        const runEnd = run.vaddr / PAGE_SIZE + run.nrPages;
        while (
          j < inRuns.length &&
          inRuns[j] === start + (j - i) &&
          j - i < batch &&
          (inRuns[j] as number) < runEnd
        )
          j++;
        await judge(vpid, start * PAGE_SIZE, j - i);
        i = j;
        if (out.length >= 4096) flush();
      }
      res.firstPassPages += inRuns.length;
    }
    flush();
    res.firstPassMs = Math.round(o.clock.monotonic() - t0);
    // Then every other page, in address order.
    for (const [vpid, runs] of o.lazyRuns) {
      const skip = first.get(vpid);
      for (const r of runs) {
        for (let k = 0; k < r.nrPages; k += batch) {
          await judge(vpid, r.vaddr + k * PAGE_SIZE, Math.min(batch, r.nrPages - k), skip);
          flush();
        }
      }
    }
    o.push([]);
  } finally {
    for (const f of files.values()) await f.close().catch(() => undefined);
  }
  res.ms = Math.round(o.clock.monotonic() - t0);
  return res;
}
