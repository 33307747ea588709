/**
 * The source's verdicts in a hybrid final phase: with the container frozen and its memory left
 * in place by CRIU's lazy dump, every page the dump left out is read through /proc/PID/mem and
 * compared with the copy the last pre-copy round gave the destination. Equal: `known`, the
 * destination serves it from its own store. Different, or never sent: the destination fetches it.
 * The scan runs while the small state crosses and the destination restores, so it is off the
 * stopped phase; it judges first the pages written during the rounds (those a restored process
 * touches first), then the rest in address order, and pushes verdicts as it goes.
 *
 * With write tracking (the mirror's `trackedVerdicts`), only the pages written since their copies were
 * read, and those not tracked, are read now; every other page's verdict follows from the tracker
 * at once, and the verdicts end there. The bytes of those pages are then compared anyway, after
 * the restore, as an audit of the tracker (`auditMismatches`, which must be 0).
 *
 * Contract: a page is judged `known` only on an exact byte match with the content the
 * destination holds for it (MemoryMirror.knownPages), or, with write tracking, when the kernel
 * reported no write to it since that content was read; and only while the processes are frozen.
 */
import { closeSync, openSync, read as fsRead, readSync } from 'node:fs';
import { PAGE_SIZE } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import { ErrorCode, InternalError } from '../core/errors.js';
import type { KnownPage } from '../chunks/index.js';
import type { PageRun } from '../memory/memory-index.js';
import type { PageVerdictRun } from '../memory/memory-mirror.js';
import { findRun, type VerdictRun } from '../pages/page-fetch.js';

/** What the scan needs of the pre-copy rounds' record (a MemoryMirror). */
export interface VerdictMirror {
  /** Pages tracked. */
  readonly pages: number;
  knownPages(vpid: number, vaddr: number, data: Buffer): KnownPage[];
  rewrittenPages(vpid: number): number[];
  /** Whether pages are write-tracked (then `trackedVerdicts` judges most of them). */
  readonly tracking?: boolean;
  /** With write tracking: the verdicts it gives and the pages left to read (MemoryMirror.trackedVerdicts). */
  trackedVerdicts?(
    vpid: number,
    runs: readonly PageRun[],
  ): { settled: PageVerdictRun[]; suspect: number[] } | undefined;
  /** Makes `trackedVerdicts` at the freeze cheaper; called once the copies last change (MemoryMirror.prepareVerdicts). */
  prepareVerdicts?(): void;
}

/** Options of `scanVerdicts`. */
export interface VerdictScanOptions {
  mirror: VerdictMirror;
  /** The frozen processes: virtual pid → pid on this host. */
  processes: ReadonlyMap<number, number>;
  /** Per process, the pages the dump left in it (sorted, disjoint). */
  lazyRuns: ReadonlyMap<number, readonly PageRun[]>;
  /** Receives verdicts as they are found; called once more with [] at the end (also after a failure). */
  push(runs: VerdictRun[]): void;
  clock: Clock;
  signal?: AbortSignal;
  /** Pages read at once. Default 256 (1 MiB). */
  batchPages?: number;
  /**
   * Reads process memory at `vaddr` into `buf`, returning the bytes read (tests). Default:
   * /proc/PID/mem: the first pass's small windows read synchronously (one system call each, no
   * thread-pool round trip), the second pass's batches on the thread pool, the next one read
   * while this one is compared (the copy out of the process is most of a batch's cost).
   */
  readMemory?: (pid: number, buf: Buffer, vaddr: number) => number;
  /**
   * The second pass (every page not written during the rounds) starts once this settles (or
   * `signal` aborts): in a hybrid final phase, the destination's restore, which needs the
   * machine's CPU more than those pages need verdicts (a fault on a page not judged yet fetches
   * it from the source). With write tracking the second pass only audits it: then the end of the
   * destination's fill, so that it takes no CPU from the service's first moments there.
   */
  secondPassAfter?: Promise<unknown>;
}

/** Runs of fewer pages than this (256 KiB) are judged in the first pass, whole (see there). */
const SMALL_RUN_PAGES = 64;

/** Rewritten pages this close are read together (one read instead of several). */
const MERGE_GAP_PAGES = 16;

/** What a scan found. */
export interface VerdictScanResult {
  pages: number;
  known: number;
  changed: number;
  /** Pages written during the rounds and those of small runs, judged first, and when that pass ended (ms). */
  firstPassPages: number;
  firstPassMs: number;
  /** With write tracking: pages judged by it without reading, and of those known, how many the audit compared and found different. */
  settledPages?: number;
  audited?: number;
  auditMismatches?: number;
  ms: number;
}

/** Judges every page the dump left in the processes; see the module comment. */
export async function scanVerdicts(o: VerdictScanOptions): Promise<VerdictScanResult> {
  const t0 = o.clock.monotonic();
  const batch = o.batchPages ?? 256;
  const res: VerdictScanResult = { pages: 0, known: 0, changed: 0, firstPassPages: 0, firstPassMs: 0, ms: 0 };
  const fds = new Map<number, number>();
  /** /proc/PID/mem of `pid`, opened once. */
  const memFd = (pid: number): number => {
    let fd = fds.get(pid);
    if (fd === undefined) fds.set(pid, (fd = openSync(`/proc/${pid}/mem`, 'r')));
    return fd;
  };
  const read =
    o.readMemory ??
    ((pid: number, buf: Buffer, vaddr: number): number => readSync(memFd(pid), buf, 0, buf.length, vaddr));
  /** The second pass's reads: synchronous only with a test reader. */
  const readAhead = async (pid: number, buf: Buffer, vaddr: number): Promise<number> => {
    if (o.readMemory) return o.readMemory(pid, buf, vaddr);
    const fd = memFd(pid);
    return new Promise((done, fail) =>
      fsRead(fd, buf, 0, buf.length, vaddr, (err, n) => (err ? fail(err) : done(n))),
    );
  };
  let buffer = Buffer.allocUnsafe(batch * PAGE_SIZE);
  let out: VerdictRun[] = [];
  /** The second pass's read in flight. */
  let next: Promise<number> | undefined;
  const flush = (): void => {
    if (out.length > 0) o.push(out);
    out = [];
  };
  let ended = false;
  /** The end of the verdicts (once): the destination fetches every page not judged by then. */
  const end = (): void => {
    if (ended) return;
    ended = true;
    o.push([]);
  };
  const pidOf = (vpid: number): number => {
    if (o.signal?.aborted) throw new InternalError(ErrorCode.Internal, 'verdict scan aborted');
    const pid = o.processes.get(vpid);
    if (pid === undefined) throw new InternalError(ErrorCode.Internal, `process ${vpid} is not held`);
    return pid;
  };
  /** Judges `n` pages of `vpid` from `vaddr`: not those in `skip`, only those in `only` (page numbers). */
  const judge = async (
    vpid: number,
    vaddr: number,
    n: number,
    skip?: ReadonlySet<number>,
    only?: ReadonlySet<number>,
  ): Promise<void> => {
    const pid = pidOf(vpid);
    // One buffer for every read: fresh memory would cost a page fault per page read.
    if (buffer.length < n * PAGE_SIZE) buffer = Buffer.allocUnsafe(n * PAGE_SIZE);
    const data = buffer.subarray(0, n * PAGE_SIZE);
    let bytesRead = 0;
    try {
      bytesRead = read(pid, data, vaddr);
    } catch {
      // Unreadable: its pages are judged changed (the destination asks for them, and learns why).
    }
    classify(vpid, vaddr, n, data, bytesRead, skip, only);
    // Let the final transfer and the page source run between batches.
    await new Promise<void>((r) => setImmediate(r));
  };
  /** Records the verdicts of `n` pages of `vpid` from `vaddr`, of which `bytesRead` were read into `data`. */
  const classify = (
    vpid: number,
    vaddr: number,
    n: number,
    data: Buffer,
    bytesRead: number,
    skip?: ReadonlySet<number>,
    only?: ReadonlySet<number>,
  ): void => {
    const got = Math.floor(bytesRead / PAGE_SIZE);
    const known = o.mirror.knownPages(vpid, vaddr, data.subarray(0, got * PAGE_SIZE));
    for (let i = 0; i < n; i++) {
      const page = vaddr / PAGE_SIZE + i;
      if (skip?.has(page) || (only && !only.has(page))) continue;
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
  /** The audit of `n` pages the tracker judged known: counts those whose bytes differ from the destination's. */
  const audit = (vpid: number, vaddr: number, data: Buffer, bytesRead: number): void => {
    const got = Math.floor(bytesRead / PAGE_SIZE);
    const known = o.mirror.knownPages(vpid, vaddr, data.subarray(0, got * PAGE_SIZE));
    res.audited = (res.audited ?? 0) + got;
    for (let i = 0; i < got; i++)
      if (known[i] === undefined) res.auditMismatches = (res.auditMismatches ?? 0) + 1;
  };
  try {
    // First the pages written during the rounds, read in windows over neighbours within a run.
    // With write tracking: exactly the pages it cannot vouch for; the others are judged here.
    const first = new Map<number, Set<number>>();
    /** Per process whose writes were tracked, the verdicts that follow from it. */
    const tracked = new Map<number, PageVerdictRun[]>();
    for (const [vpid, runs] of o.lazyRuns) {
      let set: Set<number>;
      const tv = o.mirror.trackedVerdicts?.(vpid, runs);
      if (tv) {
        set = new Set(tv.suspect);
        tracked.set(vpid, tv.settled);
      } else {
        set = new Set(o.mirror.rewrittenPages(vpid).filter((pg) => findRun(runs, pg * PAGE_SIZE)));
        // And every page of the small runs: the stack, the heap, the data of the program and its
        // libraries, which a restored process touches at once whatever it does.
        for (const r of runs) {
          if (r.nrPages >= SMALL_RUN_PAGES) continue;
          for (let k = 0; k < r.nrPages; k++) set.add(r.vaddr / PAGE_SIZE + k);
        }
      }
      const pages = [...set].sort((a, b) => a - b);
      first.set(vpid, set);
      for (let i = 0; i < pages.length;) {
        const start = pages[i] as number;
        const run = findRun(runs, start * PAGE_SIZE) as PageRun;
        const runEnd = run.vaddr / PAGE_SIZE + run.nrPages;
        let j = i + 1;
        for (; j < pages.length; j++) {
          const pg = pages[j] as number;
          if (pg - (pages[j - 1] as number) > MERGE_GAP_PAGES || pg - start >= batch || pg >= runEnd) break;
        }
        await judge(vpid, start * PAGE_SIZE, (pages[j - 1] as number) - start + 1, undefined, set);
        i = j;
        if (out.length >= 4096) flush();
      }
      res.firstPassPages += pages.length;
    }
    flush();
    if (tracked.size > 0) {
      res.settledPages = 0;
      res.audited = 0;
      res.auditMismatches = 0;
      for (const [vpid, runs] of tracked) {
        for (const r of runs) {
          res.pages += r.n;
          res.settledPages += r.n;
          if (r.known) res.known += r.n;
          else res.changed += r.n;
          out.push({ vpid, vaddr: r.page * PAGE_SIZE, nrPages: r.n, known: r.known });
          if (out.length >= 4096) flush();
        }
      }
      flush();
      // Every page of every process judged: what follows only audits the tracker.
      if (tracked.size === o.lazyRuns.size) end();
    }
    res.firstPassMs = Math.round(o.clock.monotonic() - t0);
    if (o.secondPassAfter) {
      // An abort ends the wait (pidOf then throws).
      const signal = o.signal;
      const aborted = new Promise<void>((r) => {
        if (!signal || signal.aborted) r();
        else signal.addEventListener('abort', () => r(), { once: true });
      });
      await Promise.race([
        o.secondPassAfter.catch(() => undefined),
        signal ? aborted : new Promise(() => undefined),
      ]);
    }
    // Then every other page, in address order, the next batch read while this one is judged; of
    // a tracked process, the pages the tracker judged known, compared only to audit it.
    const batches: Array<{ vpid: number; vaddr: number; n: number; audit: boolean }> = [];
    for (const [vpid, runs] of o.lazyRuns) {
      const tv = tracked.get(vpid);
      const list = tv
        ? tv.filter((r) => r.known).map((r) => ({ vaddr: r.page * PAGE_SIZE, nrPages: r.n }))
        : runs;
      for (const r of list) {
        for (let k = 0; k < r.nrPages; k += batch)
          batches.push({
            vpid,
            vaddr: r.vaddr + k * PAGE_SIZE,
            n: Math.min(batch, r.nrPages - k),
            audit: !!tv,
          });
      }
    }
    const buffers = [buffer, Buffer.allocUnsafe(batch * PAGE_SIZE)];
    const start = (i: number): Promise<number> => {
      const b = batches[i] as (typeof batches)[number];
      const data = (buffers[i % 2] as Buffer).subarray(0, b.n * PAGE_SIZE);
      // Unreadable: its pages are judged changed (the destination asks for them, and learns why).
      return readAhead(pidOf(b.vpid), data, b.vaddr).catch(() => 0);
    };
    next = batches.length > 0 ? start(0) : undefined;
    for (let i = 0; i < batches.length; i++) {
      const bytesRead = await (next as Promise<number>);
      next = i + 1 < batches.length ? start(i + 1) : undefined;
      const b = batches[i] as (typeof batches)[number];
      const data = (buffers[i % 2] as Buffer).subarray(0, b.n * PAGE_SIZE);
      if (b.audit) audit(b.vpid, b.vaddr, data, bytesRead);
      else classify(b.vpid, b.vaddr, b.n, data, bytesRead, first.get(b.vpid));
      flush();
    }
  } finally {
    // The end, also after a failure: the destination then fetches every page not judged yet
    // (a pre-copy destination waits for all of them before it restores).
    end();
    // A read still in flight must end before its descriptor is closed (and its number reused).
    await next;
    for (const fd of fds.values()) closeSync(fd);
  }
  res.ms = Math.round(o.clock.monotonic() - t0);
  return res;
}
