/**
 * The source's record of a container's memory during pre-copy: for every page (by process and
 * address) its content at the last scan and the digest of the content the destination holds
 * for it, if any. Dirty pages are found by comparing each page's bytes with its last content
 * (exact, no hashing of unchanged pages); only pages whose content changed are hashed.
 *
 * Contract: a slot's `digest`, when set, is the digest of its `data`, and the destination holds
 * that chunk once the round's manifest has been transferred. `knownPages` answers only for an
 * exact byte match, so the final phase never names a page by a digest of other content.
 */
import type { ChunkStore, Digest, Manifest, ManifestEntry, ChunkRef } from '../core/chunks.js';
import { MANIFEST_VERSION, PAGE_SIZE } from '../core/chunks.js';
import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, NotFoundError } from '../core/errors.js';
import { MAX_INLINE_SIZE, digestOf, isZero, type KnownPage } from '../chunks/index.js';
import { encodePageRuns, memoryMapPath, memoryPath, type PageRun } from './memory-index.js';
import type { DirtyPagePredictor } from './predictor.js';
import { pageWindows, readPageWindows, readProcessPages, type ContainerProcess } from './process-memory.js';

/** Pieces a large address map is cut into. */
const MAP_CHUNK_BYTES = 1024 * 1024;

/** A closing pass reads rewritten pages this close together in one read. */
const CLOSING_MERGE_GAP_PAGES = 16;

/** Marks a slot whose content is a zero page (never stored or sent). */
const ZERO = 'zero';

interface PageSlot {
  data: Buffer;
  /** Digest of `data` that the destination holds, ZERO for a zero page, undefined when not sent. */
  digest: Digest | typeof ZERO | undefined;
  /** Dense index for the predictor. */
  index: number;
  /** Round in which the page was last seen present. */
  seen: number;
  /** Written since round 0 (a page a restored process is likely to touch first). */
  rewritten?: true;
  /** The write tracker saw it written since `data` was read (so `data` may be stale). */
  touched: boolean;
}

/** What the mirror asks of a write tracker (WriteTracker). */
export interface TrackedPages {
  /** Whether every write to the page since it was last read has been reported (markWritten). */
  tracked(vpid: number, page: number): boolean;
  /** The regions of process `vpid` whose pages are tracked: pages [start, end), sorted, disjoint. */
  regions(vpid: number): readonly { start: number; end: number }[];
  /** Set once tracking has failed: no page is tracked from then on. */
  readonly failure: string | undefined;
}

/** Pages [page, page + n) of one process whose verdict is `known`. */
export interface PageVerdictRun {
  page: number;
  n: number;
  known: boolean;
}

/** What one scan found and what its round must send. */
export interface RoundScan {
  round: number;
  pagesScanned: number;
  /** Pages written since the previous scan (round 0: every page, all new). */
  dirtyPages: number;
  /** Pages held back in an earlier round and unchanged since (sent now unless held again). */
  unsentPages: number;
  /** Pages not sent this round (predicted to be written again). */
  heldBackPages: number;
  /** Distinct chunks new in this round. */
  newChunks: number;
  newChunkBytes: number;
  /** Every page the destination holds after this round (per process, in address order). */
  manifest: Manifest;
  scanMs: number;
}

/**
 * What a closing pass found: the pages written during the rounds (or never sent) whose bytes
 * now differ from what the destination holds, as a manifest of just those pages.
 */
export interface ClosingScan {
  /** Pages read. */
  pagesScanned: number;
  /** Pages read that equal what the destination holds (per process). */
  matched: Map<number, number[]>;
  /** Pages that differ, per process in address order. */
  changed: { vpid: number; page: number; data: Buffer; digest: Digest | typeof ZERO }[];
  /**
   * `memory/<vpid>` and `memory/<vpid>.map` (memory-index.ts) of the changed pages only: what
   * the destination lays over the last round's manifest once it holds this session.
   */
  manifest: Manifest;
  /** The manifest's chunks. */
  source: ChunkStore;
  /** Bytes of the changed pages that are not zero. */
  bytes: number;
  scanMs: number;
}

/**
 * The end (exclusive, at most `n`) of the span of pages `first + i`, `first + i + 1`, … whose
 * slots' copies lie back to back in one buffer (so that one view compares them all), slot
 * `first + i` being `s0`; with `sent`, only slots whose content the destination holds.
 */
function backToBack(
  table: ReadonlyMap<number, PageSlot>,
  first: number,
  i: number,
  n: number,
  s0: PageSlot,
  sent: boolean,
): number {
  let prev = s0;
  let j = i + 1;
  for (; j < n; j++) {
    const sl = table.get(first + j);
    if (
      sl === undefined ||
      (sent && sl.digest === undefined) ||
      sl.data.buffer !== prev.data.buffer ||
      sl.data.byteOffset !== prev.data.byteOffset + PAGE_SIZE
    )
      break;
    prev = sl;
  }
  return j;
}

/** A slot's copy may be stale (PageSlot.touched). */
const SLOT_TOUCHED = 1;
/** The destination holds a slot's copy (PageSlot.digest set). */
const SLOT_SENT = 2;

/** One process's slots in address order, as `trackedVerdicts` reads them. */
export interface SlotSummary {
  /** Runs of slots of consecutive pages and equal flags: pages [start, end), sorted, disjoint. */
  start: Float64Array;
  end: Float64Array;
  /** Per run, SLOT_TOUCHED | SLOT_SENT. */
  flags: Uint8Array;
  /** Pages marked written since it was made. */
  since: number[];
}

const EMPTY_SUMMARY: SlotSummary = {
  start: new Float64Array(0),
  end: new Float64Array(0),
  flags: new Uint8Array(0),
  since: [],
};

/**
 * The summary of `table`: one walk in its order (sorted only if that is not address order),
 * then its slots merged into runs. Exported for tests.
 */
export function summarize(table: ReadonlyMap<number, Pick<PageSlot, 'touched' | 'digest'>>): SlotSummary {
  const n = table.size;
  const pages = new Float64Array(n);
  const flags = new Uint8Array(n);
  let i = 0;
  let sorted = true;
  table.forEach((s, page) => {
    pages[i] = page;
    flags[i] = (s.touched ? SLOT_TOUCHED : 0) | (s.digest !== undefined ? SLOT_SENT : 0);
    if (i > 0 && page < (pages[i - 1] as number)) sorted = false;
    i++;
  });
  if (!sorted) {
    // Page and flags in one number (exact: page numbers stay below 2^45), sorted at once.
    const packed = new Float64Array(n);
    for (let k = 0; k < n; k++) packed[k] = (pages[k] as number) * 4 + (flags[k] as number);
    packed.sort();
    for (let k = 0; k < n; k++) {
      const v = packed[k] as number;
      const page = Math.floor(v / 4);
      pages[k] = page;
      flags[k] = v - page * 4;
    }
  }
  let runs = 0;
  for (let k = 0; k < n; k++)
    if (k === 0 || pages[k] !== (pages[k - 1] as number) + 1 || flags[k] !== flags[k - 1]) runs++;
  const out: SlotSummary = {
    start: new Float64Array(runs),
    end: new Float64Array(runs),
    flags: new Uint8Array(runs),
    since: [],
  };
  let r = -1;
  for (let k = 0; k < n; k++) {
    const page = pages[k] as number;
    if (r < 0 || page !== out.end[r] || flags[k] !== out.flags[r]) {
      r++;
      out.start[r] = page;
      out.flags[r] = flags[k] as number;
    }
    out.end[r] = page + 1;
  }
  return out;
}

/**
 * The verdicts of MemoryMirror.trackedVerdicts from a process's slot summary and tracked
 * `regions` (pages [start, end), sorted, disjoint) over `runs` (sorted, disjoint): a stretch of
 * like pages at a time. Exported for tests.
 */
export function trackedVerdictsOf(
  sum: SlotSummary,
  regions: readonly { start: number; end: number }[],
  runs: readonly PageRun[],
): { settled: PageVerdictRun[]; suspect: number[] } {
  const since = Float64Array.from(sum.since).sort();
  const settled: PageVerdictRun[] = [];
  const suspect: number[] = [];
  let last: PageVerdictRun | undefined;
  let si = 0;
  let ri = 0;
  let wi = 0;
  for (const r of runs) {
    const p1 = r.vaddr / PAGE_SIZE + r.nrPages;
    // A stretch [p, q) at a time over which the slot run, the tracked region and the pages
    // written since the summary stay the same.
    for (let p = r.vaddr / PAGE_SIZE; p < p1;) {
      while (si < sum.start.length && (sum.end[si] as number) <= p) si++;
      while (ri < regions.length && (regions[ri] as { end: number }).end <= p) ri++;
      while (wi < since.length && (since[wi] as number) < p) wi++;
      let q = p1;
      const inSlots = si < sum.start.length && (sum.start[si] as number) <= p;
      if (si < sum.start.length) q = Math.min(q, (inSlots ? sum.end[si] : sum.start[si]) as number);
      const region = regions[ri];
      const inRegion = region !== undefined && region.start <= p;
      if (region !== undefined) q = Math.min(q, inRegion ? region.end : region.start);
      const written = since[wi] === p;
      if (written) q = p + 1;
      else if (wi < since.length) q = Math.min(q, since[wi] as number);
      const f = inSlots ? (sum.flags[si] as number) : 0;
      if (!inSlots || !inRegion || written || (f & SLOT_TOUCHED) !== 0) {
        for (let x = p; x < q; x++) suspect.push(x);
      } else {
        const known = (f & SLOT_SENT) !== 0;
        if (last !== undefined && last.known === known && last.page + last.n === p) last.n += q - p;
        else settled.push((last = { page: p, n: q - p, known }));
      }
      p = q;
    }
  }
  return { settled, suspect };
}

/** A small file of a manifest: inline, or cut into chunks added to `chunks`. */
function fileEntry(path: string, data: Buffer, chunks: Map<Digest, Buffer>): ManifestEntry {
  if (data.length <= MAX_INLINE_SIZE)
    return { type: 'file', path, mode: 0o600, size: data.length, inline: data.toString('base64') };
  const refs: ChunkRef[] = [];
  for (let o = 0; o < data.length; o += MAP_CHUNK_BYTES) {
    const part = data.subarray(o, o + MAP_CHUNK_BYTES);
    const digest = digestOf(part);
    chunks.set(digest, part);
    refs.push({ digest, size: part.length });
  }
  return { type: 'file', path, mode: 0o600, size: data.length, chunks: refs };
}

/**
 * `memory/<vpid>` and `memory/<vpid>.map` (memory-index.ts) of one process, from its pages added
 * in address order; the chunks of non-zero pages and of a large map go into `chunks`.
 */
class MemoryFileBuilder {
  private readonly refs: ChunkRef[] = [];
  private readonly runs: PageRun[] = [];
  /** Pages added, and of them the ones not zero (each a chunk). */
  pages = 0;
  chunkPages = 0;

  constructor(private readonly chunks: Map<Digest, Buffer>) {}

  add(page: number, digest: Digest | typeof ZERO, data: Buffer): void {
    this.pages++;
    const run = this.runs[this.runs.length - 1];
    if (run && run.vaddr / PAGE_SIZE + run.nrPages === page) run.nrPages++;
    else this.runs.push({ vaddr: page * PAGE_SIZE, nrPages: 1 });
    if (digest === ZERO) {
      const last = this.refs[this.refs.length - 1];
      if (last !== undefined && 'zero' in last) last.zero += PAGE_SIZE;
      else this.refs.push({ zero: PAGE_SIZE });
      return;
    }
    this.refs.push({ digest, size: PAGE_SIZE });
    this.chunks.set(digest, data);
    this.chunkPages++;
  }

  /** The two entries, or none when no page was added. */
  entries(vpid: number): ManifestEntry[] {
    if (this.pages === 0) return [];
    return [
      { type: 'file', path: memoryPath(vpid), mode: 0o600, size: this.pages * PAGE_SIZE, chunks: this.refs },
      fileEntry(memoryMapPath(vpid), encodePageRuns(this.runs), this.chunks),
    ];
  }
}

/** `chunks` as a read-only ChunkStore, in front of `fallback` (for chunks not among them). */
function chunkStoreOver(chunks: ReadonlyMap<Digest, Buffer>, fallback?: ChunkStore): ChunkStore {
  const notHere = (d: Digest): NotFoundError =>
    new NotFoundError(ErrorCode.ChunkNotFound, `chunk ${d} is not in the memory mirror`);
  return {
    has: async (d) => chunks.has(d) || (fallback ? fallback.has(d) : false),
    missing: async (ds) => {
      const rest = [...new Set(ds)].filter((d) => !chunks.has(d));
      return fallback ? fallback.missing(rest) : rest;
    },
    get: async (d) => {
      const b = chunks.get(d);
      if (b) return b;
      if (fallback) return fallback.get(d);
      throw notHere(d);
    },
    put: async (d, data) => (fallback ? fallback.put(d, data) : Promise.reject(notHere(d))),
    retain: async () => undefined,
    release: async () => undefined,
    gc: async () => ({ chunks: 0, bytes: 0 }),
    usage: async () => ({ chunks: chunks.size, bytes: chunks.size * PAGE_SIZE }),
  };
}

/** Pre-copy's page table of one container. */
export class MemoryMirror {
  private readonly procs = new Map<number, Map<number, PageSlot>>();
  private readonly chunks = new Map<Digest, Buffer>();
  private nextIndex = 0;
  private rounds = 0;
  private readonly clock: Clock;
  private tracker: TrackedPages | undefined;
  /** Per process, its slots in address order while no copy changes (`prepareVerdicts`). */
  private readonly summaries = new Map<number, SlotSummary>();

  constructor(
    private readonly label: string,
    private readonly predictor: DirtyPagePredictor,
    clock?: Clock,
  ) {
    this.clock = clock ?? systemClock;
  }

  /**
   * From now on, `tracker` says which pages' writes are all reported to `markWritten`; the
   * tracker must have started before the reads this mirror's copies come from.
   */
  trackWith(tracker: TrackedPages): void {
    this.tracker = tracker;
  }

  /** Whether a write tracker is in use (and has not failed). */
  get tracking(): boolean {
    return this.tracker !== undefined && this.tracker.failure === undefined;
  }

  /**
   * Records pages the tracker saw written (per process): their copies may be stale until read
   * again. Call it right before a scan or closing pass reads (and at the freeze).
   */
  markWritten(written: ReadonlyMap<number, readonly number[]>): void {
    for (const [vpid, pages] of written) {
      const table = this.procs.get(vpid);
      if (table === undefined) continue;
      const since = this.summaries.get(vpid)?.since;
      for (const pg of pages) {
        since?.push(pg);
        const s = table.get(pg);
        if (s === undefined) continue;
        s.touched = true;
        s.rewritten = true;
      }
    }
  }

  /**
   * With write tracking, sorts the pages of process `vpid`'s `runs` (sorted, disjoint) into the
   * verdicts that follow from the tracker, merged into runs (known: tracked, not written since its
   * copy was read, and sent; not known: never sent), and the pages only their bytes can judge
   * (written since read, not tracked, or without a copy), ascending. Undefined without tracking.
   *
   * One merge of the runs with the runs of slots in address order (`prepareVerdicts`, made now if
   * it was not), a stretch of like pages at a time (trackedVerdictsOf). A lookup per page in the
   * page table took ~75 ms at 1 GiB: page numbers of a 64-bit address space are not small
   * integers, and each lookup boxed and hashed one.
   */
  trackedVerdicts(
    vpid: number,
    runs: readonly PageRun[],
  ): { settled: PageVerdictRun[]; suspect: number[] } | undefined {
    const tracker = this.tracker;
    if (tracker === undefined || !this.tracking) return undefined;
    const table = this.procs.get(vpid);
    const sum = this.summaries.get(vpid) ?? (table ? summarize(table) : EMPTY_SUMMARY);
    return trackedVerdictsOf(sum, tracker.regions(vpid), runs);
  }

  /**
   * Takes down every process's slots in address order for `trackedVerdicts`, so that the
   * verdicts at the freeze need no walk over the page table (a walk of ~45 ms at 1 GiB the first
   * time in a process, which the service does not wait for when it is made before the freeze).
   * Call it once the copies last change before the freeze (after the closing passes); pages
   * marked written after it are still heeded, and a later scan or adopt discards it.
   */
  prepareVerdicts(): void {
    for (const [vpid, table] of this.procs) this.summaries.set(vpid, summarize(table));
  }

  /** Pages tracked. */
  get pages(): number {
    let n = 0;
    for (const t of this.procs.values()) n += t.size;
    return n;
  }

  /**
   * Reads every process's memory, finds what changed since the last scan, asks the predictor
   * which dirty pages to hold back, hashes the rest, and returns the round's manifest. Pages
   * no longer present are forgotten.
   */
  async scan(processes: readonly ContainerProcess[], opts: { holdBack?: boolean } = {}): Promise<RoundScan> {
    const t0 = this.clock.monotonic();
    const round = this.rounds++;
    this.summaries.clear();
    const dirty: PageSlot[] = [];
    const unsent: PageSlot[] = [];
    let scanned = 0;
    const live = new Set<number>();
    for (const p of processes) {
      live.add(p.vpid);
      let table = this.procs.get(p.vpid);
      if (!table) {
        table = new Map();
        this.procs.set(p.vpid, table);
      }
      const t = table;
      const onRun = (vaddr: number, data: Buffer): void => {
        const first = vaddr / PAGE_SIZE;
        const n = data.length / PAGE_SIZE;
        let i = 0;
        while (i < n) {
          const slot = t.get(first + i);
          if (slot === undefined) {
            const page = data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
            // Round 0 keeps views into the read buffers; later rounds copy (small, scattered).
            const s: PageSlot = {
              data: round === 0 ? page : Buffer.from(page),
              digest: undefined,
              index: this.nextIndex++,
              seen: round,
              touched: false,
            };
            t.set(first + i, s);
            dirty.push(s);
            i++;
            continue;
          }
          // Slots whose copies lie back to back (most: round 0's buffers) are compared at once;
          // only a span that differs is compared page by page. Nothing is allocated per page.
          const j = backToBack(t, first, i, n, slot, false);
          const span = Buffer.from(slot.data.buffer, slot.data.byteOffset, (j - i) * PAGE_SIZE);
          const same = span.compare(data, i * PAGE_SIZE, j * PAGE_SIZE) === 0;
          for (let k = i; k < j; k++) {
            const sl = k === i ? slot : (t.get(first + k) as PageSlot);
            sl.seen = round;
            sl.touched = false;
            if (same || sl.data.compare(data, k * PAGE_SIZE, (k + 1) * PAGE_SIZE) === 0) {
              if (sl.digest === undefined) unsent.push(sl);
            } else {
              data.copy(sl.data, 0, k * PAGE_SIZE, (k + 1) * PAGE_SIZE);
              sl.digest = undefined;
              sl.rewritten = true;
              dirty.push(sl);
            }
          }
          i = j;
        }
      };
      // Round 0 keeps the read buffers (its slots are views into them); later rounds copy.
      scanned += await readProcessPages(p.pid, onRun, { keep: round === 0 });
    }
    for (const [vpid, table] of this.procs) {
      if (!live.has(vpid)) {
        this.procs.delete(vpid);
        continue;
      }
      for (const [k, s] of table) if (s.seen !== round) table.delete(k);
    }
    const dirtyIdx = round === 0 ? [] : dirty.map((s) => s.index);
    this.predictor.observe({ dirty: dirtyIdx, scanned: this.nextIndex });
    const candidates = [...dirty, ...unsent];
    const hold =
      round === 0 || opts.holdBack === false
        ? new Set<number>()
        : this.predictor.holdBack(candidates.map((s) => s.index));
    let newChunks = 0;
    let newChunkBytes = 0;
    const counted = new Set<Digest>();
    for (const s of candidates) {
      if (hold.has(s.index)) continue;
      if (isZero(s.data)) {
        s.digest = ZERO;
        continue;
      }
      const d = digestOf(s.data);
      s.digest = d;
      if (!this.chunks.has(d) && !counted.has(d)) {
        counted.add(d);
        newChunks++;
        newChunkBytes += PAGE_SIZE;
      }
    }
    const manifest = this.manifest(round);
    return {
      round,
      pagesScanned: scanned,
      dirtyPages: dirty.length,
      unsentPages: unsent.length,
      heldBackPages: hold.size,
      newChunks,
      newChunkBytes,
      manifest,
      scanMs: Math.round(this.clock.monotonic() - t0),
    };
  }

  /**
   * The manifest of what the destination holds: `memory/<vpid>`, pages in address order, and
   * `memory/<vpid>.map`, where they are (memory-index.ts).
   */
  private manifest(round: number): Manifest {
    this.chunks.clear();
    const entries: ManifestEntry[] = [];
    for (const [vpid, table] of [...this.procs].sort((a, b) => a[0] - b[0])) {
      const file = new MemoryFileBuilder(this.chunks);
      // In address order: the table's own order unless pages were added after round 0.
      let slots: Iterable<[number, PageSlot]> = table;
      let last = -1;
      for (const k of table.keys()) {
        if (k < last) {
          slots = [...table].sort((a, b) => a[0] - b[0]);
          break;
        }
        last = k;
      }
      for (const [k, s] of slots) if (s.digest !== undefined) file.add(k, s.digest, s.data);
      entries.push(...file.entries(vpid));
    }
    return this.manifestOf(`round-${round}`, entries);
  }

  /** A manifest of this mirror's `entries`, labelled `<label>:<what>`. */
  private manifestOf(what: string, entries: ManifestEntry[]): Manifest {
    return {
      version: MANIFEST_VERSION,
      label: `${this.label}:${what}`,
      createdAt: new Date(this.clock.now()).toISOString(),
      entries,
    };
  }

  /**
   * The pages of process `vpid` written since round 0, in address order: those a restored
   * process is likely to touch first.
   */
  rewrittenPages(vpid: number): number[] {
    const out: number[] = [];
    for (const [k, s] of this.procs.get(vpid) ?? []) if (s.rewritten) out.push(k);
    return out.sort((a, b) => a - b);
  }

  /**
   * The digest the destination holds for the page of process `vpid` at `vaddr`, when it holds
   * one for exactly these bytes; otherwise undefined.
   */
  knownDigest(vpid: number, vaddr: number, data: Buffer): Digest | undefined {
    if (data.length !== PAGE_SIZE) return undefined;
    const k = this.knownPages(vpid, vaddr, data)[0];
    return k === 'zero' ? undefined : k;
  }

  /**
   * For each page of `data` (process `vpid`'s memory from `vaddr` on, as dumped): the digest the
   * destination holds for exactly these bytes, `zero` for a page it holds as zeros, or undefined.
   * Pages whose copies lie back to back in one buffer (most: a round-0 read keeps its buffer) are
   * compared in one go, so a 256 MiB dump is checked at memcmp speed.
   */
  knownPages(vpid: number, vaddr: number, data: Buffer): KnownPage[] {
    const n = Math.floor(data.length / PAGE_SIZE);
    const out = new Array<KnownPage>(n);
    const table = this.procs.get(vpid);
    if (table === undefined) return out;
    const first = vaddr / PAGE_SIZE;
    const known = (sl: PageSlot): KnownPage => (sl.digest === ZERO ? 'zero' : sl.digest);
    let i = 0;
    while (i < n) {
      const s0 = table.get(first + i);
      if (s0 === undefined || s0.digest === undefined) {
        i++;
        continue;
      }
      const j = backToBack(table, first, i, n, s0, true);
      const mine = Buffer.from(s0.data.buffer, s0.data.byteOffset, (j - i) * PAGE_SIZE);
      if (mine.equals(data.subarray(i * PAGE_SIZE, j * PAGE_SIZE))) {
        for (let k = i; k < j; k++) out[k] = known(table.get(first + k) as PageSlot);
      } else {
        for (let k = i; k < j; k++) {
          const sl = table.get(first + k) as PageSlot;
          if (sl.data.equals(data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE))) out[k] = known(sl);
        }
      }
      i = j;
    }
    return out;
  }

  /** Whether chunk `d` is in the last round's manifest. */
  holds(d: Digest): boolean {
    return this.chunks.has(d);
  }

  /**
   * The chunks of the last round's manifest as a read-only ChunkStore, in front of `fallback`
   * (for chunks this mirror does not hold).
   */
  chunkSource(fallback?: ChunkStore): ChunkStore {
    return chunkStoreOver(this.chunks, fallback);
  }

  /**
   * A closing pass, after the rounds and with the container still running: reads the pages
   * written during the rounds and those not sent yet (the few a workload keeps writing), or with
   * `all` every page (small memory: as cheap, and it also finds pages first written now), and
   * returns those whose bytes differ from what the destination holds. With a write tracker (and
   * `markWritten` called right before), it reads exactly the pages written since their copies
   * were read, those not sent, and those not tracked; `all` is then ignored. The mirror
   * is not changed: `adopt` the pass once the destination holds its session, and not before
   * (the final phase's verdicts trust the mirror to say what the destination holds).
   */
  async closingScan(
    processes: readonly ContainerProcess[],
    pass: number,
    opts: { all?: boolean } = {},
  ): Promise<ClosingScan> {
    const t0 = this.clock.monotonic();
    const changed: ClosingScan['changed'] = [];
    const chunks = new Map<Digest, Buffer>();
    const entries: ManifestEntry[] = [];
    let scanned = 0;
    let bytes = 0;
    const tracker = this.tracking ? this.tracker : undefined;
    const all = opts.all === true && tracker === undefined;
    const matched = new Map<number, number[]>();
    for (const p of [...processes].sort((a, b) => a.vpid - b.vpid)) {
      const table = this.procs.get(p.vpid);
      if (table === undefined) continue;
      const vpid = p.vpid;
      const candidate = tracker
        ? (s: PageSlot, page: number): boolean =>
            s.touched || s.digest === undefined || !tracker.tracked(vpid, page)
        : (s: PageSlot): boolean => s.rewritten === true || s.digest === undefined;
      const mine: ClosingScan['changed'] = [];
      const same: number[] = [];
      matched.set(vpid, same);
      const check = (s: PageSlot, page: number, data: Buffer): void => {
        if (s.digest !== undefined && s.data.equals(data)) {
          same.push(page);
          return;
        }
        const copy = Buffer.from(data);
        mine.push({ vpid: p.vpid, page, data: copy, digest: isZero(copy) ? ZERO : digestOf(copy) });
      };
      const onData = (vaddr: number, data: Buffer): void => {
        const first = vaddr / PAGE_SIZE;
        const n = data.length / PAGE_SIZE;
        let i = 0;
        while (i < n) {
          const s = table.get(first + i);
          if (s === undefined || (!all && !candidate(s, first + i))) {
            i++;
            continue;
          }
          // Reading everything: pages whose copies lie back to back are compared at once.
          const j = all && s.digest !== undefined ? backToBack(table, first, i, n, s, true) : i + 1;
          const span = Buffer.from(s.data.buffer, s.data.byteOffset, (j - i) * PAGE_SIZE);
          if (j > i + 1 && span.compare(data, i * PAGE_SIZE, j * PAGE_SIZE) === 0) {
            i = j;
            continue;
          }
          for (let k = i; k < j; k++) {
            const sl = k === i ? s : (table.get(first + k) as PageSlot);
            check(sl, first + k, data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE));
          }
          i = j;
        }
      };
      if (all) {
        scanned += await readProcessPages(p.pid, onData, { keep: false });
      } else {
        const wanted: number[] = [];
        for (const [k, s] of table) if (candidate(s, k)) wanted.push(k);
        wanted.sort((a, b) => a - b);
        scanned += readPageWindows(p.pid, pageWindows(wanted, CLOSING_MERGE_GAP_PAGES), onData);
      }
      const file = new MemoryFileBuilder(chunks);
      for (const c of mine) file.add(c.page, c.digest, c.data);
      entries.push(...file.entries(p.vpid));
      bytes += file.chunkPages * PAGE_SIZE;
      changed.push(...mine);
    }
    return {
      pagesScanned: scanned,
      matched,
      changed,
      manifest: this.manifestOf(`closing-${pass}`, entries),
      source: chunkStoreOver(chunks),
      bytes,
      scanMs: Math.round(this.clock.monotonic() - t0),
    };
  }

  /**
   * Records that the destination now holds a closing pass's pages (it completed the pass's
   * session): each page's copy and digest become those of the pass.
   */
  adopt(scan: ClosingScan): void {
    this.summaries.clear();
    // The pages read equal to their copies: those copies are as fresh as the pass's read.
    for (const [vpid, pages] of scan.matched) {
      const table = this.procs.get(vpid);
      for (const pg of pages) {
        const s = table?.get(pg);
        if (s) s.touched = false;
      }
    }
    for (const c of scan.changed) {
      const s = this.procs.get(c.vpid)?.get(c.page);
      if (s === undefined) continue;
      c.data.copy(s.data);
      s.digest = c.digest;
      s.touched = false;
      // Written since round 0: judged first after the freeze, and read by the next pass.
      s.rewritten = true;
      if (c.digest !== ZERO) this.chunks.set(c.digest, s.data);
    }
  }
}
