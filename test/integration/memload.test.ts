/**
 * godwit-memload's exact self-verification, through real runc + CRIU: a process that keeps a
 * per-page version array only in its own memory and regenerates every page's expected content
 * must still verify after a checkpoint/restore; negative controls show the verifier does catch
 * a flipped byte, both in the running process and in a checkpoint's pages image.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ContainerRuntime } from '../../src/core/runtime.js';
import { counters, createTestHost, missingRequirement, waitCounters, type TestHost } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const MEMLOAD = '/usr/local/bin/godwit-memload';
const VERIFY_OK = /^verify ok pages (\d+) checksum ([0-9a-f]{16})/gm;
const VERIFY_FAILED = /^verify FAILED page (\d+)/gm;

function verifyOks(log: string): number[] {
  return [...log.matchAll(VERIFY_OK)].map((m) => Number(m[1]));
}

function verifyFailures(log: string): number[] {
  return [...log.matchAll(VERIFY_FAILED)].map((m) => Number(m[1]));
}

/** Polls a container's log until `done` holds; returns the log. */
async function waitLog(
  runtime: ContainerRuntime,
  name: string,
  what: string,
  done: (log: string) => boolean,
  timeoutMs = 15_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const log = await runtime.logs(name);
    if (done(log)) return log;
    if (Date.now() > deadline) throw new Error(`${name}: no ${what} within ${timeoutMs} ms; log:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('godwit-memload self-verification with real runc + CRIU', { skip }, () => {
  let host: TestHost;
  let scratch: string;
  before(async () => {
    host = await createTestHost('memload');
    scratch = await mkdtemp(join(tmpdir(), 'godwit-memload-'));
  });
  after(async () => {
    await host?.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  it('restored memory verifies exactly while it keeps being dirtied, and the counter continues', async () => {
    const { runtime } = host;
    const args = [
      '--mib',
      '64',
      '--mix',
      '30:30:40',
      '--dirty-mib-per-s',
      '8',
      '--verify-interval-ms',
      '300',
    ];
    await runtime.run({
      name: 'ml',
      image: 'busybox',
      args: [MEMLOAD, ...args, '--interval-ms', '100'],
      env: {},
    });
    const first = await waitLog(runtime, 'ml', 'verify ok', (l) => verifyOks(l).length >= 1);
    assert.match(first, /^ready mib 64$/m);
    assert.match(first, /^mix zero 4915 repeated 4915 random 6554 pages 16384$/m);

    const dir = join(scratch, 'ml');
    await runtime.checkpoint('ml', { dir });
    const src = await runtime.logs('ml');
    const last = counters(src).at(-1)!;
    assert.deepEqual(verifyFailures(src), [], src);

    await runtime.restore({ dir, name: 'ml-2' });
    // The first pass after restore may have started before the checkpoint; the later ones are
    // entirely post-restore (and pages were rewritten in between).
    await waitLog(runtime, 'ml-2', '3 verify ok', (l) => verifyOks(l).length >= 3);
    await runtime.kill('ml-2', 'USR1');
    const log = await waitLog(runtime, 'ml-2', 'a 4th verify ok', (l) => verifyOks(l).length >= 4);
    assert.deepEqual(verifyFailures(log), [], log);
    assert.ok(
      verifyOks(log).every((p) => p === 16384),
      log,
    );
    assert.doesNotMatch(log, /^ready /m, 'restored, not restarted');
    const after = counters(log);
    assert.equal(after[0], last + 1, 'the restored counter continues from the checkpointed value');
    assert.ok(after.length >= 2 && after.every((c, i) => c === last + 1 + i), log);
  });

  it('--self-test-corrupt: the verifier reports the flipped page', async () => {
    const { runtime } = host;
    await runtime.run({
      name: 'selftest',
      image: 'busybox',
      args: [
        MEMLOAD,
        '--mib',
        '16',
        '--mix',
        '30:30:40',
        '--verify-interval-ms',
        '100',
        '--self-test-corrupt',
      ],
      env: {},
    });
    const log = await waitLog(runtime, 'selftest', 'verify FAILED', (l) => verifyFailures(l).length >= 1);
    assert.ok(verifyOks(log).length >= 1, 'a clean pass came first');
    const corrupted = Number(/^self-test corrupted page (\d+)$/m.exec(log)?.[1]);
    assert.equal(corrupted, 2048);
    assert.equal(verifyFailures(log)[0], corrupted, log);
    assert.match(log, /^verify FAILED page 2048 bad 1 failures 1$/m);
  });

  it('a byte flipped in the checkpoint pages image makes the restored process fail verification', async () => {
    const { runtime } = host;
    await runtime.run({
      name: 'victim',
      image: 'busybox',
      args: [MEMLOAD, '--mib', '32', '--verify-interval-ms', '200', '--interval-ms', '100'],
      env: {},
    });
    await waitLog(runtime, 'victim', 'verify ok', (l) => verifyOks(l).length >= 1);
    const dir = join(scratch, 'victim');
    await runtime.checkpoint('victim', { dir });
    assert.deepEqual(verifyFailures(await runtime.logs('victim')), []);

    // The 32 MiB mapping is nearly all of the process's private memory, so the middle of the
    // largest pages image lies inside it.
    const criuDir = join(dir, 'criu');
    let largest = '';
    let size = 0;
    for (const f of await readdir(criuDir)) {
      if (!/^pages-\d+\.img$/.test(f)) continue;
      const s = (await stat(join(criuDir, f))).size;
      if (s > size) [largest, size] = [f, s];
    }
    assert.ok(size >= 32 << 20, `pages image of ${size} bytes`);
    const fh = await open(join(criuDir, largest), 'r+');
    try {
      const at = Math.floor(size / 2 / 4096) * 4096 + 1234;
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] = b[0]! ^ 0xff;
      await fh.write(b, 0, 1, at);
    } finally {
      await fh.close();
    }

    await runtime.restore({ dir, name: 'victim-2' });
    const log = await waitLog(runtime, 'victim-2', 'verify FAILED', (l) => verifyFailures(l).length >= 1);
    assert.match(log, /^verify FAILED page \d+ bad 1 failures 1$/m);
    await waitCounters(runtime, 'victim-2', 1);
  });
});
