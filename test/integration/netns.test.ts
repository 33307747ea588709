import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runChecked, runCommand } from '../../src/system/exec.js';
import {
  COUNTER_ARGS,
  counters,
  createTestHost,
  missingRequirement,
  waitCounters,
  type TestHost,
} from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('containers in an external network namespace', { skip }, () => {
  let host: TestHost;
  let scratch: string;
  const netns = `godwit-it-${process.pid}`;
  const nsPath = `/run/netns/${netns}`;

  before(async () => {
    host = await createTestHost('netns');
    scratch = await mkdtemp(join(tmpdir(), 'godwit-netns-'));
    await runChecked('ip', ['netns', 'add', netns]);
    // A veth pair with both ends inside this namespace: an address that exists only there (no route leaves it).
    await runChecked('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    await runChecked('ip', ['-n', netns, 'link', 'add', 'svc0', 'type', 'veth', 'peer', 'name', 'svc1']);
    await runChecked('ip', ['-n', netns, 'addr', 'add', '10.213.0.2/32', 'dev', 'svc0']);
    await runChecked('ip', ['-n', netns, 'link', 'set', 'svc0', 'up']);
  });
  after(async () => {
    await host?.dispose();
    await runCommand('ip', ['netns', 'delete', netns]);
    await rm(scratch, { recursive: true, force: true });
  });

  it('checkpoints with the namespace external and restores into it', async () => {
    const { runtime } = host;
    await runtime.run({ name: 'svc', image: 'busybox', args: COUNTER_ARGS, env: {}, netnsPath: nsPath });
    await waitCounters(runtime, 'svc', 3);
    const dir = join(scratch, 'svc');
    await runtime.checkpoint('svc', { dir, tcpEstablished: true });
    const last = counters(await runtime.logs('svc')).at(-1)!;

    const rs = await runtime.restore({ dir, name: 'svc-2' });
    const c = await waitCounters(runtime, 'svc-2', 1);
    assert.equal(c[0], last + 1);
    const [inContainer, external] = await Promise.all([stat(`/proc/${rs.pid}/ns/net`), stat(nsPath)]);
    assert.equal(inContainer.ino, external.ino, 'the restored process is in the given namespace');
    const addr = await runtime.exec('svc-2', ['ip', '-4', 'addr', 'show', 'svc0'], { capture: true });
    assert.match(addr.stdout, /10\.213\.0\.2/);
  });
});
