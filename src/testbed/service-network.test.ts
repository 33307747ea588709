import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
} from '../core/errors.js';
import type { ServiceNetworkInfo } from '../core/testbed.js';
import { intToIp, ipToInt, macForIp, ServiceNetwork } from './service-network.js';

describe('service network (no root)', () => {
  let leaseDir: string;
  let net: ServiceNetwork;
  before(async () => {
    leaseDir = await mkdtemp(join(tmpdir(), 'godwit-leases-'));
    const info: ServiceNetworkInfo = {
      bridgeNetns: 'gwunit-sw',
      bridge: 'br-svc',
      subnet: '10.78.0.0',
      prefixLength: 24,
      firstIp: '10.78.0.10',
      lastIp: '10.78.0.12',
      leaseDir,
    };
    net = new ServiceNetwork('gwunit', info);
  });
  after(async () => {
    await rm(leaseDir, { recursive: true, force: true });
  });

  it('converts addresses and derives MACs from them', () => {
    assert.equal(ipToInt('10.78.0.10'), 0x0a4e000a);
    assert.equal(intToIp(0x0a4e000a), '10.78.0.10');
    assert.equal(ipToInt('10.78.0.256'), undefined);
    assert.equal(ipToInt('10.78.0'), undefined);
    assert.equal(macForIp('10.78.0.10'), '02:42:0a:4e:00:0a');
    assert.equal(macForIp('10.78.0.255'), '02:42:0a:4e:00:ff');
  });

  it('allocates the lowest free address in the range', async () => {
    assert.deepEqual(await net.allocate(), { ip: '10.78.0.10', prefixLength: 24, mac: '02:42:0a:4e:00:0a' });
    await writeFile(join(leaseDir, '10.78.0.10'), 'a\n');
    await writeFile(join(leaseDir, '10.78.0.12'), 'c\n');
    assert.equal((await net.allocate()).ip, '10.78.0.11');
    await writeFile(join(leaseDir, '10.78.0.11'), 'b\n');
    await assert.rejects(
      net.allocate(),
      (err: unknown) => (err as { code?: string }).code === ErrorCode.AddressesExhausted,
    );
    assert.deepEqual([...(await net.leases())].sort(), [
      ['10.78.0.10', 'a'],
      ['10.78.0.11', 'b'],
      ['10.78.0.12', 'c'],
    ]);
  });

  it('refuses an address another container holds, before touching the network', async () => {
    await assert.rejects(
      net.attach('other', { ip: '10.78.0.10', prefixLength: 24, mac: macForIp('10.78.0.10') }),
      (err: unknown) => err instanceof AlreadyExistsError && err.code === ErrorCode.AddressInUse,
    );
    await assert.rejects(
      net.attach('a', { ip: '10.78.0.11', prefixLength: 24, mac: macForIp('10.78.0.11') }),
      (err: unknown) =>
        err instanceof FailedPreconditionError && /already attached .* as 10\.78\.0\.10/.test(err.message),
    );
    assert.deepEqual((await readdir(leaseDir)).sort(), ['10.78.0.10', '10.78.0.11', '10.78.0.12']);
  });

  it('validates keys and identities', async () => {
    const ok = { ip: '10.78.0.10', prefixLength: 24, mac: '02:42:0a:4e:00:0a' };
    const bad: [string, typeof ok & { gateway?: string }][] = [
      ['-bad', ok],
      ['k', { ...ok, ip: '10.78.0.9' }],
      ['k', { ...ok, ip: '10.78.1.10' }],
      ['k', { ...ok, prefixLength: 16 }],
      ['k', { ...ok, mac: '03:42:0a:4e:00:0a' }],
      ['k', { ...ok, mac: 'zz' }],
      ['k', { ...ok, gateway: '10.1.0.1' }],
    ];
    for (const [key, id] of bad) {
      await assert.rejects(net.attach(key, id), InvalidArgumentError, `${key} ${JSON.stringify(id)}`);
    }
    await assert.rejects(net.detach('../x'), InvalidArgumentError);
  });
});
