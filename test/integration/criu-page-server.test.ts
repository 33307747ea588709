/**
 * Our page server against the real CRIU lazy-pages daemon: godwit-memload is dumped with plain
 * `criu dump`, then restored with `criu restore --lazy-pages` while `criu lazy-pages
 * --page-server` fetches every lazy page from startCriuPageServer, whose provider reads the
 * dump's pages-N.img files. A byte-level tap between the daemon and the server checks the wire
 * layout (32-byte page_server_iov) on the first request and answer. The restored process must
 * keep running and verify its own memory; the session must end with PS_IOV_CLOSE.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, type FileHandle } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { PAGE_SIZE } from '../../src/core/chunks.js';
import { nullLogger } from '../../src/core/logger.js';
import { PE_LAZY, PE_PRESENT, parsePagemapImage, readPagesLayouts } from '../../src/memory/criu-pagemap.js';
import {
  PS_IOV_SIZE,
  PsCmd,
  decodePageServerIov,
  encodePsCmd,
  percentile,
  startCriuPageServer,
  type LazyPageProvider,
} from '../../src/pages/index.js';
import { defaultToolsDir, loadTools } from '../../src/system/tools.js';
import { requireMachine } from './support.js';

const VERIFY_OK = /^verify ok pages (\d+) checksum ([0-9a-f]{16})/gm;
const VERIFY_FAILED = /^verify FAILED/m;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Runs a command to its end; resolves with the exit code and output. */
function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out }));
  });
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** A TCP relay that keeps the first bytes each way, to check the wire layout. */
async function startTap(
  target: number,
): Promise<{ port: number; up: Buffer[]; down: Buffer[]; server: Server }> {
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const server = createServer((a) => {
    const b = connect({ host: '127.0.0.1', port: target });
    a.setNoDelay(true);
    b.setNoDelay(true);
    const keep = (list: Buffer[]) => (d: Buffer) => {
      if (list.reduce((n, x) => n + x.length, 0) < 256) list.push(Buffer.from(d.subarray(0, 256)));
    };
    a.on('data', keep(up));
    b.on('data', keep(down));
    a.pipe(b);
    b.pipe(a);
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
    a.on('close', () => b.end());
    b.on('close', () => a.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, up, down, server };
}

/** Reads pages from a CRIU image directory's pages-N.img files; records what was asked. */
async function imageProvider(criuDir: string) {
  const layouts = await readPagesLayouts(criuDir);
  const files = new Map<string, FileHandle>();
  const sizes = new Map<number, number>();
  const served = new Map<string, number>();
  const order: { vpid: number; vaddr: number; n: number; k: number; fault: boolean }[] = [];
  const provider: LazyPageProvider = {
    async read(vpid, vaddr, nrPages, hint) {
      const layout = layouts.find((l) => l.vpid === vpid);
      const r = layout?.runs.find((x) => vaddr >= x.vaddr && vaddr < x.vaddr + x.nrPages * PAGE_SIZE);
      if (!layout || !r) throw new Error(`no page at 0x${vaddr.toString(16)} of ${vpid}`);
      const first = (vaddr - r.vaddr) / PAGE_SIZE;
      const k = Math.min(nrPages, r.nrPages - first);
      let fh = files.get(layout.file);
      if (!fh) {
        fh = await open(join(criuDir, layout.file), 'r');
        files.set(layout.file, fh);
      }
      const buf = Buffer.alloc(k * PAGE_SIZE);
      const { bytesRead } = await fh.read(buf, 0, buf.length, r.fileOffset + first * PAGE_SIZE);
      if (bytesRead !== buf.length) throw new Error(`short read of ${layout.file}`);
      sizes.set(nrPages, (sizes.get(nrPages) ?? 0) + 1);
      order.push({ vpid, vaddr, n: nrPages, k, fault: hint.fault });
      for (let i = 0; i < k; i++) {
        const key = `${vpid}:${vaddr + i * PAGE_SIZE}`;
        served.set(key, (served.get(key) ?? 0) + 1);
      }
      return buf;
    },
  };
  return {
    provider,
    sizes,
    served,
    order,
    close: async () => {
      for (const fh of files.values()) await fh.close();
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('criu lazy-pages against startCriuPageServer', () => {
  it('restores godwit-memload with every lazy page served by our page server', async (t: TestContext) => {
    if (!(await requireMachine(t))) return;
    const tools = await loadTools(defaultToolsDir());
    const criu = tools.criu;
    const scratch = await mkdtemp(join(tmpdir(), 'godwit-ps-'));
    const imgDir = join(scratch, 'img');
    const workDir = join(scratch, 'work');
    await mkdir(imgDir);
    await mkdir(workDir);
    const logPath = join(scratch, 'memload.log');
    const port = await freePort();
    const children: ChildProcess[] = [];
    let pid = 0;
    const cleanups: (() => Promise<unknown>)[] = [];
    t.after(async () => {
      if (pid > 0 && alive(pid)) {
        process.kill(pid, 'SIGKILL');
        await waitFor(
          'the restored process to exit',
          async () => (alive(pid) ? undefined : true),
          5000,
        ).catch(() => undefined);
      }
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
      if (process.env['GODWIT_KEEP_SCRATCH'] === undefined)
        await rm(scratch, { recursive: true, force: true });
      else t.diagnostic(`scratch kept in ${scratch}`);
    });

    // 1. The workload, its output in a file CRIU can reopen on restore.
    const out = await open(logPath, 'a');
    const memload = spawn(
      tools.memload,
      [
        '--mib',
        '32',
        '--verify-interval-ms',
        '200',
        '--interval-ms',
        '100',
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
      ],
      { detached: true, stdio: ['ignore', out.fd, out.fd] },
    );
    await out.close();
    children.push(memload);
    pid = memload.pid!;
    const readLog = () => readFile(logPath, 'utf8');
    await waitFor('a first verify pass', async () =>
      [...(await readLog()).matchAll(VERIFY_OK)].length ? true : undefined,
    );
    assert.match(await httpGet(port), /^counter 1\nverify ok pages 8192 failures 0\n$/);

    // 2. A plain dump (it kills the process).
    const dump = await run(criu, [
      'dump',
      '-t',
      String(pid),
      '-D',
      imgDir,
      '--shell-job',
      '-v4',
      '-o',
      'dump.log',
    ]);
    assert.equal(
      dump.code,
      0,
      `criu dump failed: ${dump.out}\n${await readFile(join(imgDir, 'dump.log'), 'utf8').catch(() => '')}`,
    );
    await waitFor('the dumped process to exit', async () =>
      memload.exitCode !== null || memload.signalCode !== null ? true : undefined,
    );
    const logAtDump = (await readLog()).length;

    // Which pagemap flags does a normal dump produce?
    const flagPages = new Map<number, number>();
    let lazyPages = 0;
    for (const f of (await readdir(imgDir)).filter((n) => /^pagemap-\d+\.img$/.test(n))) {
      for (const e of parsePagemapImage(await readFile(join(imgDir, f))).entries) {
        flagPages.set(e.flags, (flagPages.get(e.flags) ?? 0) + e.nrPages);
        if ((e.flags & (PE_LAZY | PE_PRESENT)) === (PE_LAZY | PE_PRESENT)) lazyPages += e.nrPages;
      }
    }
    t.diagnostic(`pagemap pages by flags: ${JSON.stringify(Object.fromEntries(flagPages))}`);
    assert.ok(lazyPages >= 8192, `only ${lazyPages} pages are PE_LAZY|PE_PRESENT`);

    // 3. Our page server (behind a tap), then criu lazy-pages, then the lazy restore.
    const images = await imageProvider(imgDir);
    cleanups.push(images.close);
    const server = await startCriuPageServer({ provider: images.provider, log: nullLogger });
    cleanups.push(() => server.close());
    const tap = await startTap(server.port);
    cleanups.push(() => new Promise((r) => tap.server.close(r)));

    const t0 = performance.now();
    let tSession = 0;
    void server.session.then(() => (tSession = performance.now()));
    const lp = spawn(
      criu,
      [
        'lazy-pages',
        '--page-server',
        '--address',
        '127.0.0.1',
        '--port',
        String(tap.port),
        '--images-dir',
        imgDir,
        '--work-dir',
        workDir,
        '-v4',
        '--log-file',
        'lazy-pages.log',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(lp);
    let lpOut = '';
    lp.stdout!.on('data', (d: Buffer) => (lpOut += d.toString()));
    lp.stderr!.on('data', (d: Buffer) => (lpOut += d.toString()));
    const lpExit = new Promise<number | null>((r) => lp.on('close', (code) => r(code)));
    await waitFor('lazy-pages.socket', async () =>
      existsSync(join(workDir, 'lazy-pages.socket')) ? true : lp.exitCode !== null ? true : undefined,
    );
    assert.equal(lp.exitCode, null, `criu lazy-pages exited early: ${lpOut}`);

    const restore = await run(criu, [
      'restore',
      '--lazy-pages',
      '--images-dir',
      imgDir,
      '--work-dir',
      workDir,
      '--shell-job',
      '-d',
      '-v4',
      '-o',
      'restore.log',
    ]);
    const tRestored = performance.now();
    assert.equal(
      restore.code,
      0,
      `criu restore failed: ${restore.out}\n${(await readFile(join(workDir, 'restore.log'), 'utf8').catch(() => '')).slice(-3000)}`,
    );
    assert.ok(alive(pid), 'the restored process runs under its old pid');

    let timer: NodeJS.Timeout | undefined;
    const lpCode = await Promise.race([
      lpExit,
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 60_000))),
    ]);
    clearTimeout(timer);
    const tFilled = performance.now();
    const lpLog = await readFile(join(workDir, 'lazy-pages.log'), 'utf8').catch(() => '');
    assert.equal(lpCode, 0, `criu lazy-pages: ${lpCode}\n${lpOut}\n${lpLog.slice(-3000)}`);
    const session = await server.session;
    assert.deepEqual(session, { ok: true }, lpLog.slice(-3000));

    // 4. Wire layout as seen on the wire.
    const up = Buffer.concat(tap.up);
    const down = Buffer.concat(tap.down);
    t.diagnostic(`first request: ${up.subarray(0, PS_IOV_SIZE).toString('hex')}`);
    t.diagnostic(`first answer header: ${down.subarray(0, PS_IOV_SIZE).toString('hex')}`);
    const req = decodePageServerIov(up);
    assert.ok(typeof req !== 'string', String(req));
    assert.equal(req.cmd, PsCmd.Get);
    // Bytes 4..7 are C struct padding; CRIU leaves them uninitialised (not always 0).
    assert.ok(req.nrPages >= 1 && req.nrPages <= 16384, `nr_pages ${req.nrPages} at offset 8`);
    assert.equal(req.dstId, pid, 'dst_id is the vpid');
    assert.equal(req.vaddr % PAGE_SIZE, 0);
    const ans = decodePageServerIov(down);
    assert.ok(typeof ans !== 'string');
    assert.equal(ans.cmd, encodePsCmd(PsCmd.AddF, 4));
    assert.equal(ans.vaddr, req.vaddr);

    // 5. Every lazy page served exactly once.
    const stats = server.stats();
    const dup = [...images.served.values()].filter((n) => n > 1).length;
    const faults = stats.faultLatenciesMs;
    t.diagnostic(
      `requests ${stats.requests} (faults ${stats.faultRequests}), pages ${stats.pagesServed}, ` +
        `lazy pages in images ${lazyPages}, duplicates ${dup}, sizes ${JSON.stringify(Object.fromEntries([...images.sizes].sort((a, b) => a[0] - b[0])))}, ` +
        `short answers ${images.order.filter((o) => o.k < o.n).length}`,
    );
    t.diagnostic(
      `restore done ${Math.round(tRestored - t0)} ms after lazy-pages start, PS_IOV_CLOSE ${Math.round(tSession - t0)} ms, ` +
        `lazy-pages exit ${Math.round(tFilled - t0)} ms; ` +
        `fault latency p50 ${percentile(faults, 50)?.toFixed(3)} ms p99 ${percentile(faults, 99)?.toFixed(3)} ms`,
    );
    t.diagnostic(
      `first requests: ${JSON.stringify(images.order.slice(0, 12).map((o) => [o.vaddr.toString(16), o.n, o.k]))}`,
    );
    assert.equal(stats.errors, 0);
    assert.equal(dup, 0, 'no page served twice');
    assert.equal(stats.pagesServed, lazyPages, 'every lazy page served');
    assert.equal(stats.bytesServed, lazyPages * PAGE_SIZE);

    // 6. The restored process keeps running and its memory verifies.
    await waitFor(
      'two verify passes after restore',
      async () =>
        [...(await readLog()).slice(logAtDump).matchAll(VERIFY_OK)].length >= 2 ? true : undefined,
      20_000,
    );
    const after = (await readLog()).slice(logAtDump);
    assert.doesNotMatch(after, VERIFY_FAILED, after);
    assert.doesNotMatch(after, /^ready /m, 'restored, not restarted');
    assert.ok(
      [...after.matchAll(VERIFY_OK)].every((m) => m[1] === '8192'),
      after,
    );
    assert.match(await httpGet(port), /^counter 2\nverify ok pages 8192 failures 0\n$/);
  });
});
