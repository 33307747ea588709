import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PAGE_SIZE } from '../core/chunks.js';
import { ErrorCode, GodwitError } from '../core/errors.js';
import { nullLogger } from '../core/logger.js';
import { PageFetcher, findRun, startPageSource, type PageSource } from './page-fetch.js';
import { fakePage, writeFakeCriuImages } from './testing.js';

const token = Buffer.alloc(16, 7);
const A = 0x7f0000000000;

function expected(vpid: number, vaddr: number, n: number): Buffer {
  return Buffer.concat(Array.from({ length: n }, (_, i) => fakePage(vpid, vaddr + i * PAGE_SIZE)));
}

describe('findRun', () => {
  it('finds the run holding an address, or none', () => {
    const runs = [
      { vaddr: 0x1000, nrPages: 2 },
      { vaddr: 0x5000, nrPages: 1 },
    ];
    assert.equal(findRun(runs, 0x1000), runs[0]);
    assert.equal(findRun(runs, 0x2000), runs[0]);
    assert.equal(findRun(runs, 0x3000), undefined);
    assert.equal(findRun(runs, 0x5000), runs[1]);
    assert.equal(findRun(runs, 0x6000), undefined);
    assert.equal(findRun([], 0x1000), undefined);
  });
});

describe('page source and fetcher', () => {
  let dir: string;
  let src: PageSource;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-page-fetch-'));
    await writeFakeCriuImages(dir, [
      {
        vpid: 1,
        pagesId: 1,
        runs: [
          { vaddr: A, nrPages: 40, lazy: true },
          { vaddr: A + 0x100000, nrPages: 3, lazy: false },
        ],
      },
      { vpid: 9, pagesId: 2, runs: [{ vaddr: 0x400000, nrPages: 5, lazy: true }] },
    ]);
    src = await startPageSource({ host: '127.0.0.1', criuDir: dir, token, log: nullLogger });
  });
  after(async () => {
    await src.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves pages by process and address, pipelined, in order', async () => {
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token });
    try {
      const [a, b, c] = await Promise.all([
        f.fetch(1, A, 16),
        f.fetch(9, 0x401000, 2),
        f.fetch(1, A + 0x101000, 1),
      ]);
      assert.ok(a.equals(expected(1, A, 16)));
      assert.ok(b.equals(expected(9, 0x401000, 2)));
      assert.ok(c.equals(expected(1, A + 0x101000, 1)));
      assert.ok(f.bytesWire > 0);
    } finally {
      f.close();
    }
  });

  it('answers fewer pages where the run ends', async () => {
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token });
    try {
      const got = await f.fetch(9, 0x403000, 10);
      assert.equal(got.length, 2 * PAGE_SIZE);
      assert.ok(got.equals(expected(9, 0x403000, 2)));
    } finally {
      f.close();
    }
  });

  it('rejects a page it does not hold, and goes on serving', async () => {
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token });
    try {
      await assert.rejects(
        f.fetch(1, A + 0x200000, 1),
        (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageNotHeld,
      );
      await assert.rejects(
        f.fetch(5, A, 1),
        (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageNotHeld,
      );
      assert.ok((await f.fetch(1, A, 1)).equals(expected(1, A, 1)));
    } finally {
      f.close();
    }
  });

  it('drops a client with the wrong token or a malformed request', async () => {
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token: Buffer.alloc(16, 1) });
    await assert.rejects(
      f.fetch(1, A, 1),
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost,
    );
    // A raw client asking for 0 pages is disconnected.
    const sock = connect({ host: src.address, port: src.port });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const req = Buffer.alloc(24);
    req.writeUInt32LE(1, 0);
    req.writeUInt32LE(1, 4);
    req.writeBigUInt64LE(BigInt(A), 8);
    req.writeUInt32LE(0, 16);
    sock.write(Buffer.concat([token, req]));
    await new Promise<void>((r) => sock.once('close', () => r()));
  });

  it('a source that goes away fails every pending fetch with PageSourceLost', async () => {
    const dying = await startPageSource({
      host: '127.0.0.1',
      criuDir: dir,
      token,
      log: nullLogger,
      dropAfterPages: 4,
    });
    const f = await PageFetcher.connect({ host: dying.address, port: dying.port, token });
    let failed: GodwitError | undefined;
    f.onFailed((e) => (failed = e));
    const first = f.fetch(1, A, 4);
    const second = f.fetch(1, A + 4 * PAGE_SIZE, 4);
    assert.ok((await first).equals(expected(1, A, 4)));
    await assert.rejects(
      second,
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost,
    );
    assert.equal(failed?.code, ErrorCode.PageSourceLost);
    await assert.rejects(f.fetch(1, A, 1));
    await dying.close();
  });

  it("serves pages a held dump left in a process from that process's memory", async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const heldDir = await mkdtemp(join(tmpdir(), 'godwit-page-held-'));
    try {
      const pid = child.pid as number;
      await new Promise((r) => setTimeout(r, 100));
      // Its stack: mapped, readable, and not in any image.
      const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
      const stack = /^([0-9a-f]+)-([0-9a-f]+) rw.p .*\[stack\]$/m.exec(maps);
      assert.ok(stack, 'the child has a stack mapping');
      const end = parseInt(stack[2] as string, 16);
      const vaddr = end - 2 * PAGE_SIZE;
      await writeFakeCriuImages(heldDir, [
        { vpid: 1, pagesId: 1, runs: [{ vaddr, nrPages: 2, lazy: true, absent: true }] },
      ]);
      const held = await startPageSource({
        host: '127.0.0.1',
        criuDir: heldDir,
        token,
        log: nullLogger,
        processes: new Map([[1, pid]]),
      });
      const f = await PageFetcher.connect({ host: held.address, port: held.port, token });
      try {
        const got = await f.fetch(1, vaddr, 2);
        const fh = await open(`/proc/${pid}/mem`, 'r');
        const want = Buffer.alloc(2 * PAGE_SIZE);
        await fh.read(want, 0, want.length, vaddr);
        await fh.close();
        assert.ok(got.equals(want));
        await assert.rejects(
          f.fetch(1, vaddr - PAGE_SIZE, 1),
          (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageNotHeld,
        );
      } finally {
        f.close();
        await held.close();
      }
    } finally {
      child.kill('SIGKILL');
      await rm(heldDir, { recursive: true, force: true });
    }
  });
});

describe('verdicts and a stalled source', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-verdicts-'));
    await writeFakeCriuImages(dir, [{ vpid: 1, pagesId: 1, runs: [{ vaddr: A, nrPages: 4, lazy: true }] }]);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('pushes verdicts in order to a client connected before or after, interleaved with pages', async () => {
    const src = await startPageSource({ host: '127.0.0.1', criuDir: dir, token, log: nullLogger });
    const early = [
      { vpid: 1, vaddr: A, nrPages: 3, known: true },
      { vpid: 1, vaddr: A + 3 * PAGE_SIZE, nrPages: 1, known: false },
    ];
    src.pushVerdicts(early);
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token });
    try {
      const got: unknown[] = [];
      // Frames that arrive before anyone listens are kept for the listener.
      const page = await f.fetch(1, A, 1);
      assert.ok(page.equals(expected(1, A, 1)));
      f.onVerdicts((v) => got.push(v));
      src.pushVerdicts([{ vpid: 2, vaddr: 0x1000, nrPages: 70_000, known: true }]);
      src.pushVerdicts([]);
      await f.fetch(1, A + PAGE_SIZE, 1);
      assert.deepEqual(got, [early, [{ vpid: 2, vaddr: 0x1000, nrPages: 70_000, known: true }], 'end']);
    } finally {
      f.close();
      await src.close();
    }
  });

  it('withholds verdicts (test hook) and drops every connection on `drop`', async () => {
    const src = await startPageSource({
      host: '127.0.0.1',
      criuDir: dir,
      token,
      log: nullLogger,
      withholdVerdicts: true,
    });
    src.pushVerdicts([{ vpid: 1, vaddr: A, nrPages: 1, known: true }]);
    const f = await PageFetcher.connect({ host: src.address, port: src.port, token });
    try {
      const got: unknown[] = [];
      f.onVerdicts((v) => got.push(v));
      await f.fetch(1, A, 1);
      assert.deepEqual(got, []);
      const lost = new Promise<GodwitError>((r) => f.onFailed(r));
      src.drop();
      assert.equal((await lost).code, ErrorCode.PageSourceLost);
    } finally {
      f.close();
      await src.close();
    }
  });

  it('counts the source lost when an answer is overdue', async () => {
    // A server that takes the connection and never answers.
    const { createServer } = await import('node:net');
    const server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const f = await PageFetcher.connect({ host: '127.0.0.1', port, token, requestTimeoutMs: 150 });
    try {
      const t0 = performance.now();
      await assert.rejects(
        f.fetch(1, A, 1),
        (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.PageSourceLost,
      );
      assert.ok(performance.now() - t0 < 2000);
    } finally {
      f.close();
      server.close();
    }
  });
});
