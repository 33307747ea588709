import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, FailedPreconditionError } from '../core/errors.js';
import {
  parseTestbedRecord,
  readTestbed,
  removeTestbedFile,
  testbedDir,
  testbedFile,
  writeTestbed,
  type TestbedRecord,
} from './testbed-file.js';

function sampleRecord(): TestbedRecord {
  return {
    version: 1,
    name: 'gw',
    createdAt: '2025-01-01T00:00:00.000Z',
    state: 'ready',
    link: { name: 'lan', rateMbit: 1000, delayMs: 0.5, lossPct: 0 },
    pairLinks: { 'h1-h2': { name: 'edge', rateMbit: 100, delayMs: 10, lossPct: 0 } },
    hosts: [
      {
        name: 'h1',
        netns: 'gw-h1',
        stateDir: '/var/lib/godwit/testbed/gw/h1',
        socket: '/var/lib/godwit/testbed/gw/h1/agent.sock',
        address: '10.77.0.1',
        port: 7070,
        agentPid: 42,
      },
    ],
    client: { netns: 'gw-client', address: '10.78.0.254' },
    serviceNetwork: {
      bridgeNetns: 'gw-sw',
      bridge: 'br-svc',
      subnet: '10.78.0.0',
      prefixLength: 24,
      firstIp: '10.78.0.10',
      lastIp: '10.78.0.249',
      leaseDir: '/run/godwit/testbed/gw/leases',
    },
    baseStateDir: '/var/lib/godwit/testbed/gw',
    runDir: '/run/godwit/testbed/gw',
    switchNetns: 'gw-sw',
    linkd: { pid: 43, binary: '/x/godwit-linkd', log: '/run/godwit/testbed/gw/linkd.log' },
  };
}

describe('testbed.json', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'godwit-tbfile-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lives in $GODWIT_TESTBED_DIR, else /run/godwit/testbed', () => {
    const saved = process.env['GODWIT_TESTBED_DIR'];
    try {
      delete process.env['GODWIT_TESTBED_DIR'];
      assert.equal(testbedDir(), '/run/godwit/testbed');
      process.env['GODWIT_TESTBED_DIR'] = '/tmp/x';
      assert.equal(testbedFile(), '/tmp/x/testbed.json');
    } finally {
      if (saved === undefined) delete process.env['GODWIT_TESTBED_DIR'];
      else process.env['GODWIT_TESTBED_DIR'] = saved;
    }
  });

  it('round-trips through an atomic write', async () => {
    assert.equal(await readTestbed(dir), undefined);
    await writeTestbed(sampleRecord(), dir);
    assert.deepEqual(await readTestbed(dir), sampleRecord());
    assert.deepEqual(await readdir(dir), ['testbed.json'], 'no temp file left');
    await removeTestbedFile(dir);
    assert.equal(await readTestbed(dir), undefined);
  });

  it('rejects a file that is not a testbed', async () => {
    await writeFile(testbedFile(dir), '{ not json');
    await assert.rejects(
      readTestbed(dir),
      (err: unknown) => err instanceof FailedPreconditionError && err.code === ErrorCode.TestbedCorrupt,
    );
    await removeTestbedFile(dir);
  });

  it('names the first bad field', () => {
    const cases: [string, (r: Record<string, unknown>) => void][] = [
      ['version', (r) => (r['version'] = 2)],
      ['name', (r) => (r['name'] = 'gw-x')],
      ['link', (r) => (r['link'] = { name: 'x', rateMbit: -1, delayMs: 0, lossPct: 0 })],
      ['hosts', (r) => (r['hosts'] = [])],
      ['hosts[0].port', (r) => ((r['hosts'] as Record<string, unknown>[])[0]!['port'] = 0)],
      ['hosts[0].agentPid', (r) => ((r['hosts'] as Record<string, unknown>[])[0]!['agentPid'] = 'x')],
      ['serviceNetwork', (r) => ((r['serviceNetwork'] as Record<string, unknown>)['leaseDir'] = 'rel')],
      ['baseStateDir', (r) => delete r['baseStateDir']],
      ['state', (r) => (r['state'] = 'odd')],
    ];
    for (const [field, mutate] of cases) {
      const doc = JSON.parse(JSON.stringify(sampleRecord())) as Record<string, unknown>;
      mutate(doc);
      assert.throws(
        () => parseTestbedRecord(doc),
        (err: unknown) => err instanceof FailedPreconditionError && err.message.includes(field),
        field,
      );
    }
  });
});
