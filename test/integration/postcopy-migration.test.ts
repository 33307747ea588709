/**
 * Post-copy and hybrid end to end on the testbed: a memload service dirtying a hot set runs on
 * the destination right after a short stop while godwit's page server feeds CRIU's lazy-pages
 * daemon (faults first, the rest in the background); memload then verifies its whole memory.
 * A failure before commit resumes the source; a source that dies after commit (its page source
 * drops the connection) gets the container stopped on the destination, never run with holes.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { probeDuring } from '../../src/bench/manual-migration.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { memloadServiceArgs } from '../../src/demo/memload.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('post-copy and hybrid migration', { skip }, () => {
  const bed = useMigrationTestbed({
    name: `gwl${process.pid % 100000}`,
    hosts: 2,
    link: linkProfile('edge')!,
  });
  const { host, start, verifyNow, runningOn, migrate } = bed;
  const memload = (mib: number, dirty: number, hot: number): string[] =>
    memloadServiceArgs({ mib, dirtyMBps: dirty, hotMiB: hot });

  it('post-copy: runs on the destination after a short stop, then gets every page; memory exact', async () => {
    const target = await start(0, 'pl', memload(64, 2, 16));
    const [r, seen] = await probeDuring(
      { bin: resolve('bin/godwit.js'), netns: bed.tb.client!.netns, target, intervalMs: 10 },
      () => migrate(0, 1, { name: 'pl', strategy: 'postcopy' }),
    );
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error ?? r.warnings));
    assert.deepEqual(await runningOn('pl'), [1], 'exactly one copy, on h2');
    const l = r.lazy!;
    assert.equal(l.outcome, 'filled', JSON.stringify(l));
    assert.ok(l.pagesRemote > 10_000, `remote pages ${l.pagesRemote}`);
    assert.equal(l.pagesOnDemand + l.pagesPushed, l.pagesRemote, 'every remote page arrived once');
    assert.ok(r.rounds.length === 0);
    assert.match(await verifyNow(1, 'pl'), /^verify ok/);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    assert.ok(seen.survived, 'the long-lived connection survived');
    console.log(
      `# postcopy 64 MiB on edge: downtime ${r.downtimeMs} ms, client gap ${seen.longLived.maxGapMs.toFixed(0)} ms, ` +
        `remote ${l.pagesRemote} pages (${l.pagesOnDemand} on faults, ${l.pagesPushed} pushed), faults ${l.faults} ` +
        `p50 ${l.faultWaitMs.p50} p99 ${l.faultWaitMs.p99} ms, degraded ${l.degradationWindowMs} ms, wire ${r.bytes.wire} B`,
    );
  });

  it('hybrid: rounds first, then only what changed stays on the source; memory exact', async () => {
    const target = `${(await host(1).a.inspect('pl')).network!.ip}:8080`;
    const [r, seen] = await probeDuring(
      { bin: resolve('bin/godwit.js'), netns: bed.tb.client!.netns, target, intervalMs: 10 },
      () => migrate(1, 0, { name: 'pl', strategy: 'hybrid' }),
    );
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error ?? r.warnings));
    assert.deepEqual(await runningOn('pl'), [0]);
    const l = r.lazy!;
    assert.equal(l.outcome, 'filled', JSON.stringify(l));
    assert.ok(r.rounds.length >= 1);
    // The memory stayed on the frozen source; the source's verdicts let the destination serve
    // nearly all of it from what the rounds brought, and fetch only what changed since.
    const fromStore = l.pagesFromStore ?? 0;
    assert.ok(fromStore > 0.9 * l.pagesRemote, `from the store ${fromStore} of ${l.pagesRemote}`);
    assert.equal(fromStore + l.pagesOnDemand + l.pagesPushed, l.pagesRemote, 'every page arrived once');
    assert.ok(r.timings.verdictScanMs !== undefined, 'the source judged every page');
    assert.match(await verifyNow(0, 'pl'), /^verify ok/);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    console.log(
      `# hybrid 64 MiB on edge: ${r.rounds.length} rounds, downtime ${r.downtimeMs} ms, ` +
        `client gap ${seen.longLived.maxGapMs.toFixed(0)} ms, held on the source ${l.pagesRemote} pages: ` +
        `${fromStore} from the store, ${l.pagesOnDemand} on faults, ${l.pagesPushed} pushed; verdicts ` +
        `${r.timings.verdictScanMs} ms (first pass ${r.timings.verdictFirstPassMs} ms, at the destination ${l.verdictsMs} ms ` +
        `after the restore), degraded ${l.degradationWindowMs} ms, wire ${r.bytes.wire} B, phases ` +
        r.phases.map((p) => `${p.phase} ${p.durationMs}`).join(' '),
    );
  });

  it('a failure before commit resumes the source with its memory', async () => {
    const r = await migrate(0, 1, { name: 'pl', strategy: 'postcopy', faults: { failPhase: 'restore' } });
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
    assert.deepEqual(await runningOn('pl'), [0]);
    assert.match(await verifyNow(0, 'pl'), /^verify ok/);
  });

  it('a source lost after commit: the container is stopped on the destination, the report says what was lost', async () => {
    const r = await migrate(0, 1, { name: 'pl', strategy: 'postcopy', faults: { dropPagesAfter: 8000 } });
    assert.equal(r.committed, true);
    assert.equal(r.outcome, 'failed', JSON.stringify(r));
    assert.equal(r.error?.code, 'GODWIT_MEMORY_LOST');
    assert.equal(r.lazy?.outcome, 'lost');
    assert.ok((r.lazy?.missingPages ?? 0) > 0, JSON.stringify(r.lazy));
    assert.ok((r.lazy?.missingRuns?.length ?? 0) > 0, 'the report names the missing pages');
    // The source kept the state it was moved from, as a full checkpoint, stopped.
    assert.equal((await host(0).a.inspect('pl')).status, ContainerStatus.Checkpointed);
    assert.deepEqual(await runningOn('pl'), [], 'not running anywhere with wrong memory');
    const info = await host(1).a.inspect('pl');
    assert.equal(info.status, ContainerStatus.Stopped);
    console.log(`# source lost after commit: ${r.lazy?.missingPages} pages missing, container stopped on h2`);
    await host(1).a.remove('pl', { force: true });
  });
});
