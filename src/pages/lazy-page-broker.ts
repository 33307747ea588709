/**
 * The destination's answer to CRIU's lazy-pages daemon: which bytes a restored process's page
 * has, and where they come from. The checkpoint's `pages-N.img` files were reassembled locally
 * with holes where the pages stayed on the source (the remote runs); everything else in them is
 * exact (non-lazy pages, and in hybrid the pages pre-copy already brought). A remote page is
 * fetched from the source when a fault asks for it (at once, ahead of the background) or by the
 * background fill, which walks the remote runs in order with a bounded amount in flight, and is
 * written into the local file; a page is served only once it is there, so nothing stale or
 * missing is ever handed to the process.
 *
 * Hybrid: the destination already holds most remote pages from the pre-copy rounds, but only
 * the source can say which of them are still exact. Such a broker starts every remote page as
 * pending; the source's verdicts then mark each one known (served from the local chunk store
 * through `local`, nothing on the wire, nothing copied until CRIU asks for it) or changed
 * (fetched). A fault on a page still pending fetches it from the frozen source, which is always
 * exact; the background fill fetches only pages judged changed.
 *
 * Contract: `complete` resolves once every remote page is local (the source may then let go);
 * it rejects when the source is lost first, and so does every read still waiting for a page.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_SIZE } from '../core/chunks.js';
import type { Clock } from '../core/clock.js';
import {
  ErrorCode,
  GodwitError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { everyLazyRun, readPagesLayouts } from '../memory/criu-pagemap.js';
import { OpenFiles } from './open-files.js';
import { findRun } from './page-fetch.js';

/** Pages that stayed on the source: `nrPages` pages of process `vpid` from `vaddr` on. */
export interface RemoteRun {
  vpid: number;
  vaddr: number;
  nrPages: number;
}

/** Where remote pages come from (a PageFetcher, or a fake in tests). */
export interface PageFetchClient {
  fetch(vpid: number, vaddr: number, nrPages: number): Promise<Buffer>;
  onFailed(fn: (err: GodwitError) => void): void;
  /** Bytes received so far, when the client counts them (sizes the window in wire bytes). */
  readonly bytesWire?: number;
}

/** Counters of a broker, for the migration report. */
export interface LazyPageStats {
  /** Pages that stayed on the source. */
  pagesRemote: number;
  /** Remote pages fetched because a fault waited for them, and by the background fill. */
  pagesOnDemand: number;
  pagesPushed: number;
  /** Pages handed to the process that were local from the start (not remote). */
  pagesServedLocal: number;
  /** Remote pages a verdict found exact here, served from the local chunk store (hybrid). */
  pagesFromStore: number;
  /** Verdicts received (runs), and when the last one came (ms after `start`, 0 if before). */
  verdictRuns: number;
  verdictsEndMs?: number;
  /** Pages handed to the process in all. */
  pagesServed: number;
  /** Single-page requests (faults) and how long each waited, ms. */
  faults: number;
  faultWaitsMs: number[];
  /** Remote pages not (yet) local. */
  pagesMissing: number;
}

/** Options of a broker. */
export interface LazyPageBrokerOptions {
  /** The local CRIU image directory (holes at the remote runs). */
  criuDir: string;
  /** The pages that stayed on the source; `EVERY_LAZY_PAGE`: all the pagemaps mark lazy. */
  remote: readonly RemoteRun[] | typeof EVERY_LAZY_PAGE;
  fetcher: PageFetchClient;
  clock: Clock;
  log: Logger;
  /**
   * Background bytes in flight at most, as they go on the wire (compressed; estimated from what
   * arrived so far): bounds how long a fault waits behind them, and should cover the link's
   * bandwidth × delay. Default 256 KiB (the edge link's).
   */
  windowBytes?: number;
  /** Pages per background fetch. Default 16 (64 KiB). */
  batchPages?: number;
  /**
   * Pages fetched around a faulting page (aligned to this many, missing ones only): a process that
   * touches one page soon touches its neighbours. Default 8 (32 KiB).
   */
  faultAroundPages?: number;
  /**
   * Hybrid: remote pages wait for the source's verdict (`verdict`); pages judged known are read
   * with this (the bytes of `nrPages` pages from the local chunk store, or undefined when it
   * cannot: then they are fetched).
   */
  local?: (vpid: number, vaddr: number, nrPages: number) => Promise<Buffer | undefined>;
}

/** `remote` of a broker whose every lazy page (pagemap flag PE_LAZY) stayed on the source. */
export const EVERY_LAZY_PAGE = 'every-lazy-page';

/** Not here, to be fetched from the source. */
const MISSING = 0;
const IN_FLIGHT = 1;
const LOCAL = 2;
/** Not here, no verdict yet (hybrid): faults fetch it, the background leaves it. */
const PENDING = 3;
/** Judged exact in the local chunk store (hybrid): served from there. */
const KNOWN = 4;

interface RemoteSlots {
  vpid: number;
  vaddr: number;
  nrPages: number;
  /** Part of a run of fewer than SMALL_RUN_PAGES pages (fetched first, see there). */
  small: boolean;
  state: Uint8Array;
  /** Resolves when the page at this index becomes local (only while in flight). */
  waiters: Map<number, Promise<void>>;
}

/**
 * Runs of fewer pages than this (256 KiB: a process's stack, heap, the data of its program and
 * libraries) are fetched before the others: a restored process touches them at once. Measured
 * before (hybrid, 256 MiB, edge): the stack page written at the freeze came last in address
 * order, behind the big runs' changed pages, and the service's first fault after the restore
 * waited 48–70 ms for it, every move.
 */
const SMALL_RUN_PAGES = 64;

/** A run of a process's pages and where they are (or will be) kept here. */
interface LocalRun {
  vaddr: number;
  nrPages: number;
  /** A file of the image directory: `pages-N.img`, or godwit's own for pages CRIU left out. */
  file: string;
  fileOffset: number;
}

interface ProcessPages {
  vpid: number;
  runs: LocalRun[];
  remote: RemoteSlots[];
}

/** The states a remote page can be in. */
const STATES = [MISSING, IN_FLIGHT, LOCAL, PENDING, KNOWN] as const;

/** The first index in [from, to) of `state` holding `v`, or -1. */
function indexIn(state: Uint8Array, v: number, from: number, to: number): number {
  if (from >= to) return -1;
  const k = state.subarray(from, to).indexOf(v);
  return k < 0 ? -1 : from + k;
}

/** The first index in [from, to) of `state` not holding `v`, or `to` (native scans, no loop per page). */
function firstNot(state: Uint8Array, v: number, from: number, to: number): number {
  const view = state.subarray(from, to);
  let end = view.length;
  for (const x of STATES) {
    if (x === v) continue;
    const k = view.subarray(0, end).indexOf(x);
    if (k >= 0) end = k;
  }
  return from + end;
}

function notHere(state: number | undefined): boolean {
  return state === MISSING || state === PENDING;
}

/** Where the pages a `--lazy-pages` dump left out of process `vpid`'s images are kept here. */
export function heldPagesFile(vpid: number): string {
  return `godwit-lazy-${vpid}.pages`;
}

/** Serves restored processes' pages from the local images, fetching the remote ones. */
export class LazyPageBroker {
  private readonly procs = new Map<number, ProcessPages>();
  private readonly files = new OpenFiles('r+');
  private readonly remoteRuns: RemoteSlots[] = [];
  /** The remote slots of small runs, fetched first. */
  private readonly smallRuns: RemoteSlots[] = [];
  private readonly window: number;
  private readonly batch: number;
  private readonly faultAround: number;
  private inFlightBytes = 0;
  private started = false;
  private cursor = { run: 0, page: 0 };
  /**
   * Small runs before this index have no missing page: `nextMissing` scans from here, and
   * anything that makes a small run's page missing again sets it back to 0. (A scan of every
   * small run per fetch cost O(runs²) over a fill of scattered memory: ~35,000 runs at 1 GiB.)
   */
  private smallHead = 0;
  private failure: GodwitError | undefined;
  private resolveComplete!: () => void;
  private rejectComplete!: (e: Error) => void;
  private readonly s: LazyPageStats = {
    pagesRemote: 0,
    pagesOnDemand: 0,
    pagesPushed: 0,
    pagesServedLocal: 0,
    pagesServed: 0,
    faults: 0,
    faultWaitsMs: [],
    pagesMissing: 0,
    pagesFromStore: 0,
    verdictRuns: 0,
  };
  private startedAt: number | undefined;
  private verdictsEndAt: number | undefined;
  /** Every remote page is local. */
  readonly complete: Promise<void>;

  private constructor(private readonly opts: LazyPageBrokerOptions) {
    this.window = opts.windowBytes ?? 256 * 1024;
    this.batch = opts.batchPages ?? 16;
    this.faultAround = opts.faultAroundPages ?? 8;
    this.complete = new Promise<void>((resolve, reject) => {
      this.resolveComplete = resolve;
      this.rejectComplete = reject;
    });
    this.complete.catch(() => undefined);
  }

  /** Reads the local pagemaps and checks the remote runs against them. */
  static async open(opts: LazyPageBrokerOptions): Promise<LazyPageBroker> {
    const b = new LazyPageBroker(opts);
    const layouts = await readPagesLayouts(opts.criuDir);
    const remote = opts.remote === EVERY_LAZY_PAGE ? everyLazyRun(layouts) : opts.remote;
    for (const l of layouts) {
      const runs: LocalRun[] = l.runs.map((r) => ({ ...r, file: l.file }));
      // Pages the dump left with the process: kept in a file of godwit's own, in address order.
      let off = 0;
      for (const r of [...l.lazyRuns].sort((x, y) => x.vaddr - y.vaddr)) {
        runs.push({ vaddr: r.vaddr, nrPages: r.nrPages, file: heldPagesFile(l.vpid), fileOffset: off });
        off += r.nrPages * PAGE_SIZE;
      }
      if (off > 0) {
        const fh = await open(join(opts.criuDir, heldPagesFile(l.vpid)), 'w');
        await fh.truncate(off);
        await fh.close();
      }
      b.procs.set(l.vpid, { vpid: l.vpid, runs: runs.sort((x, y) => x.vaddr - y.vaddr), remote: [] });
    }
    for (const r of [...remote].sort((x, y) => x.vpid - y.vpid || x.vaddr - y.vaddr)) {
      const p = b.procs.get(r.vpid);
      // A remote run may span pagemap entries that lie back to back: one slot set per entry.
      let vaddr = r.vaddr;
      let left = r.nrPages;
      while (left > 0) {
        const run = p ? findRun(p.runs, vaddr) : undefined;
        if (!p || !run || !Number.isSafeInteger(left)) {
          throw new InvalidArgumentError(
            ErrorCode.CheckpointCorrupt,
            `remote page of process ${r.vpid} at 0x${vaddr.toString(16)} is not in its pagemap`,
          );
        }
        const nrPages = Math.min(left, run.nrPages - (vaddr - run.vaddr) / PAGE_SIZE);
        const slots: RemoteSlots = {
          vpid: r.vpid,
          vaddr,
          nrPages,
          small: run.nrPages < SMALL_RUN_PAGES,
          state: new Uint8Array(nrPages).fill(opts.local ? PENDING : MISSING),
          waiters: new Map(),
        };
        p.remote.push(slots);
        b.remoteRuns.push(slots);
        if (slots.small) b.smallRuns.push(slots);
        b.s.pagesRemote += nrPages;
        vaddr += nrPages * PAGE_SIZE;
        left -= nrPages;
      }
    }
    b.s.pagesMissing = b.s.pagesRemote;
    opts.fetcher.onFailed((err) => b.fail(err));
    if (b.s.pagesRemote === 0) b.resolveComplete();
    return b;
  }

  /** Starts the background fill. */
  start(): void {
    this.started = true;
    this.startedAt = this.opts.clock.monotonic();
    this.pump();
  }

  stats(): LazyPageStats {
    const end = this.verdictsEndAt;
    return {
      ...this.s,
      faultWaitsMs: [...this.s.faultWaitsMs],
      ...(end !== undefined ? { verdictsEndMs: Math.round(Math.max(0, end - (this.startedAt ?? end))) } : {}),
    };
  }

  /** The LazyPageProvider of the CRIU page server: up to `nrPages` pages from `vaddr` (at least one). */
  async read(vpid: number, vaddr: number, nrPages: number, hint: { fault: boolean }): Promise<Buffer> {
    const t0 = this.opts.clock.monotonic();
    const p = this.procs.get(vpid);
    const run = p ? findRun(p.runs, vaddr) : undefined;
    if (!p || !run) {
      throw new InvalidArgumentError(
        ErrorCode.PageNotHeld,
        `no page of process ${vpid} at 0x${vaddr.toString(16)}`,
      );
    }
    const n = Math.min(nrPages, run.nrPages - (vaddr - run.vaddr) / PAGE_SIZE);
    let out: Buffer | undefined;
    // A fetch may come back short (its run ended at the source), a local copy may turn out
    // unreadable: then ask again.
    for (let attempt = 0; out === undefined; attempt++) {
      if (attempt === 4)
        throw new UnavailableError(ErrorCode.PageSourceLost, `page 0x${vaddr.toString(16)} did not arrive`);
      const k = this.localPrefix(p, vaddr, n);
      if (k === 0) {
        await this.ensure(p, vaddr, hint.fault ? this.faultAround : Math.min(n, this.batch), hint.fault);
        continue;
      }
      out = await this.readLocal(p, run, vaddr, k);
    }
    const k = out.length / PAGE_SIZE;
    this.s.pagesServed += k;
    this.s.pagesServedLocal += k - this.remoteIn(p, vaddr, k);
    if (hint.fault) {
      this.s.faults++;
      this.s.faultWaitsMs.push(Math.round((this.opts.clock.monotonic() - t0) * 100) / 100);
    }
    return out;
  }

  /**
   * The source's verdict on remote pages (hybrid): `known` ones are copied in from the local
   * store, the others are fetched by the background fill. Pages no longer pending are left alone
   * (a fault fetched them already).
   */
  verdict(vpid: number, vaddr: number, nrPages: number, known: boolean): void {
    if (this.mark(vpid, vaddr, nrPages, known)) this.maybeComplete();
    else this.pump();
  }

  /**
   * A frame of verdicts at once: the fetches start only after all of them are in, so that the
   * small runs' changed pages go first (a page-by-page start would fill the window with the
   * first big run's).
   */
  verdicts(runs: readonly { vpid: number; vaddr: number; nrPages: number; known: boolean }[]): void {
    let changed = false;
    for (const r of runs) if (!this.mark(r.vpid, r.vaddr, r.nrPages, r.known)) changed = true;
    this.maybeComplete();
    if (changed) this.pump();
  }

  /** Records one verdict run; returns `known`. */
  private mark(vpid: number, vaddr: number, nrPages: number, known: boolean): boolean {
    this.s.verdictRuns++;
    const p = this.procs.get(vpid);
    if (!p) return true;
    const end = vaddr + nrPages * PAGE_SIZE;
    for (let a = vaddr; a < end;) {
      const s = this.slot(p, a);
      if (!s) {
        a += PAGE_SIZE;
        continue;
      }
      const [slots, i0] = s;
      const stop = Math.min(slots.nrPages, i0 + (end - a) / PAGE_SIZE);
      // The pending pages among them, a stretch at a time (typed-array scans: a run of a
      // gigabyte is one verdict, and a loop per page cost ~10 ms of the restore's CPU).
      const st = slots.state;
      for (let i = indexIn(st, PENDING, i0, stop); i >= 0;) {
        const j = firstNot(st, PENDING, i, stop);
        st.fill(known ? KNOWN : MISSING, i, j);
        if (known) {
          this.s.pagesMissing -= j - i;
          this.s.pagesFromStore += j - i;
        }
        i = indexIn(st, PENDING, j, stop);
      }
      if (!known && slots.small) this.smallHead = 0;
      a = slots.vaddr + stop * PAGE_SIZE;
    }
    return known;
  }

  /** Every verdict has come: pages still pending (none, normally) are fetched. */
  verdictsEnd(): void {
    this.verdictsEndAt = this.opts.clock.monotonic();
    for (const r of this.remoteRuns) {
      for (let i = r.state.indexOf(PENDING); i >= 0;) {
        const j = firstNot(r.state, PENDING, i, r.nrPages);
        r.state.fill(MISSING, i, j);
        i = indexIn(r.state, PENDING, j, r.nrPages);
      }
    }
    this.smallHead = 0;
    this.pump();
  }

  /** Stops fetching; reads waiting for pages fail with `err`. */
  fail(err: GodwitError): void {
    if (this.failure) return;
    this.failure = err;
    if (this.s.pagesMissing === 0) return; // everything is here: the source may go
    this.opts.log.warn('lazy pages: the source is lost', { err: err.message, missing: this.s.pagesMissing });
    if (this.s.pagesMissing > 0) this.rejectComplete(err);
  }

  /** The remote pages not local (yet), as runs, at most `limit` of them (lowest addresses first). */
  missingRuns(limit = Number.MAX_SAFE_INTEGER): RemoteRun[] {
    const out: RemoteRun[] = [];
    for (const r of this.remoteRuns) {
      let start = -1;
      for (let i = 0; i <= r.nrPages; i++) {
        const missing = i < r.nrPages && r.state[i] !== LOCAL && r.state[i] !== KNOWN;
        if (missing && start < 0) start = i;
        if (!missing && start >= 0) {
          out.push({ vpid: r.vpid, vaddr: r.vaddr + start * PAGE_SIZE, nrPages: i - start });
          if (out.length >= limit) return out;
          start = -1;
        }
      }
    }
    return out;
  }

  /** Closes the local files. */
  async close(): Promise<void> {
    await this.files.closeAll();
  }

  // ---- internals ----

  private file(name: string): Promise<FileHandle> {
    return this.files.get(join(this.opts.criuDir, name));
  }

  /** The remote slots holding page `vaddr` of `p`, and the page's index in them. */
  private slot(p: ProcessPages, vaddr: number): [RemoteSlots, number] | undefined {
    const r = findRun(p.remote, vaddr);
    return r ? [r, (vaddr - r.vaddr) / PAGE_SIZE] : undefined;
  }

  /** How many pages from `vaddr` on (at most n) are here now (in a file or the local store). */
  private localPrefix(p: ProcessPages, vaddr: number, n: number): number {
    for (let i = 0; i < n; i++) {
      const s = this.slot(p, vaddr + i * PAGE_SIZE);
      if (s && s[0].state[s[1]] !== LOCAL && s[0].state[s[1]] !== KNOWN) return i;
    }
    return n;
  }

  /**
   * The bytes of the k pages from `vaddr` (all here, within `run`): from the file, and known
   * pages from the local store. Undefined when the store could not give a known page: such pages
   * become missing (to be fetched), and the caller asks again.
   */
  private async readLocal(
    p: ProcessPages,
    run: LocalRun,
    vaddr: number,
    k: number,
  ): Promise<Buffer | undefined> {
    let out: Buffer | undefined;
    for (let i = 0; i < k;) {
      const s = this.slot(p, vaddr + i * PAGE_SIZE);
      const known = s !== undefined && s[0].state[s[1]] === KNOWN;
      // A segment of pages of one kind (and, for known pages, one slot set).
      let j = i + 1;
      while (j < k) {
        const t = this.slot(p, vaddr + j * PAGE_SIZE);
        const tk = t !== undefined && t[0].state[t[1]] === KNOWN;
        if (tk !== known || (known && t?.[0] !== s?.[0])) break;
        j++;
      }
      const at = vaddr + i * PAGE_SIZE;
      if (known && s) {
        let why = 'none';
        const data = await this.opts.local?.(p.vpid, at, j - i).catch((err: unknown) => {
          why = errorMessage(err);
          return undefined;
        });
        if (!data || data.length !== (j - i) * PAGE_SIZE) {
          this.opts.log.warn('lazy pages: no local copy after all, fetching', {
            vpid: p.vpid,
            vaddr: `0x${at.toString(16)}`,
            pages: j - i,
            why,
          });
          for (let x = s[1]; x < s[1] + (j - i); x++) {
            if (s[0].state[x] !== KNOWN) continue;
            s[0].state[x] = MISSING;
            this.s.pagesMissing++;
            this.s.pagesFromStore--;
          }
          if (s[0].small) this.smallHead = 0;
          return undefined;
        }
        // All of them known (most reads of a fill): the store's answer is the answer.
        if (i === 0 && j === k) return data;
        out ??= Buffer.allocUnsafe(k * PAGE_SIZE);
        data.copy(out, i * PAGE_SIZE);
      } else {
        out ??= Buffer.allocUnsafe(k * PAGE_SIZE);
        const fh = await this.file(run.file);
        const { bytesRead } = await fh.read(
          out,
          i * PAGE_SIZE,
          (j - i) * PAGE_SIZE,
          run.fileOffset + (at - run.vaddr),
        );
        if (bytesRead !== (j - i) * PAGE_SIZE) {
          throw new InvalidArgumentError(
            ErrorCode.CheckpointCorrupt,
            `${run.file} is shorter than its pagemap says`,
          );
        }
      }
      i = j;
    }
    return out as Buffer;
  }

  /** How many of the k pages from `vaddr` were remote. */
  private remoteIn(p: ProcessPages, vaddr: number, k: number): number {
    let c = 0;
    for (let i = 0; i < k; i++) if (this.slot(p, vaddr + i * PAGE_SIZE)) c++;
    return c;
  }

  /**
   * Makes page `vaddr` local: waits for its fetch, or fetches it now with its missing neighbours:
   * `around` (a fault) fetches the aligned group of n pages holding it, else the n from it on.
   */
  private async ensure(p: ProcessPages, vaddr: number, n: number, around = false): Promise<void> {
    if (this.failure) throw this.failure;
    const s = this.slot(p, vaddr);
    if (!s) return;
    const [slots, i] = s;
    if (slots.state[i] === LOCAL || slots.state[i] === KNOWN) return;
    if (slots.state[i] === IN_FLIGHT) {
      await slots.waiters.get(i);
      return;
    }
    let from = i;
    if (around) {
      const groupStart = Math.max(0, i - ((slots.vaddr / PAGE_SIZE + i) % n));
      while (from > groupStart && notHere(slots.state[from - 1])) from--;
    }
    const limit = around ? from + n : i + n;
    let count = i - from + 1;
    while (from + count < limit && from + count < slots.nrPages && notHere(slots.state[from + count]))
      count++;
    // The background goes on from here: a process that faults here will soon want what follows.
    const run = this.remoteRuns.indexOf(slots);
    if (run >= 0) this.cursor = { run, page: from + count };
    await this.fetchInto(p, slots, from, count, 'demand');
  }

  /** Fetches `count` missing pages of `slots` from index `i` and writes them locally. */
  private fetchInto(
    p: ProcessPages,
    slots: RemoteSlots,
    i: number,
    count: number,
    why: 'demand' | 'push',
  ): Promise<void> {
    let done!: () => void;
    let failed!: (e: Error) => void;
    const arrived = new Promise<void>((res, rej) => {
      done = res;
      failed = rej;
    });
    arrived.catch(() => undefined);
    for (let k = i; k < i + count; k++) {
      slots.state[k] = IN_FLIGHT;
      slots.waiters.set(k, arrived);
    }
    const bytes = count * PAGE_SIZE;
    if (why === 'push') this.inFlightBytes += bytes;
    const vaddr = slots.vaddr + i * PAGE_SIZE;
    void (async () => {
      try {
        const data = await this.opts.fetcher.fetch(slots.vpid, vaddr, count);
        const got = data.length / PAGE_SIZE;
        const run = findRun(p.runs, vaddr) as LocalRun;
        const fh = await this.file(run.file);
        await fh.write(data, 0, data.length, run.fileOffset + (vaddr - run.vaddr));
        for (let k = i; k < i + count; k++) {
          slots.waiters.delete(k);
          slots.state[k] = k < i + got ? LOCAL : MISSING;
        }
        if (got < count && slots.small) this.smallHead = 0;
        this.s.pagesMissing -= got;
        if (why === 'demand') this.s.pagesOnDemand += got;
        else this.s.pagesPushed += got;
        done();
      } catch (err) {
        for (let k = i; k < i + count; k++) {
          slots.waiters.delete(k);
          if (slots.state[k] === IN_FLIGHT) slots.state[k] = MISSING;
        }
        if (slots.small) this.smallHead = 0;
        const e =
          err instanceof GodwitError
            ? err
            : new UnavailableError(ErrorCode.PageSourceLost, `fetching pages failed: ${errorMessage(err)}`);
        failed(e);
        this.fail(e);
      } finally {
        if (why === 'push') this.inFlightBytes -= bytes;
        this.maybeComplete();
        this.pump();
      }
    })();
    return arrived;
  }

  private maybeComplete(): void {
    if (this.s.pagesMissing === 0 && !this.failure) this.resolveComplete();
  }

  /** Issues background fetches in order while the window has room. */
  private pump(): void {
    // The window counts wire bytes; requests are sized in raw pages: scale by the ratio seen so far.
    const wire = this.opts.fetcher.bytesWire;
    const fetched = (this.s.pagesOnDemand + this.s.pagesPushed) * PAGE_SIZE;
    const ratio =
      wire !== undefined && fetched >= 1024 * 1024 ? Math.max(0.05, Math.min(1, wire / fetched)) : 1;
    const window = this.window / ratio;
    while (this.started && !this.failure && this.inFlightBytes < window) {
      const next = this.nextMissing();
      if (!next) return;
      const [slots, i] = next;
      let count = 1;
      while (count < this.batch && i + count < slots.nrPages && slots.state[i + count] === MISSING) count++;
      const p = this.procs.get(slots.vpid) as ProcessPages;
      void this.fetchInto(p, slots, i, count, 'push');
    }
  }

  /**
   * The first missing page of a small run, else the first at or after the cursor (which a fault
   * moves to where it is).
   */
  private nextMissing(): [RemoteSlots, number] | undefined {
    for (; this.smallHead < this.smallRuns.length; this.smallHead++) {
      const r = this.smallRuns[this.smallHead] as RemoteSlots;
      const i = r.state.indexOf(MISSING);
      if (i >= 0) return [r, i];
    }
    while (this.cursor.run < this.remoteRuns.length) {
      const r = this.remoteRuns[this.cursor.run] as RemoteSlots;
      const i = indexIn(r.state, MISSING, this.cursor.page, r.nrPages);
      if (i >= 0) {
        this.cursor.page = i;
        return [r, i];
      }
      this.cursor = { run: this.cursor.run + 1, page: 0 };
    }
    // Pages a short answer left missing behind the cursor: look once more from the start.
    for (const r of this.remoteRuns) {
      const i = r.state.indexOf(MISSING);
      if (i >= 0) return [r, i];
    }
    return undefined;
  }
}
