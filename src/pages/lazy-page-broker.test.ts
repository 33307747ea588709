import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { systemClock } from '../core/clock.js';
import { ErrorCode, GodwitError, UnavailableError } from '../core/errors.js';
import { nullLogger } from '../core/logger.js';
import {
  EVERY_LAZY_PAGE,
  LazyPageBroker,
  heldPagesFile,
  type LazyPageBrokerOptions,
  type PageFetchClient,
  type RemoteRun,
} from './lazy-page-broker.js';
import { fakePage, writeFakeCriuImages } from './testing.js';

const A = 0x7f0000000000;

/** `n` fake pages of `vpid` from `vaddr` on, back to back. */
function fakePages(vpid: number, vaddr: number, n: number): Buffer {
  return Buffer.concat(Array.from({ length: n }, (_, i) => fakePage(vpid, vaddr + i * PAGE_SIZE)));
}

/** A source that serves the fake pages, records what was asked, and can be held or killed. */
class FakeFetcher implements PageFetchClient {
  calls: { vpid: number; vaddr: number; nrPages: number }[] = [];
  held: (() => void)[] = [];
  hold = false;
  private failed: ((e: GodwitError) => void)[] = [];
  private dead: GodwitError | undefined;
  async fetch(vpid: number, vaddr: number, nrPages: number): Promise<Buffer> {
    this.calls.push({ vpid, vaddr, nrPages });
    if (this.hold) await new Promise<void>((r) => this.held.push(r));
    if (this.dead) throw this.dead;
    return fakePages(vpid, vaddr, nrPages);
  }
  onFailed(fn: (e: GodwitError) => void): void {
    this.failed.push(fn);
  }
  release(): void {
    for (const r of this.held.splice(0)) r();
  }
  kill(): void {
    this.dead = new UnavailableError(ErrorCode.PageSourceLost, 'source gone');
    for (const f of this.failed) f(this.dead);
    this.release();
  }
}

describe('LazyPageBroker', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-broker-'));
    await writeFakeCriuImages(dir, [
      {
        vpid: 1,
        pagesId: 1,
        runs: [
          { vaddr: A, nrPages: 64, lazy: true },
          { vaddr: A + 0x100000, nrPages: 4, lazy: true },
        ],
      },
    ]);
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  /** Punches the remote pages out of the local file, as the reassembly leaves them (holes). */
  async function holes(remote: RemoteRun[]): Promise<void> {
    const path = join(dir, 'pages-1.img');
    const buf = await readFile(path);
    for (const r of remote) {
      const off = r.vaddr >= A + 0x100000 ? 64 * PAGE_SIZE + (r.vaddr - A - 0x100000) : r.vaddr - A;
      buf.fill(0, off, off + r.nrPages * PAGE_SIZE);
    }
    await writeFile(path, buf);
  }

  const open = (
    fetcher: PageFetchClient,
    remote: RemoteRun[],
    more: Partial<LazyPageBrokerOptions> = {},
  ): Promise<LazyPageBroker> =>
    LazyPageBroker.open({
      criuDir: dir,
      remote,
      fetcher,
      clock: systemClock,
      log: nullLogger,
      batchPages: 8,
      ...more,
    });

  it('serves local pages from the images and never asks the source for them', async () => {
    const f = new FakeFetcher();
    const remote = [{ vpid: 1, vaddr: A + 32 * PAGE_SIZE, nrPages: 32 }];
    await holes(remote);
    const b = await open(f, remote);
    const got = await b.read(1, A, 64, { fault: false });
    // Only the local prefix: the remote pages are not there yet and the background has not started.
    assert.equal(got.length, 32 * PAGE_SIZE);
    assert.ok(
      got.equals(Buffer.concat(Array.from({ length: 32 }, (_, i) => fakePage(1, A + i * PAGE_SIZE)))),
    );
    assert.equal(f.calls.length, 0);
    assert.equal(b.stats().pagesServedLocal, 32);
    await b.close();
  });

  it('a fault fetches the aligned group around the page, at once, and serves the exact bytes', async () => {
    const f = new FakeFetcher();
    const remote = [{ vpid: 1, vaddr: A, nrPages: 64 }];
    await holes(remote);
    const b = await open(f, remote);
    const page = A + 13 * PAGE_SIZE;
    const got = await b.read(1, page, 1, { fault: true });
    assert.ok(got.equals(fakePage(1, page)));
    assert.deepEqual(f.calls, [{ vpid: 1, vaddr: A + 8 * PAGE_SIZE, nrPages: 8 }]);
    // Its neighbours are now local: no new fetch.
    assert.ok(
      (await b.read(1, A + 15 * PAGE_SIZE, 1, { fault: true })).equals(fakePage(1, A + 15 * PAGE_SIZE)),
    );
    assert.equal(f.calls.length, 1);
    const s = b.stats();
    assert.equal(s.pagesOnDemand, 8);
    assert.equal(s.faults, 2);
    assert.equal(s.pagesMissing, 56);
    await b.close();
  });

  it('two reads of a page in flight fetch it once', async () => {
    const f = new FakeFetcher();
    f.hold = true;
    const remote = [{ vpid: 1, vaddr: A, nrPages: 64 }];
    await holes(remote);
    const b = await open(f, remote);
    const r1 = b.read(1, A, 1, { fault: true });
    const r2 = b.read(1, A + PAGE_SIZE, 1, { fault: true });
    await new Promise((r) => setImmediate(r));
    f.release();
    const [x, y] = await Promise.all([r1, r2]);
    assert.ok(x.equals(fakePage(1, A)));
    assert.ok(y.equals(fakePage(1, A + PAGE_SIZE)));
    assert.equal(f.calls.length, 1);
    await b.close();
  });

  it('the background fill brings every remote page once; complete resolves; the file is whole', async () => {
    const f = new FakeFetcher();
    const remote = [
      { vpid: 1, vaddr: A + 8 * PAGE_SIZE, nrPages: 40 },
      { vpid: 1, vaddr: A + 0x100000, nrPages: 4 },
    ];
    await holes(remote);
    const b = await open(f, remote);
    b.start();
    await b.complete;
    const s = b.stats();
    assert.equal(s.pagesRemote, 44);
    assert.equal(s.pagesPushed + s.pagesOnDemand, 44);
    assert.equal(s.pagesMissing, 0);
    const asked = f.calls.reduce((n, c) => n + c.nrPages, 0);
    assert.equal(asked, 44, 'no page fetched twice');
    const whole = await readFile(join(dir, 'pages-1.img'));
    for (let i = 0; i < 64; i++)
      assert.ok(whole.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE).equals(fakePage(1, A + i * PAGE_SIZE)));
    await b.close();
  });

  it('a lost source fails waiting reads and `complete`, and never serves a missing page', async () => {
    const f = new FakeFetcher();
    f.hold = true;
    const remote = [{ vpid: 1, vaddr: A, nrPages: 64 }];
    await holes(remote);
    const b = await open(f, remote);
    const r = b.read(1, A + 3 * PAGE_SIZE, 1, { fault: true });
    await new Promise((x) => setImmediate(x));
    f.kill();
    await assert.rejects(r, (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost);
    await assert.rejects(
      b.complete,
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost,
    );
    await assert.rejects(b.read(1, A + 40 * PAGE_SIZE, 1, { fault: true }));
    assert.equal(b.stats().pagesMissing, 64);
    assert.deepEqual(b.missingRuns(), [{ vpid: 1, vaddr: A, nrPages: 64 }]);
    await b.close();
  });

  it('refuses remote runs outside the pagemap, and pages it has no process for', async () => {
    await assert.rejects(
      open(new FakeFetcher(), [{ vpid: 1, vaddr: A + 60 * PAGE_SIZE, nrPages: 8 }]),
      /not in its pagemap/,
    );
    await assert.rejects(open(new FakeFetcher(), [{ vpid: 2, vaddr: A, nrPages: 1 }]), /not in its pagemap/);
    const b = await open(new FakeFetcher(), []);
    await b.complete;
    await assert.rejects(
      b.read(3, A, 1, { fault: true }),
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageNotHeld,
    );
    await b.close();
  });

  it('EVERY_LAZY_PAGE takes the remote runs from the pagemaps: every page they mark lazy', async () => {
    await holes([
      { vpid: 1, vaddr: A, nrPages: 64 },
      { vpid: 1, vaddr: A + 0x100000, nrPages: 4 },
    ]);
    const f = new FakeFetcher();
    const b = await LazyPageBroker.open({
      criuDir: dir,
      remote: EVERY_LAZY_PAGE,
      fetcher: f,
      clock: systemClock,
      log: nullLogger,
    });
    assert.equal(b.stats().pagesRemote, 68);
    assert.ok((await b.read(1, A + 0x101000, 1, { fault: true })).equals(fakePage(1, A + 0x101000)));
    assert.equal(f.calls.length, 1);
    await b.close();
  });

  it("pages a held dump left in the processes are fetched into godwit's own file and served from it", async () => {
    const held = await mkdtemp(join(tmpdir(), 'godwit-broker-held-'));
    try {
      await writeFakeCriuImages(held, [
        {
          vpid: 4,
          pagesId: 3,
          runs: [
            { vaddr: 0x400000, nrPages: 2, lazy: false },
            { vaddr: A, nrPages: 12, lazy: true, absent: true },
          ],
        },
      ]);
      const f = new FakeFetcher();
      const b = await LazyPageBroker.open({
        criuDir: held,
        remote: [{ vpid: 4, vaddr: A, nrPages: 12 }],
        fetcher: f,
        clock: systemClock,
        log: nullLogger,
        batchPages: 4,
      });
      assert.ok(
        (await b.read(4, 0x400000, 2, { fault: false })).equals(
          Buffer.concat([fakePage(4, 0x400000), fakePage(4, 0x401000)]),
        ),
      );
      assert.ok(
        (await b.read(4, A + 5 * PAGE_SIZE, 1, { fault: true })).equals(fakePage(4, A + 5 * PAGE_SIZE)),
      );
      b.start();
      await b.complete;
      const file = await readFile(join(held, heldPagesFile(4)));
      assert.equal(file.length, 12 * PAGE_SIZE);
      for (let i = 0; i < 12; i++)
        assert.ok(file.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE).equals(fakePage(4, A + i * PAGE_SIZE)));
      assert.equal(b.stats().pagesServedLocal, 2);
      await b.close();
    } finally {
      await rm(held, { recursive: true, force: true });
    }
  });

  it('hybrid: pages wait for verdicts; known ones come from the local store, changed ones from the source', async () => {
    const remote = [{ vpid: 1, vaddr: A, nrPages: 64 }];
    await holes(remote);
    const f = new FakeFetcher();
    const localAsked: number[] = [];
    const b = await open(f, remote, {
      // The "store" holds the right bytes for every page but page 5 (a stale index entry).
      local: async (vpid, vaddr, n) => {
        localAsked.push((vaddr - A) / PAGE_SIZE);
        if (vaddr <= A + 5 * PAGE_SIZE && A + 5 * PAGE_SIZE < vaddr + n * PAGE_SIZE) return undefined;
        return fakePages(vpid, vaddr, n);
      },
    });
    b.start();
    // No verdict yet: the background fetches nothing; a fault fetches from the source (exact).
    await new Promise((r) => setImmediate(r));
    assert.equal(f.calls.length, 0, 'nothing fetched in the background before verdicts');
    assert.ok(
      (await b.read(1, A + 40 * PAGE_SIZE, 1, { fault: true })).equals(fakePage(1, A + 40 * PAGE_SIZE)),
    );
    assert.equal(f.calls.length, 1);
    // Verdicts: pages 0-31 known, 32-35 changed, the rest known.
    b.verdict(1, A, 32, true);
    b.verdict(1, A + 32 * PAGE_SIZE, 4, false);
    b.verdict(1, A + 36 * PAGE_SIZE, 28, true);
    b.verdictsEnd();
    const got = await b.read(1, A, 4, { fault: false });
    assert.ok(got.equals(Buffer.concat([0, 1, 2, 3].map((i) => fakePage(1, A + i * PAGE_SIZE)))));
    // Page 5's local copy is unreadable: it is fetched instead.
    assert.ok(
      (await b.read(1, A + 5 * PAGE_SIZE, 1, { fault: true })).equals(fakePage(1, A + 5 * PAGE_SIZE)),
    );
    await b.complete;
    const st = b.stats();
    const fetched = f.calls.map((c) => (c.vaddr - A) / PAGE_SIZE);
    assert.ok(fetched.includes(32) && fetched.includes(5), `fetched ${fetched}`);
    assert.ok(!fetched.includes(0) && !fetched.includes(50), 'known pages never cross');
    assert.equal(st.pagesFromStore + st.pagesOnDemand + st.pagesPushed, 64);
    assert.equal(st.pagesMissing, 0);
    assert.deepEqual(b.missingRuns(), []);
    // Every page reads exactly, wherever it came from.
    for (let i = 0; i < 64; i += 8) {
      assert.ok(
        (await b.read(1, A + i * PAGE_SIZE, 8, { fault: false })).equals(
          Buffer.concat(Array.from({ length: 8 }, (_, k) => fakePage(1, A + (i + k) * PAGE_SIZE))),
        ),
      );
    }
    await b.close();
  });

  it('fetches the changed pages of small runs (the stack, the heap) before the big runs', async () => {
    const B = A + 0x100000;
    const remote = [
      { vpid: 1, vaddr: A, nrPages: 64 },
      { vpid: 1, vaddr: B, nrPages: 4 },
    ];
    await holes(remote);
    const f = new FakeFetcher();
    const b = await open(f, remote, { local: async (vpid, vaddr, n) => fakePages(vpid, vaddr, n) });
    b.start();
    // One frame, in address order: the big run's changed pages come first in it.
    b.verdicts([
      { vpid: 1, vaddr: A, nrPages: 16, known: false },
      { vpid: 1, vaddr: A + 16 * PAGE_SIZE, nrPages: 48, known: true },
      { vpid: 1, vaddr: B, nrPages: 4, known: false },
    ]);
    b.verdictsEnd();
    await b.complete;
    const order = f.calls.map((c) => c.vaddr);
    assert.equal(order[0], B, `the small run first: ${order.map((v) => (v - A) / PAGE_SIZE).join(',')}`);
    assert.equal(b.stats().pagesPushed, 20);
    await b.close();
  });

  it('hybrid: a source lost before its verdicts leaves the pending pages missing', async () => {
    const remote = [{ vpid: 1, vaddr: A, nrPages: 64 }];
    await holes(remote);
    const f = new FakeFetcher();
    const b = await LazyPageBroker.open({
      criuDir: dir,
      remote,
      fetcher: f,
      clock: systemClock,
      log: nullLogger,
      local: async () => undefined,
    });
    b.start();
    b.verdict(1, A, 16, true);
    f.kill();
    await assert.rejects(
      b.complete,
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost,
    );
    assert.equal(b.stats().pagesMissing, 48);
    assert.deepEqual(b.missingRuns(), [{ vpid: 1, vaddr: A + 16 * PAGE_SIZE, nrPages: 48 }]);
    await b.close();
  });
});
