/**
 * The baselines on a 2-host edge testbed with a client: a 32 MiB memload service moves by hand
 * (checkpoint, tar | zstd over one TCP connection, restore) h1 → h2, and with CRIU's page server
 * h1 → h2 and back, while the client probes it; memload then finds its whole memory exact. A by-hand
 * or page-server move whose destination refuses the restore (the name is taken there) rolls back:
 * the service runs on h1 again, memory exact, still answering the client.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BaselineContext, BaselineReport } from '../../src/bench/baseline.js';
import { migrateByHandTarZstd, migrateCriuPageServer } from '../../src/bench/baselines.js';
import { probeDuring, probeInNetns } from '../../src/bench/manual-migration.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import { memloadServiceArgs } from '../../src/demo/memload.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { assertCommitted, reportLine } from './baseline-checks.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('baselines: by hand and CRIU page server', { skip, timeout: 120_000 }, () => {
  const bed = useMigrationTestbed({
    name: `gwbl${process.pid % 10000}`,
    hosts: 2,
    link: linkProfile('edge')!,
  });
  const { host, start, verifyNow, runningOn } = bed;
  const bin = resolve('bin/godwit.js');
  const memload = (seed: number): string[] => memloadServiceArgs({ mib: 32, dirtyMBps: 1, hotMiB: 32, seed });
  let workDir = '';
  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'godwit-baselines-'));
  });
  after(async () => {
    await rm(workDir, { recursive: true, force: true });
  });
  const ctx = (from: number, to: number, name: string): BaselineContext => ({
    from: host(from).h,
    to: host(to).h,
    agents: [host(from).a, host(to).a],
    name,
    workDir,
  });
  const probe = (target: string) => ({ bin, netns: bed.tb.client!.netns, target, intervalMs: 10 });
  it('by hand: checkpoint, tar | zstd over one TCP connection, restore; memory exact', async () => {
    const target = await start(0, 'bh', memload(1));
    const [r, seen] = await probeDuring(probe(target), () => migrateByHandTarZstd(ctx(0, 1, 'bh')));
    assertCommitted(r, ['checkpoint', 'copy', 'restore', 'cleanup']);
    assert.deepEqual(await runningOn('bh'), [1], 'exactly one copy, on h2');
    await assert.rejects(
      host(0).a.inspect('bh'),
      (e: { code?: string }) => e.code === 'GODWIT_CONTAINER_NOT_FOUND',
      'the source record is gone',
    );
    assert.match(await verifyNow(1, 'bh'), /^verify ok/);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    console.log(reportLine('byhand 32 MiB on edge', r, seen.longLived.maxGapMs));
    await host(1).a.remove('bh', { force: true });
  });

  it("CRIU's page server: memory straight to the destination, the rest as by hand; there and back", async () => {
    const target = await start(0, 'ps', memload(2));
    const [there, seen] = await probeDuring(probe(target), () => migrateCriuPageServer(ctx(0, 1, 'ps')));
    assertCommitted(there, ['page-server', 'checkpoint', 'copy', 'restore', 'cleanup']);
    assert.deepEqual(await runningOn('ps'), [1]);
    assert.match(await verifyNow(1, 'ps'), /^verify ok/);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    // The memory crossed uncompressed: nearly all of the checkpoint is on the wire.
    assert.ok(there.wireBytes > 0.9 * there.logicalBytes, `wire ${there.wireBytes} B`);
    console.log(reportLine('criu-page-server 32 MiB on edge, h1 → h2', there, seen.longLived.maxGapMs));

    const [back, seenBack] = await probeDuring(probe(target), () => migrateCriuPageServer(ctx(1, 0, 'ps')));
    assertCommitted(back, ['page-server', 'checkpoint', 'copy', 'restore', 'cleanup']);
    assert.deepEqual(await runningOn('ps'), [0]);
    assert.match(await verifyNow(0, 'ps'), /^verify ok/);
    console.log(reportLine('criu-page-server 32 MiB on edge, h2 → h1', back, seenBack.longLived.maxGapMs));
    await host(0).a.remove('ps', { force: true });
  });

  /**
   * Runs `migrate` on a fresh service `cname` on h1 while h2 holds a container of that name (its
   * restore is refused after the copy); the service must run on h1 again, exact, answering.
   */
  const refusedRestore = async (
    cname: string,
    seed: number,
    migrate: (c: BaselineContext) => Promise<BaselineReport>,
    phases: string[],
  ): Promise<BaselineReport> => {
    const target = await start(0, cname, memload(seed));
    await host(1).a.run({ name: cname, image: 'busybox', args: ['sleep', '1000'], env: {} });
    try {
      const [r, seen] = await probeDuring(probe(target), () => migrate(ctx(0, 1, cname)));
      assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
      assert.equal(r.error?.code, 'GODWIT_CONTAINER_EXISTS');
      assert.deepEqual(
        r.phases.map((p) => p.name),
        phases,
      );
      assert.ok(r.wireBytes > 0, 'the copy crossed before the restore was refused');
      const onH1 = await host(0).a.inspect(cname);
      assert.equal(onH1.status, ContainerStatus.Running);
      assert.ok(onH1.restoredFrom, 'restored from its own checkpoint');
      const onH2 = await host(1).a.inspect(cname);
      assert.deepEqual(onH2.args, ['sleep', '1000'], "h2's own container is untouched");
      assert.match(await verifyNow(0, cname), /^verify ok/);
      assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
      const now = await probeInNetns({
        bin,
        netns: bed.tb.client!.netns,
        target,
        durationMs: 500,
        intervalMs: 20,
      });
      assert.ok(now.fresh.ok > 0 && now.longLived.ok > 0, JSON.stringify(now.verdict));
      console.log(reportLine(`${r.kind} rollback`, r, seen.longLived.maxGapMs));
      return r;
    } finally {
      await host(1)
        .a.remove(cname, { force: true })
        .catch(() => undefined);
      await host(0)
        .a.remove(cname, { force: true })
        .catch(() => undefined);
    }
  };

  it('by hand rolls back when the destination refuses the restore; the service answers on h1', async () => {
    await refusedRestore('rb', 3, migrateByHandTarZstd, ['checkpoint', 'copy', 'restore', 'rollback']);
  });

  it('the page server rolls back too: the memory comes back from the destination', async () => {
    const r = await refusedRestore('rp', 4, migrateCriuPageServer, [
      'page-server',
      'checkpoint',
      'copy',
      'restore',
      'rollback',
    ]);
    // The memory crossed twice: raw to the page server, back compressed (40 % of it is random).
    assert.ok(r.wireBytes > 1.25 * 32 * 1024 * 1024, `wire ${r.wireBytes} B`);
  });
});
