import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { createInterface, type Interface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE, type Manifest } from '../core/chunks.js';
import { ErrorCode, NotFoundError } from '../core/errors.js';
import { digestOf, isZero, manifestDigests, MemoryChunkStore, parseManifest } from '../chunks/index.js';
import { MemoryMirror, summarize, trackedVerdictsOf } from './memory-mirror.js';
import { WriteTracker } from './write-tracker.js';
import { buildWriteTracker } from './write-tracker-testing.js';
import { systemClock } from '../core/clock.js';
import { readMemoryIndex } from './memory-index.js';
import { DecayedFrequencyPredictor, NoPredictor } from './predictor.js';
import { containerProcesses, readProcessPages, type ContainerProcess } from './process-memory.js';

const MiB = 1024 * 1024;
const BUFFER_PAGES = (8 * MiB) / PAGE_SIZE;
/** Every page of the child's buffer starts with this marker and its page number. */
const MARKER = 'GODWIT-MIRROR-TEST-PAGE';

/**
 * The child: an 8 MiB buffer of distinct, non-zero pages (marker, page number, a fill byte);
 * `dirty N` rewrites pages 0 … N−1 (marker and number kept, the rest new random bytes).
 */
const CHILD = `
const { randomFillSync } = require('node:crypto');
const PAGE = ${PAGE_SIZE};
const buf = Buffer.alloc(${8 * MiB});
for (let i = 0; i < ${BUFFER_PAGES}; i++) {
  const p = buf.subarray(i * PAGE, (i + 1) * PAGE);
  p.fill(1 + (i % 251));
  p.write(${JSON.stringify(MARKER)}, 0, 'latin1');
  p.writeUInt32LE(i, ${MARKER.length});
}
globalThis.keep = buf;
const rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = /^dirty (\\d+)$/.exec(line);
  if (m) {
    for (let i = 0; i < Number(m[1]); i++) randomFillSync(buf, i * PAGE + 64, PAGE - 64);
  }
  const w = /^write (\\d+)$/.exec(line);
  if (w) randomFillSync(buf, Number(w[1]) * PAGE + 64, PAGE - 64);
  // A write of the bytes a page already holds (invisible to a byte comparison).
  const same = /^same (\\d+)$/.exec(line);
  if (same) {
    const at = Number(same[1]) * PAGE + 100;
    buf[at] = buf[at];
  }
  process.stdout.write('done\\n');
});
process.stdout.write('ready\\n');
`;

interface Child {
  proc: ChildProcessWithoutNullStreams;
  lines: Interface;
  next(): Promise<string>;
}

async function startChild(): Promise<Child> {
  const proc = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: proc.stdout });
  const queue: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  lines.on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else queue.push(l);
  });
  const next = (): Promise<string> => {
    const l = queue.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('child did not answer')), 5000);
      waiters.push((x) => {
        clearTimeout(timer);
        resolve(x);
      });
    });
  };
  const child = { proc, lines, next };
  assert.equal(await child.next(), 'ready');
  return child;
}

async function dirty(child: Child, n: number): Promise<void> {
  child.proc.stdin.write(`dirty ${n}\n`);
  assert.equal(await child.next(), 'done');
}

/** Rewrites logical page n of the child's buffer. */
async function write(child: Child, n: number): Promise<void> {
  child.proc.stdin.write(`write ${n}\n`);
  assert.equal(await child.next(), 'done');
}

/** Writes logical page n of the child's buffer with the bytes it already holds. */
async function writeSame(child: Child, n: number): Promise<void> {
  child.proc.stdin.write(`same ${n}\n`);
  assert.equal(await child.next(), 'done');
}

async function stopChild(child: Child | undefined): Promise<void> {
  if (child === undefined || child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  const exited = once(child.proc, 'exit');
  child.proc.kill('SIGKILL');
  await exited;
}

const MARKER_BYTES = Buffer.from(MARKER, 'latin1');

/**
 * The child's buffer as currently in its memory: for each of its logical pages n, the memory
 * page holding n's marker, with that page's address and bytes. The buffer need not start on a
 * page boundary (malloc puts a header before a large block), so the marker is looked for at
 * any offset and a memory page also holds the tail of logical page n − 1.
 */
async function bufferPages(pid: number): Promise<Map<number, { vaddr: number; data: Buffer }>> {
  const out = new Map<number, { vaddr: number; data: Buffer }>();
  await readProcessPages(pid, (vaddr, data) => {
    for (let off = 0; off < data.length; off += PAGE_SIZE) {
      const page = data.subarray(off, off + PAGE_SIZE);
      const at = page.indexOf(MARKER_BYTES);
      if (at < 0 || at + 64 > PAGE_SIZE) continue;
      const n = page.readUInt32LE(at + MARKER_BYTES.length);
      // Bytes 27 … 63 of a logical page keep the fill byte even when rewritten: anything else
      // holding the marker (V8's copy of the script source) is not a page of the buffer.
      if (n < BUFFER_PAGES && page[at + 48] === 1 + (n % 251)) {
        out.set(n, { vaddr: vaddr + off, data: Buffer.from(page) });
      }
    }
  });
  return out;
}

function memoryEntry(m: Manifest, vpid: number): Extract<Manifest['entries'][number], { type: 'file' }> {
  const e = m.entries.find((x) => x.path === `memory/${vpid}`);
  assert.ok(e !== undefined && e.type === 'file', `manifest has memory/${vpid}`);
  return e;
}

describe('summarize', () => {
  it('merges slots into runs in address order with their flags, also when added out of order', () => {
    // Page numbers of a 64-bit address space, as in a real table (not small integers).
    const hi = 0x7f33_0000_0000 / PAGE_SIZE;
    const table = new Map([
      [hi + 5, { touched: false, digest: 'd' as const }],
      [hi + 6, { touched: false, digest: 'd' as const }],
      [hi + 7, { touched: true, digest: 'd' as const }],
      [hi + 8, { touched: false, digest: undefined }],
      [0x400, { touched: true, digest: undefined }],
      [hi + 1, { touched: false, digest: 'zero' as const }],
      [hi + 2, { touched: false, digest: 'd' as const }],
    ]);
    const s = summarize(table);
    assert.deepEqual([...s.start], [0x400, hi + 1, hi + 5, hi + 7, hi + 8]);
    assert.deepEqual([...s.end], [0x401, hi + 3, hi + 7, hi + 8, hi + 9]);
    assert.deepEqual([...s.flags], [1, 2, 2, 3, 0]);
    assert.deepEqual(s.since, []);
    const sorted = summarize(new Map([...table].sort((a, b) => a[0] - b[0])));
    assert.deepEqual(sorted, s);
    const none = summarize(new Map());
    assert.equal(none.start.length, 0);
  });
});

describe('trackedVerdictsOf', () => {
  it('gives the verdicts of a lookup per page, on random tables, regions, writes and runs', () => {
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const hi = 0x7ffd_0000_0000 / PAGE_SIZE;
    for (let trial = 0; trial < 200; trial++) {
      const span = 20 + rnd(200);
      const table = new Map<number, { touched: boolean; digest: 'd' | undefined }>();
      for (let p = 0; p < span; p++)
        if (rnd(8) > 0) table.set(hi + p, { touched: rnd(10) === 0, digest: rnd(6) === 0 ? undefined : 'd' });
      const regions: { start: number; end: number }[] = [];
      for (let p = rnd(5); p < span;) {
        const len = 1 + rnd(40);
        regions.push({ start: hi + p, end: hi + p + len });
        p += len + 1 + rnd(10);
      }
      const runs: { vaddr: number; nrPages: number }[] = [];
      for (let p = rnd(3); p < span;) {
        const len = 1 + rnd(30);
        runs.push({ vaddr: (hi + p) * PAGE_SIZE, nrPages: Math.min(len, span - p) });
        p += len + rnd(4);
      }
      const sum = summarize(new Map([...table].sort(() => rnd(3) - 1)));
      const since = Array.from({ length: rnd(4) }, () => hi + rnd(span));
      sum.since.push(...since);
      // The definition: a lookup per page.
      const suspect: number[] = [];
      const settled: { page: number; n: number; known: boolean }[] = [];
      for (const r of runs) {
        for (let p = r.vaddr / PAGE_SIZE; p < r.vaddr / PAGE_SIZE + r.nrPages; p++) {
          const s = table.get(p);
          if (!s || s.touched || since.includes(p) || !regions.some((g) => g.start <= p && p < g.end)) {
            suspect.push(p);
            continue;
          }
          const known = s.digest !== undefined;
          const last = settled[settled.length - 1];
          if (last && last.known === known && last.page + last.n === p) last.n++;
          else settled.push({ page: p, n: 1, known });
        }
      }
      assert.deepEqual(trackedVerdictsOf(sum, regions, runs), { settled, suspect }, `trial ${trial}`);
    }
  });
});

describe('MemoryMirror on a live process', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  let child: Child | undefined;
  let procs: ContainerProcess[];

  before(async () => {
    child = await startChild();
    procs = await containerProcesses(child.proc.pid as number);
  });
  after(async () => {
    await stopChild(child);
  });

  it('finds the process (vpid = pid outside a pid namespace)', () => {
    assert.equal(procs.length, 1);
    assert.equal(procs[0]?.pid, child?.proc.pid);
    assert.ok(Number.isInteger(procs[0]?.vpid) && (procs[0]?.vpid ?? 0) > 0);
  });

  it('scans everything in round 0 and then only the dirtied pages; knows digests of exact bytes', async () => {
    const c = child as Child;
    const vpid = (procs[0] as ContainerProcess).vpid;
    const mirror = new MemoryMirror('test', new NoPredictor());
    const r0 = await mirror.scan(procs);
    assert.equal(r0.round, 0);
    assert.ok(r0.pagesScanned >= BUFFER_PAGES, `${r0.pagesScanned} pages scanned`);
    assert.equal(r0.dirtyPages, r0.pagesScanned, 'round 0: every page is new');
    assert.equal(r0.heldBackPages, 0);
    assert.equal(mirror.pages, r0.pagesScanned);
    assert.ok(r0.newChunks >= BUFFER_PAGES, `${r0.newChunks} new chunks`);
    assert.equal(r0.newChunkBytes, r0.newChunks * PAGE_SIZE);
    assert.equal(r0.manifest.label, 'test:round-0');
    const e0 = memoryEntry(parseManifest(r0.manifest), vpid);
    assert.equal(e0.size, r0.pagesScanned * PAGE_SIZE, 'every page is in the manifest');

    // Every page of the buffer was seen, at its address, with its digest.
    const pages = await bufferPages(c.proc.pid as number);
    assert.equal(pages.size, BUFFER_PAGES);
    const p500 = pages.get(500);
    assert.ok(p500);
    assert.equal(mirror.knownDigest(vpid, p500.vaddr, p500.data), digestOf(p500.data));
    assert.ok(manifestDigests(r0.manifest).includes(digestOf(p500.data)));
    const changed = Buffer.from(p500.data);
    changed.writeUInt8(changed.readUInt8(PAGE_SIZE - 1) ^ 0xff, PAGE_SIZE - 1);
    assert.equal(mirror.knownDigest(vpid, p500.vaddr, changed), undefined);
    assert.equal(mirror.knownDigest(vpid + 1_000_000, p500.vaddr, p500.data), undefined, 'unknown process');
    assert.equal(mirror.knownDigest(vpid, p500.vaddr + PAGE_SIZE, p500.data), undefined, 'another page');

    // Dirty 100 pages of the buffer: the next scan finds them (and a little of Node's own heap).
    await dirty(c, 100);
    const r1 = await mirror.scan(procs);
    assert.equal(r1.round, 1);
    assert.ok(r1.dirtyPages >= 100 && r1.dirtyPages < 2000, `${r1.dirtyPages} dirty pages`);
    assert.ok(r1.newChunks >= 100 && r1.newChunks <= r1.dirtyPages, `${r1.newChunks} new chunks`);
    assert.equal(r1.heldBackPages, 0);
    assert.equal(r1.unsentPages, 0);
    const after1 = await bufferPages(c.proc.pid as number);
    const p0old = pages.get(0);
    const p0 = after1.get(0);
    assert.ok(p0 && p0old);
    assert.equal(p0.vaddr, p0old.vaddr);
    assert.notDeepEqual(p0.data, p0old.data, 'page 0 was rewritten');
    assert.equal(mirror.knownDigest(vpid, p0.vaddr, p0.data), digestOf(p0.data), 'the new content');
    assert.equal(mirror.knownDigest(vpid, p0old.vaddr, p0old.data), undefined, 'not the old content');
    const p99 = after1.get(99);
    const p101 = after1.get(101);
    assert.ok(p99 && p101);
    assert.notDeepEqual(p99.data, pages.get(99)?.data);
    // (The memory page of logical page 100 may hold the rewritten tail of page 99.)
    assert.deepEqual(p101.data, pages.get(101)?.data, 'page 101 was not touched');
    assert.equal(mirror.knownDigest(vpid, p101.vaddr, p101.data), digestOf(p101.data));
    const m1 = manifestDigests(r1.manifest);
    const source0 = mirror.chunkSource();
    assert.ok(m1.includes(digestOf(p0.data)));
    assert.ok(!m1.includes(digestOf(p0old.data)), 'the old content of page 0 left the manifest');

    // The round's manifest says which page each chunk is: a destination's index agrees.
    const index = (
      await readMemoryIndex(r1.manifest, async (e) => {
        if (e.inline !== undefined) return Buffer.from(e.inline, 'base64');
        return Buffer.concat(
          await Promise.all(
            (e.chunks ?? []).map((c) => ('digest' in c ? source0.get(c.digest) : Buffer.alloc(c.zero))),
          ),
        );
      })
    ).get(vpid);
    assert.ok(index, 'the manifest has an address map');
    assert.equal(index.size, mirror.pages);
    for (const p of [p0, p99, p101]) assert.equal(index.lookup(p.vaddr), digestOf(p.data));
    assert.equal(index.lookup(0), undefined, 'no page at address 0');
    assert.ok(mirror.rewrittenPages(vpid).includes(p0.vaddr / PAGE_SIZE), 'page 0 was rewritten');
    assert.ok(!mirror.rewrittenPages(vpid).includes(p101.vaddr / PAGE_SIZE), 'page 101 was not');

    // chunkSource: the last round's chunks, and `missing` lists only what it lacks.
    const source = source0;
    const d0 = digestOf(p0.data);
    assert.deepEqual(await source.get(d0), p0.data);
    assert.equal(await source.has(d0), true);
    for (const d of m1.slice(0, 50)) assert.equal(digestOf(await source.get(d)), d);
    const unknown = digestOf(Buffer.from('not a page of the child'));
    const old = digestOf(p0old.data);
    assert.deepEqual(await source.missing([d0, unknown, m1[1] as string, unknown, old]), [unknown, old]);
    assert.deepEqual(await source.missing(m1), []);
    assert.equal(await source.has(unknown), false);
    await assert.rejects(
      source.get(unknown),
      (err: unknown) => err instanceof NotFoundError && err.code === ErrorCode.ChunkNotFound,
    );
    const usage = await source.usage();
    assert.equal(usage.chunks, m1.length);
    // With a fallback store, chunks the mirror lacks come from there.
    const fallback = new MemoryChunkStore();
    const extra = Buffer.from('fallback chunk');
    await fallback.put(digestOf(extra), extra);
    const layered = mirror.chunkSource(fallback);
    assert.deepEqual(await layered.get(digestOf(extra)), extra);
    assert.deepEqual(await layered.missing([d0, digestOf(extra), unknown]), [unknown]);
    assert.deepEqual(await layered.get(d0), p0.data);

    // Zero pages are zero runs, never chunks.
    const entry = memoryEntry(r1.manifest, vpid);
    for (const ref of entry.chunks ?? []) {
      if ('digest' in ref) assert.equal(isZero(await source.get(ref.digest)), false);
    }
  });

  it('holds back pages dirtied every round with a DecayedFrequencyPredictor, and not with holdBack: false', async () => {
    const c = child as Child;
    const vpid = (procs[0] as ContainerProcess).vpid;
    const mirror = new MemoryMirror('predict', new DecayedFrequencyPredictor());
    const r0 = await mirror.scan(procs);
    assert.equal(r0.heldBackPages, 0);
    const held: number[] = [];
    for (let round = 1; round <= 4; round++) {
      await dirty(c, 100);
      const r = await mirror.scan(procs);
      assert.ok(r.dirtyPages >= 100, `round ${round}: ${r.dirtyPages} dirty`);
      held.push(r.heldBackPages);
    }
    // Round 1 has no history yet; by the last round the 100 pages written every round are held.
    assert.equal(held[0], 0, `held back per round: ${held.join(', ')}`);
    assert.ok((held[3] ?? 0) >= 50, `held back per round: ${held.join(', ')}`);
    // A held-back page is not in the round's manifest, and the mirror does not claim it.
    const pages = await bufferPages(c.proc.pid as number);
    const p0 = pages.get(0);
    assert.ok(p0);
    assert.equal(mirror.knownDigest(vpid, p0.vaddr, p0.data), undefined, 'page 0 was held back');

    await dirty(c, 100);
    const all = await mirror.scan(procs, { holdBack: false });
    assert.equal(all.heldBackPages, 0);
    assert.ok(all.dirtyPages >= 100);
    const now = await bufferPages(c.proc.pid as number);
    const q0 = now.get(0);
    assert.ok(q0);
    assert.equal(mirror.knownDigest(vpid, q0.vaddr, q0.data), digestOf(q0.data), 'page 0 is sent now');
    assert.equal(memoryEntry(all.manifest, vpid).size, all.pagesScanned * PAGE_SIZE, 'nothing held back');
  });

  it('closing pass: rereads only the pages written during the rounds, sends what changed, adopts it', async () => {
    const c = child as Child;
    const vpid = (procs[0] as ContainerProcess).vpid;
    const mirror = new MemoryMirror('closing', new NoPredictor());
    await mirror.scan(procs);
    await dirty(c, 50);
    const r1 = await mirror.scan(procs);
    const rewritten = mirror.rewrittenPages(vpid).length;
    assert.ok(rewritten >= 50, `${rewritten} pages rewritten`);

    // Pages 0 … 19 written again after the last round: the pass reads the rewritten pages only
    // and finds those 20 (and whatever of Node's heap changed among the rewritten).
    await dirty(c, 20);
    const pass = await mirror.closingScan(procs, 1);
    assert.equal(pass.pagesScanned >= rewritten, true, `${pass.pagesScanned} read`);
    assert.ok(pass.pagesScanned < r1.pagesScanned / 4, `${pass.pagesScanned} of ${r1.pagesScanned} read`);
    assert.ok(pass.changed.length >= 20 && pass.changed.length < rewritten, `${pass.changed.length} changed`);
    assert.equal(pass.manifest.label, 'closing:closing-1');
    const now = await bufferPages(c.proc.pid as number);
    const p0 = now.get(0);
    const p30 = now.get(30);
    assert.ok(p0 && p30);
    // Before `adopt`, the mirror still says what the destination held before the pass.
    assert.equal(mirror.knownDigest(vpid, p0.vaddr, p0.data), undefined, 'page 0 changed since the round');
    assert.equal(mirror.knownDigest(vpid, p30.vaddr, p30.data), digestOf(p30.data), 'page 30 did not');

    // The pass's manifest names exactly the changed pages, at their addresses, with their chunks.
    const index = (
      await readMemoryIndex(parseManifest(pass.manifest), async (e) => {
        if (e.inline !== undefined) return Buffer.from(e.inline, 'base64');
        return Buffer.concat(
          await Promise.all(
            (e.chunks ?? []).map((k) => ('digest' in k ? pass.source.get(k.digest) : Buffer.alloc(k.zero))),
          ),
        );
      })
    ).get(vpid);
    assert.ok(index);
    assert.equal(index.size, pass.changed.length);
    assert.equal(index.lookup(p0.vaddr), digestOf(p0.data));
    assert.equal(index.lookup(p30.vaddr), undefined, 'an unchanged page is not in the pass');
    assert.deepEqual(await pass.source.get(digestOf(p0.data)), p0.data);

    mirror.adopt(pass);
    assert.equal(mirror.knownDigest(vpid, p0.vaddr, p0.data), digestOf(p0.data), 'adopted: the new content');
    assert.equal(mirror.knownDigest(vpid, p30.vaddr, p30.data), digestOf(p30.data));
    assert.equal(mirror.holds(digestOf(p0.data)), true);

    // Nothing written since: a second pass finds nothing of the buffer.
    const again = await mirror.closingScan(procs, 2);
    const bufferAddrs = new Set([...now.values()].map((p) => p.vaddr / PAGE_SIZE));
    assert.equal(again.changed.filter((x) => bufferAddrs.has(x.page)).length, 0);

    // A page first written now (300: not written during the rounds) is found only by reading all.
    await write(c, 300);
    const p300 = (await bufferPages(c.proc.pid as number)).get(300);
    assert.ok(p300);
    const hot = await mirror.closingScan(procs, 3);
    assert.ok(!hot.changed.some((x) => x.page === p300.vaddr / PAGE_SIZE), 'not among the pages read');
    const all = await mirror.closingScan(procs, 3, { all: true });
    assert.ok(all.pagesScanned >= r1.pagesScanned - 64, `${all.pagesScanned} pages read`);
    const found = all.changed.find((x) => x.page === p300.vaddr / PAGE_SIZE);
    assert.ok(found, 'read all: page 300 found');
    assert.deepEqual(found.data, p300.data);
    mirror.adopt(all);
    assert.equal(mirror.knownDigest(vpid, p300.vaddr, p300.data), digestOf(p300.data));
    assert.ok(mirror.rewrittenPages(vpid).includes(p300.vaddr / PAGE_SIZE), 'now among the pages written');
  });
});

describe(
  'MemoryMirror with write tracking',
  { skip: process.getuid?.() !== 0 ? 'needs root' : false },
  () => {
    let child: Child | undefined;
    let procs: ContainerProcess[];
    let tracker: WriteTracker | undefined;
    let bin: { path: string; cleanup(): Promise<void> };

    before(async () => {
      bin = await buildWriteTracker();
      child = await startChild();
      procs = await containerProcesses(child.proc.pid as number);
    });
    after(async () => {
      await tracker?.close();
      await stopChild(child);
      await bin?.cleanup();
    });

    it('knows pages written with the same bytes, judges only written pages, and reads only them', async () => {
      const c = child as Child;
      const vpid = (procs[0] as ContainerProcess).vpid;
      tracker = await WriteTracker.start({ bin: bin.path, processes: procs, clock: systemClock });
      assert.deepEqual(tracker.untracked, []);
      const mirror = new MemoryMirror('tracked', new NoPredictor());
      mirror.trackWith(tracker);
      assert.equal(mirror.tracking, true);
      const r0 = await mirror.scan(procs);
      const pages = await bufferPages(c.proc.pid as number);
      const at = (n: number): number => (pages.get(n) as { vaddr: number }).vaddr / PAGE_SIZE;
      const runs = [...pages.values()]
        .map((p) => p.vaddr / PAGE_SIZE)
        .sort((a, b) => a - b)
        .map((pg) => ({ vaddr: pg * PAGE_SIZE, nrPages: 1 }));
      assert.ok(tracker.tracked(vpid, at(7)), 'the buffer is tracked');

      // Page 7 written with its own bytes, page 9 with new ones.
      await writeSame(c, 7);
      await write(c, 9);
      const w = await tracker.collect();
      const written = new Set(w.written.get(vpid));
      assert.ok(written.has(at(7)) && written.has(at(9)), 'both writes reported');
      assert.ok(!written.has(at(500)), 'page 500 was not written');
      assert.ok(w.pages < r0.pagesScanned / 4, `${w.pages} pages written`);
      mirror.markWritten(w.written);
      const tv = mirror.trackedVerdicts(vpid, runs);
      assert.ok(tv);
      assert.ok(tv.suspect.includes(at(7)) && tv.suspect.includes(at(9)));
      assert.ok(!tv.suspect.includes(at(500)));
      const settled = (pg: number): boolean | undefined =>
        tv.settled.find((r) => pg >= r.page && pg < r.page + r.n)?.known;
      assert.equal(settled(at(500)), true, 'page 500 known without reading it');
      assert.equal(settled(at(7)), undefined);
      assert.equal(tv.settled.reduce((n, r) => n + r.n, 0) + tv.suspect.length, runs.length);

      // A closing pass reads the written pages only: page 9 changed, page 7 did not.
      const pass = await mirror.closingScan(procs, 1, { all: true });
      assert.ok(pass.pagesScanned < r0.pagesScanned / 4, `${pass.pagesScanned} read (all is ignored)`);
      assert.ok(pass.changed.some((x) => x.page === at(9)));
      assert.ok(!pass.changed.some((x) => x.page === at(7)));
      assert.ok(pass.matched.get(vpid)?.includes(at(7)));
      mirror.adopt(pass);
      const after = mirror.trackedVerdicts(vpid, runs);
      assert.deepEqual(after?.suspect ?? [], [], 'adopted: every page of the buffer vouched for');

      // Prepared before the freeze: a page written after it is still left to its bytes.
      mirror.prepareVerdicts();
      assert.deepEqual(mirror.trackedVerdicts(vpid, runs), after, 'the same verdicts from the summary');
      await write(c, 13);
      mirror.markWritten((await tracker.collect()).written);
      const late = mirror.trackedVerdicts(vpid, runs);
      // (The buffer need not be page-aligned: a logical page's write may reach the next page.)
      assert.ok(late && late.suspect.includes(at(13)) && late.suspect.length <= 2, `${late?.suspect}`);
      assert.equal(late.settled.reduce((n, r) => n + r.n, 0) + late.suspect.length, runs.length);

      // A process the tracker does not know: nothing vouched for.
      const other = mirror.trackedVerdicts(vpid + 1_000_000, runs);
      assert.equal(other?.suspect.length, runs.length);

      // Closed: the process runs on, unprotected, and no page counts as tracked any more.
      await tracker.close();
      await write(c, 11);
    });

    it('refuses, saying why, when it cannot track', async () => {
      await assert.rejects(
        WriteTracker.start({ bin: bin.path, processes: [{ pid: 2 ** 22 + 7, vpid: 1 }], clock: systemClock }),
        (err: unknown) => (err as { code?: string }).code === ErrorCode.WriteTrackingUnavailable,
      );
      await assert.rejects(
        WriteTracker.start({ bin: '/nonexistent/godwit-wptrack', processes: procs, clock: systemClock }),
        /cannot run/,
      );
    });
  },
);
