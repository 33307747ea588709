import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { acquireLock, REQUIRED_PACKAGES, SETUP_STEPS } from './setup.js';

describe('setup constants', () => {
  it('runs the steps in order and installs the listed packages', () => {
    assert.deepEqual([...SETUP_STEPS], ['root', 'packages', 'criu', 'native']);
    for (const p of ['runc', 'iptables', 'iproute2', 'busybox-static', 'debootstrap', 'gcc', 'libc6-dev']) {
      assert.ok(REQUIRED_PACKAGES.includes(p), p);
    }
  });
});

describe('acquireLock', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-lock-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('excludes a second holder until the first releases', async () => {
    const path = join(dir, 'a.lock');
    const first = await acquireLock(path);
    const owner = JSON.parse(await readFile(path, 'utf8')) as { pid: number };
    assert.equal(owner.pid, process.pid);
    let waitedFor: number | undefined;
    let secondGot = false;
    const second = acquireLock(path, { pollMs: 10, onWait: (pid) => (waitedFor = pid) }).then((l) => {
      secondGot = true;
      return l;
    });
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(secondGot, false);
    assert.equal(waitedFor, process.pid);
    await first.release();
    const l2 = await second;
    assert.equal(secondGot, true);
    await l2.release();
    assert.deepEqual(await readdir(dir), []);
  });

  it('times out while a live process holds the lock', async () => {
    const path = join(dir, 'b.lock');
    const held = await acquireLock(path);
    await assert.rejects(acquireLock(path, { timeoutMs: 50, pollMs: 10 }), { code: 'GODWIT_TIMEOUT' });
    await held.release();
  });

  it('breaks a lock whose owner is dead', async () => {
    const path = join(dir, 'c.lock');
    const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const deadPid = Number(child.stdout.toString());
    await writeFile(path, JSON.stringify({ pid: deadPid, startTime: '1', token: 'old' }));
    const lock = await acquireLock(path, { timeoutMs: 1000, pollMs: 10 });
    const owner = JSON.parse(await readFile(path, 'utf8')) as { pid: number };
    assert.equal(owner.pid, process.pid);
    await lock.release();
  });

  it('breaks a lock whose pid was reused by another process', async () => {
    const path = join(dir, 'd.lock');
    await writeFile(
      path,
      JSON.stringify({ pid: process.pid, startTime: 'not-our-start-time', token: 'old' }),
    );
    const lock = await acquireLock(path, { timeoutMs: 1000, pollMs: 10 });
    await lock.release();
  });

  it('only one of many concurrent takers holds the lock at a time', async () => {
    const path = join(dir, 'e.lock');
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const l = await acquireLock(path, { pollMs: 5 });
        inside++;
        maxInside = Math.max(maxInside, inside);
        await new Promise((r) => setTimeout(r, 5));
        inside--;
        await l.release();
      }),
    );
    assert.equal(maxInside, 1);
  });
});
