import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, GodwitError } from '../../src/core/errors.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import { runCommand } from '../../src/system/exec.js';
import {
  COUNTER_ARGS,
  counters,
  createTestHost,
  missingRequirement,
  mountsUnder,
  waitCounters,
  type TestHost,
} from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('checkpoint and restore with real runc + CRIU', { skip }, () => {
  let host: TestHost;
  let scratch: string;
  before(async () => {
    host = await createTestHost('cr');
    scratch = await mkdtemp(join(tmpdir(), 'godwit-cp-'));
  });
  after(async () => {
    await host?.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  it('restores the in-memory counter under a new name', async () => {
    const { runtime } = host;
    const info = await runtime.run({ name: 'count', image: 'busybox', args: COUNTER_ARGS, env: {} });
    assert.equal(info.status, ContainerStatus.Running);
    await waitCounters(runtime, 'count', 5);

    const dir = join(scratch, 'count');
    const cp = await runtime.checkpoint('count', { dir });
    assert.ok(cp.durationMs > 0 && cp.pagesBytes > 0 && cp.imageBytes >= cp.pagesBytes);
    assert.equal((await runtime.inspect('count')).status, ContainerStatus.Checkpointed);
    const before = counters(await runtime.logs('count'));
    const last = before[before.length - 1]!;

    // Sleep long enough that a restarted (not restored) process would be far behind or reset.
    await new Promise((r) => setTimeout(r, 500));
    const rs = await runtime.restore({ dir, name: 'count-2' });
    assert.ok(rs.pid > 0);
    const afterRestore = await waitCounters(runtime, 'count-2', 3);
    assert.equal(afterRestore[0], last + 1, 'the restored shell continues from the checkpointed value');
    assert.equal(afterRestore[1], last + 2);
    assert.equal((await runtime.inspect('count-2')).status, ContainerStatus.Running);
  });

  it('carries root filesystem changes along with memory', async () => {
    const { runtime } = host;
    await runtime.run({
      name: 'writer',
      image: 'busybox',
      args: [
        '/bin/sh',
        '-c',
        'echo persisted > /root/note; exec 3>>/root/open.log; i=0; while true; do i=$((i+1)); echo "counter $i"; echo $i >&3; sleep 0.1; done',
      ],
      env: {},
    });
    await waitCounters(runtime, 'writer', 3);
    const dir = join(scratch, 'writer');
    await runtime.checkpoint('writer', { dir });
    await runtime.restore({ dir, name: 'writer-2' });
    const c = await waitCounters(runtime, 'writer-2', 2);
    const note = await runtime.exec('writer-2', ['cat', '/root/note'], { capture: true });
    assert.equal(note.stdout.trim(), 'persisted');
    const open = await runtime.exec('writer-2', ['tail', '-n', '1', '/root/open.log'], { capture: true });
    assert.ok(
      Number(open.stdout.trim()) >= c[0]!,
      'the file kept open across the checkpoint is still written',
    );
  });

  it('--leave-running keeps the source running', async () => {
    const { runtime } = host;
    await runtime.run({ name: 'live', image: 'busybox', args: COUNTER_ARGS, env: {} });
    await waitCounters(runtime, 'live', 3);
    const dir = join(scratch, 'live');
    const cp = await runtime.checkpoint('live', { dir, leaveRunning: true });
    assert.equal(cp.leftRunning, true);
    const info = await runtime.inspect('live');
    assert.equal(info.status, ContainerStatus.Running);
    const n = counters(await runtime.logs('live')).length;
    await waitCounters(runtime, 'live', n + 3);
    // The copy restores beside it, in its own namespaces.
    await runtime.restore({ dir, name: 'live-copy' });
    await waitCounters(runtime, 'live-copy', 2);
    assert.equal((await runtime.inspect('live')).status, ContainerStatus.Running);
  });

  it('checkpoint of an unknown container fails clearly and writes nothing', async () => {
    const dir = join(scratch, 'ghost');
    await assert.rejects(host.runtime.checkpoint('ghost', { dir }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.ContainerNotFound);
      assert.match(err.message, /no container named ghost/);
      return true;
    });
    await assert.rejects(readdir(dir), /ENOENT/);
  });

  it('restore from a missing directory fails clearly and leaves nothing behind', async () => {
    await assert.rejects(host.runtime.restore({ dir: join(scratch, 'nope'), name: 'r1' }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.CheckpointNotFound);
      return true;
    });
    await assertNothingLeft(host, 'r1');
  });

  it('restore from a directory that is not a checkpoint fails clearly', async () => {
    const dir = join(scratch, 'empty');
    await mkdir(dir);
    await writeFile(join(dir, 'checkpoint.json'), '{"format": "something-else"}');
    await assert.rejects(host.runtime.restore({ dir, name: 'r2' }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.CheckpointCorrupt);
      assert.match(err.message, /not a usable checkpoint/);
      return true;
    });
    await assertNothingLeft(host, 'r2');
  });

  it('restore from corrupt CRIU images quotes CRIU and leaves no container or mount behind', async () => {
    const { runtime } = host;
    await runtime.run({ name: 'victim', image: 'busybox', args: COUNTER_ARGS, env: {} });
    await waitCounters(runtime, 'victim', 2);
    const dir = join(scratch, 'victim');
    await runtime.checkpoint('victim', { dir });
    const criuDir = join(dir, 'criu');
    for (const f of await readdir(criuDir)) {
      if (f.startsWith('core-') || f.startsWith('pstree'))
        await writeFile(join(criuDir, f), 'garbage, not protobuf');
    }
    await assert.rejects(runtime.restore({ dir, name: 'r3' }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.CriuRestoreFailed);
      assert.ok(err.details.length > 0, 'quotes the decisive lines of restore.log');
      assert.ok(
        err.details.some((d) => d.startsWith('Error (')),
        err.details.join('\n'),
      );
      return true;
    });
    await assertNothingLeft(host, 'r3');
  });

  it('refuses to checkpoint into a non-empty directory and keeps the container running', async () => {
    const { runtime } = host;
    await runtime.run({ name: 'busy', image: 'busybox', args: COUNTER_ARGS, env: {} });
    const dir = join(scratch, 'busy');
    await mkdir(dir);
    await writeFile(join(dir, 'precious'), 'x');
    await assert.rejects(runtime.checkpoint('busy', { dir }), (err: unknown) => {
      assert.ok(err instanceof GodwitError);
      assert.equal(err.code, ErrorCode.CheckpointExists);
      return true;
    });
    assert.deepEqual(await readdir(dir), ['precious']);
    assert.equal((await runtime.inspect('busy')).status, ContainerStatus.Running);
  });
});

async function assertNothingLeft(host: TestHost, name: string): Promise<void> {
  const names = (await host.runtime.list()).map((c) => c.name);
  assert.ok(!names.includes(name), `${name} must not be listed`);
  await assert.rejects(readdir(host.state.containerDir(name)), /ENOENT/);
  assert.deepEqual(await mountsUnder(host.state.containerDir(name)), []);
  const runc = await runCommand(host.tools.runc, ['--root', host.state.runcRoot, 'list', '-q']);
  assert.ok(!runc.stdout.split('\n').includes(name), 'runc has no such container');
}
