import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, GodwitError } from '../../src/core/errors.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import { COUNTER_ARGS, createTestHost, missingRequirement, waitCounters, type TestHost } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('two state directories on one machine', { skip }, () => {
  let a: TestHost;
  let b: TestHost;
  before(async () => {
    a = await createTestHost('host-a');
    b = await createTestHost('host-b');
  });
  after(async () => {
    await a?.dispose();
    await b?.dispose();
  });

  it('do not see each other and may use the same names', async () => {
    assert.notEqual(a.state.hostId, b.state.hostId);
    await a.runtime.run({ name: 'same', image: 'busybox', args: COUNTER_ARGS, env: {} });
    assert.deepEqual(await b.runtime.list(), []);
    await assert.rejects(
      b.runtime.inspect('same'),
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.ContainerNotFound,
    );

    await b.runtime.run({
      name: 'same',
      image: 'busybox',
      args: ['/bin/sh', '-c', 'while true; do echo "counter 7"; sleep 0.2; done'],
      env: {},
    });
    await waitCounters(a.runtime, 'same', 2);
    await waitCounters(b.runtime, 'same', 1);
    const pa = (await a.runtime.inspect('same')).pid;
    const pb = (await b.runtime.inspect('same')).pid;
    assert.ok(pa && pb && pa !== pb);

    await b.runtime.remove('same', { force: true });
    assert.equal(
      (await a.runtime.inspect('same')).status,
      ContainerStatus.Running,
      "removing B's container leaves A's",
    );
    assert.deepEqual(
      (await a.runtime.list()).map((c) => c.name),
      ['same'],
    );
  });

  it('refuses a second container of the same name on one host', async () => {
    await assert.rejects(
      a.runtime.run({ name: 'same', image: 'busybox', args: COUNTER_ARGS, env: {} }),
      (e: unknown) => e instanceof GodwitError && e.code === ErrorCode.ContainerExists,
    );
    assert.equal(
      (await a.runtime.inspect('same')).status,
      ContainerStatus.Running,
      'the first one is untouched',
    );
  });
});
