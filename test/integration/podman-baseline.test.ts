/**
 * Podman's checkpoint/restore migration on a 2-host edge testbed with a client: a 32 MiB memload
 * service started under Podman (store A, "h1") on the service network moves to store B ("h2")
 * with checkpoint --export, a TCP copy over the shaped link and restore --import, while the
 * client probes it; the long-lived connection survives, the counter never goes back, memload then
 * finds its whole memory exact. A move that fails before B runs the container (after the netns was
 * recreated, or before the copy) rolls back: it runs in A again, exact, still answering. Closing the bed leaves no container, store or namespace.
 */
import assert from 'node:assert/strict';
import { readdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServiceHost } from '../../src/bench/baseline.js';
import { probeDuring, probeInNetns } from '../../src/bench/manual-migration.js';
import { openPodmanBed, podmanUnavailable, type PodmanBed } from '../../src/bench/podman-baseline.js';
import { memloadServiceArgs } from '../../src/demo/memload.js';
import { verifyMemory, waitListening } from '../../src/demo/migration-demo.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { listNetns } from '../../src/testbed/system.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { assertCommitted, reportLine } from './baseline-checks.js';
import { missingRequirement } from './support.js';

const skip = (await missingRequirement()) ?? (await podmanUnavailable());
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe(
  'podman baseline: checkpoint --export, copy over the link, restore --import',
  { skip, timeout: 150_000 },
  () => {
    const tbName = `gwpm${process.pid % 10000}`;
    const testbed = useMigrationTestbed({ name: tbName, hosts: 2, link: linkProfile('edge')! });
    const bin = resolve('bin/godwit.js');
    let workDir = '';
    let bed: PodmanBed | undefined;
    before(async () => {
      workDir = await mkdtemp(join(tmpdir(), 'godwit-podman-'));
      bed = await openPodmanBed({ testbed: testbed.tb, workDir });
    });
    after(async () => {
      // Only when a test failed before the last one closed it.
      await bed?.close().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    });
    const pb = (): PodmanBed => {
      if (!bed) throw new Error('the podman bed is not open');
      return bed;
    };
    const memload = (seed: number): string[] =>
      memloadServiceArgs({ mib: 32, dirtyMBps: 1, hotMiB: 32, seed });
    /** Starts `name` through `host`, waits until it listens; its service address. */
    const start = async (host: ServiceHost, name: string, seed: number): Promise<string> => {
      const { network } = await host.run({ name, image: 'busybox', args: memload(seed), env: {} });
      assert.ok(network?.ip, 'an address on the service network');
      await waitListening(host, name);
      return `${network.ip}:8080`;
    };
    /** memload's verdict on its whole memory (verifyMemory needs only logs and exec: the ServiceHost subset). */
    const verifyOn = async (host: ServiceHost, name: string): Promise<string> =>
      (await verifyMemory(host, name, 30_000)) ?? 'no verdict';
    const probe = (target: string) => ({ bin, netns: testbed.tb.client!.netns, target, intervalMs: 10 });

    it('moves memload (32 MiB) h1 → h2 under the probe; the connection survives, memory exact', async () => {
      const [a, b] = pb().hosts;
      const target = await start(a, 'pm1', 1);
      const [r, seen] = await probeDuring(probe(target), () => pb().migrate('pm1'));
      assert.equal(r.kind, 'podman');
      assertCommitted(r, ['checkpoint', 'copy', 'restore', 'cleanup']);
      assert.ok(
        seen.survived,
        `the long-lived connection survived: ${JSON.stringify(seen.longLived.breaks)}`,
      );
      assert.ok(
        Number.isFinite(seen.longLived.maxGapMs) && seen.longLived.maxGapMs < 30_000,
        `client gap ${seen.longLived.maxGapMs} ms`,
      );
      assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter never went back');
      assert.match(await verifyOn(b, 'pm1'), /^verify ok/);
      await assert.rejects(a.exec('pm1', ['true']), /no (container|such)/i, 'store A holds it no more');
      console.log(reportLine('podman 32 MiB on edge', r, seen.longLived.maxGapMs));
      await b.remove('pm1', { force: true });
    });

    it('rolls back when the move fails after the netns was recreated; the service answers from A', async () => {
      const [a] = pb().hosts;
      const target = await start(a, 'pm2', 2);
      const [r, seen] = await probeDuring(probe(target), () =>
        pb().migrate('pm2', { failBefore: 'restore' }),
      );
      assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
      assert.equal(r.error?.code, 'GODWIT_FAULT_INJECTED');
      assert.deepEqual(
        r.phases.map((p) => p.name),
        ['checkpoint', 'copy', 'restore', 'rollback'],
      );
      assert.ok(r.wireBytes > 0, 'the archive crossed before the failure');
      assert.equal((await a.exec('pm2', ['true'])).exitCode, 0, 'runs in store A');
      assert.match(await verifyOn(a, 'pm2'), /^verify ok/);
      assert.ok(
        seen.survived,
        `the long-lived connection survived: ${JSON.stringify(seen.longLived.breaks)}`,
      );
      assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter never went back');
      const now = await probeInNetns({ ...probe(target), durationMs: 500, intervalMs: 20 });
      assert.ok(now.fresh.ok > 0 && now.longLived.ok > 0, JSON.stringify(now.verdict));
      console.log(reportLine('podman rollback', r, seen.longLived.maxGapMs));

      // Failing before the copy: A restores it in its own namespace, still under CRIU's lock.
      const [r2, seen2] = await probeDuring(probe(target), () => pb().migrate('pm2', { failBefore: 'copy' }));
      assert.equal(r2.outcome, 'rolled-back', JSON.stringify(r2));
      assert.deepEqual(
        r2.phases.map((p) => p.name),
        ['checkpoint', 'rollback'],
      );
      assert.equal(r2.wireBytes, 0, 'nothing crossed');
      assert.match(await verifyOn(a, 'pm2'), /^verify ok/);
      assert.ok(
        seen2.survived,
        `the long-lived connection survived: ${JSON.stringify(seen2.longLived.breaks)}`,
      );
      assert.equal(
        seen2.longLived.counterResets + seen2.fresh.counterResets,
        0,
        'the counter never went back',
      );
      console.log(reportLine('podman rollback before the copy', r2, seen2.longLived.maxGapMs));
      // Left running: close() must take it.
    });

    it('close() leaves no podman container, store, namespace or lease behind', async () => {
      const conmonBefore = await processesMentioning(workDir);
      assert.ok(conmonBefore.length > 0, "pm2's conmon runs before close");
      await pb().close();
      assert.deepEqual(await readdir(workDir), [], 'the stores are gone');
      assert.deepEqual(await processesMentioning(workDir), [], 'no conmon or container process is left');
      const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .filter((l) => l.includes(workDir));
      assert.deepEqual(mounts, [], 'nothing mounted under the stores');
      const left = (await listNetns()).filter((n) => n.startsWith(`${tbName}-c-`));
      assert.deepEqual(left, [], 'no container namespace is left');
      assert.deepEqual(await readdir(testbed.tb.serviceNetwork.leaseDir), [], 'no address is leased');
      await pb().close(); // idempotent
    });
  },
);

/** PIDs of processes whose command line mentions `text`. */
async function processesMentioning(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    const cmd = await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(text)) out.push(Number(d));
  }
  return out;
}
