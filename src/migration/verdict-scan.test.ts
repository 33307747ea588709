import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { systemClock } from '../core/clock.js';
import type { KnownPage } from '../chunks/index.js';
import type { VerdictRun } from '../pages/page-fetch.js';
import {
  scanVerdicts,
  type VerdictMirror,
  type VerdictScanOptions,
  type VerdictScanResult,
} from './verdict-scan.js';

const A = 0x10000000;
const page = (n: number, v = 0): Buffer => Buffer.alloc(PAGE_SIZE, (n * 7 + v) % 251);

/**
 * A process of 64 pages at A (page n holds `page(n)`) whose mirror knows pages 0-47 with their
 * current bytes; pages 10 and 20 were written since the last round; 48-63 were never sent.
 */
function fixture(): {
  mirror: VerdictMirror & { asked: number[] };
  read: (pid: number, buf: Buffer, vaddr: number) => number;
} {
  const memory = Buffer.concat(Array.from({ length: 64 }, (_, n) => page(n, n === 10 || n === 20 ? 1 : 0)));
  const asked: number[] = [];
  return {
    mirror: {
      pages: 48,
      asked,
      knownPages(vpid: number, vaddr: number, data: Buffer): KnownPage[] {
        assert.equal(vpid, 5);
        const first = (vaddr - A) / PAGE_SIZE;
        asked.push(first);
        return Array.from({ length: data.length / PAGE_SIZE }, (_, i) => {
          const n = first + i;
          const same = n < 48 && data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE).equals(page(n));
          return same ? (`sha256:${String(n).padStart(64, '0')}` as KnownPage) : undefined;
        });
      },
      rewrittenPages: () => [10, 11, 12, 20].map((n) => A / PAGE_SIZE + n),
    },
    read: (pid, buf, vaddr) => {
      assert.equal(pid, 500);
      const off = vaddr - A;
      return memory.copy(buf, 0, off, Math.min(memory.length, off + buf.length));
    },
  };
}

/** Expands verdict runs into one boolean per page (undefined: no verdict). */
function perPage(runs: VerdictRun[]): (boolean | undefined)[] {
  const out = new Array<boolean | undefined>(64);
  for (const r of runs) {
    for (let i = 0; i < r.nrPages; i++) {
      const n = (r.vaddr - A) / PAGE_SIZE + i;
      assert.equal(out[n], undefined, `page ${n} judged twice`);
      out[n] = r.known;
    }
  }
  return out;
}

/** The pages with a verdict in `runs`, in order. */
const judged = (runs: VerdictRun[]): number[] =>
  perPage(runs).flatMap((x, n) => (x === undefined ? [] : [n]));

/**
 * Scans the fixture's process (vpid 5, pid 500; its 64 pages at A unless `o.lazyRuns` says
 * otherwise) and collects the frames it pushes.
 */
function judge(o: Partial<VerdictScanOptions> & Pick<VerdictScanOptions, 'mirror'>): {
  frames: VerdictRun[][];
  result: Promise<VerdictScanResult>;
} {
  const frames: VerdictRun[][] = [];
  const result = scanVerdicts({
    processes: new Map([[5, 500]]),
    lazyRuns: new Map([[5, [{ vaddr: A, nrPages: 64 }]]]),
    push: (r) => frames.push(r),
    clock: systemClock,
    ...o,
  });
  return { frames, result };
}

describe('scanVerdicts', () => {
  it('judges every page exactly once: known only on an exact match, rewritten pages first', async () => {
    const { mirror, read } = fixture();
    const { frames, result } = judge({ mirror, batchPages: 16, readMemory: read });
    const res = await result;
    assert.deepEqual(frames[frames.length - 1], [], 'ends with the last-verdict frame');
    const all = frames.flat();
    const v = perPage(all);
    for (let n = 0; n < 64; n++) assert.equal(v[n], n < 48 && n !== 10 && n !== 20, `page ${n}`);
    assert.deepEqual(res, { ...res, pages: 64, known: 46, changed: 18, firstPassPages: 4 });
    // The first frame holds the rewritten pages (10, 11, 12 and 20), before any address-order batch.
    assert.deepEqual(judged(frames[0] as VerdictRun[]), [10, 11, 12, 20]);
    // Runs are coalesced.
    assert.ok(all.length < 12, `${all.length} runs`);
  });

  it('judges an unreadable range changed, and stops when aborted', async () => {
    const { mirror } = fixture();
    const res = await judge({
      mirror,
      readMemory: () => {
        throw new Error('EIO');
      },
    }).result;
    assert.equal(res.known, 0);
    assert.equal(res.changed, 64);
    const ac = new AbortController();
    ac.abort();
    const aborted = judge({ mirror, signal: ac.signal, readMemory: () => 0 });
    const ended = aborted.frames;
    await assert.rejects(aborted.result, /aborted/);
    // Even so the destination hears the end: it fetches every page not judged, rather than wait.
    assert.deepEqual(ended[ended.length - 1], []);
  });

  it('judges the pages of small runs (stack, heap) in the first pass, whole', async () => {
    const { mirror, read } = fixture();
    const { frames, result } = judge({
      mirror,
      // The 64 pages, and 8 more far off (unreadable here: judged changed).
      lazyRuns: new Map([
        [
          5,
          [
            { vaddr: A, nrPages: 64 },
            { vaddr: A + 100 * PAGE_SIZE, nrPages: 8 },
          ],
        ],
      ]),
      batchPages: 16,
      readMemory: read,
    });
    await result;
    assert.deepEqual(judged(frames[0] as VerdictRun[]), [
      10,
      11,
      12,
      20,
      ...Array.from({ length: 8 }, (_, i) => 100 + i),
    ]);
    assert.equal(perPage(frames.flat()).filter((x) => x !== undefined).length, 72);
  });

  it('with secondPassAfter, judges the rewritten pages at once and the rest only once it settles', async () => {
    const { mirror, read } = fixture();
    let release!: () => void;
    const restored = new Promise<void>((r) => (release = r));
    const { frames, result } = judge({ mirror, batchPages: 16, readMemory: read, secondPassAfter: restored });
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
    assert.deepEqual(judged(frames.flat()), [10, 11, 12, 20], 'only the first pass before the restore');
    release();
    const res = await result;
    assert.equal(res.pages, 64);
    assert.equal(perPage(frames.flat()).filter((x) => x !== undefined).length, 64);
  });

  it('with write tracking: reads only the suspects, ends the verdicts there, then audits the rest', async () => {
    const { mirror, read } = fixture();
    const reads: number[] = [];
    // The tracker vouches for pages 0-47 except 10 and 20 (written) and says 48-63 were never sent;
    // it is wrong about page 30, whose bytes the memory below changes.
    const tracked: VerdictMirror = {
      ...mirror,
      tracking: true,
      trackedVerdicts: (vpid, runs) => {
        assert.equal(vpid, 5);
        assert.deepEqual(runs, [{ vaddr: A, nrPages: 64 }]);
        const p0 = A / PAGE_SIZE;
        return {
          settled: [
            { page: p0, n: 10, known: true },
            { page: p0 + 11, n: 9, known: true },
            { page: p0 + 21, n: 27, known: true },
            { page: p0 + 48, n: 16, known: false },
          ],
          suspect: [p0 + 10, p0 + 20],
        };
      },
    };
    let audit!: () => void;
    const auditOpen = new Promise<void>((r) => (audit = r));
    const { frames, result } = judge({
      mirror: tracked,
      batchPages: 16,
      readMemory: (pid, buf, vaddr) => {
        reads.push((vaddr - A) / PAGE_SIZE);
        const n = read(pid, buf, vaddr);
        // Page 30 changed without the tracker seeing it.
        const at = 30 * PAGE_SIZE + A - vaddr;
        if (at >= 0 && at < n) buf[at] = (buf[at] as number) ^ 0xff;
        return n;
      },
      secondPassAfter: auditOpen,
    });
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
    // Before the audit: every page judged, the end heard, and only pages 10-20 read (one window).
    assert.deepEqual(frames[frames.length - 1], [], 'the end, before the audit');
    const v = perPage(frames.flat());
    for (let n = 0; n < 64; n++) assert.equal(v[n], n < 48 && n !== 10 && n !== 20, `page ${n}`);
    assert.deepEqual(reads, [10]);
    audit();
    const res = await result;
    assert.equal(frames.filter((f) => f.length === 0).length, 1, 'one end');
    assert.deepEqual(res, {
      ...res,
      pages: 64,
      known: 46,
      changed: 18,
      firstPassPages: 2,
      settledPages: 62,
      audited: 46,
      auditMismatches: 1,
    });
  });
});
