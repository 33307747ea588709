/**
 * Pre-copy migration end to end on the testbed: a memload service dirtying a hot set moves
 * h1 → h2 in rounds while the client probes it, then verifies its whole memory; a failure
 * injected before a round and one injected in the stopped final phase both leave the service
 * running on h1 with its memory intact; a service that dirties faster than its link is
 * migrated after a bounded number of rounds, the report saying which rule stopped them. The
 * final dump holds the memory in the frozen processes (only what changed crosses, before the
 * restore); one move uses a final dump that writes every page instead.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { probeDuring } from '../../src/bench/manual-migration.js';
import { linkProfile, parseLinkSpec } from '../../src/testbed/profiles.js';
import { memloadServiceArgs } from '../../src/demo/memload.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

describe('pre-copy migration', { skip }, () => {
  // h1–h3 is slow: 8 Mbit/s, for the service that dirties faster than its link.
  const bed = useMigrationTestbed({
    name: `gwq${process.pid % 100000}`,
    hosts: 3,
    link: linkProfile('lan')!,
    pairLinks: { 'h1-h3': parseLinkSpec('8mbit,2ms') },
  });
  const { host, start, verifyNow, runningOn, migrate } = bed;
  const memload = (mib: number, dirty: number, hot: number): string[] =>
    memloadServiceArgs({ mib, dirtyMBps: dirty, hotMiB: hot });

  it('moves a service dirtying a hot set in rounds; the client keeps its connection and the memory is exact', async () => {
    const target = await start(0, 'pc', memload(64, 2, 16));
    const [r, seen] = await probeDuring(
      { bin: resolve('bin/godwit.js'), netns: bed.tb.client!.netns, target, intervalMs: 10 },
      () => migrate(0, 1, { name: 'pc', strategy: 'precopy' }),
    );
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error ?? r.warnings));
    assert.deepEqual(await runningOn('pc'), [1], 'exactly one copy, on h2');
    assert.match(await verifyNow(1, 'pc'), /^verify ok/);
    assert.ok(r.rounds.length >= 2, `rounds: ${r.rounds.length}`);
    assert.ok(r.stopReason && r.stopReason !== 'cold', `stop reason ${r.stopReason}`);
    const r0 = r.rounds[0]!;
    const last = r.rounds[r.rounds.length - 1]!;
    assert.ok(last.bytesSent < r0.bytesSent / 4, `rounds shrink: ${r0.bytesSent} → ${last.bytesSent}`);
    // The final dump held the memory in the frozen processes: only what changed since the last
    // round crossed, all of it before the container ran on h2 (nothing fetched after).
    assert.equal(r.options?.finalDump, 'held');
    const lazy = r.lazy!;
    assert.equal(lazy.outcome, 'filled', JSON.stringify(lazy));
    assert.equal(lazy.pagesOnDemand, 0, 'no page was fetched after the restore');
    assert.ok((lazy.pagesFromStore ?? 0) > lazy.pagesPushed * 4, JSON.stringify(lazy));
    const transfer = r.phases.find((p) => p.phase === 'transfer')!.detail as { rawBytes?: number };
    const finalBytes = (transfer.rawBytes ?? 0) + lazy.pagesPushed * 4096;
    assert.ok(finalBytes < 16 * 1024 * 1024, `the stopped phase moved ${finalBytes} B`);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    assert.ok(seen.survived, 'the long-lived connection survived');
    console.log(
      `# precopy 64 MiB on lan: ${r.rounds.length} rounds (${r.stopReason}), downtime ${r.downtimeMs} ms, ` +
        `total ${r.totalMs} ms, wire ${r.bytes.wire} B, final ${finalBytes} B; ` +
        `client gap ${seen.longLived.maxGapMs.toFixed(0)} ms (long-lived)`,
    );
  });

  it('a failure before a round leaves the service running on its host, untouched', async () => {
    // pc now runs on h2.
    const r = await migrate(1, 0, { name: 'pc', strategy: 'precopy', faults: { failRound: 1 } });
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
    assert.equal(r.error?.code, 'GODWIT_FAULT_INJECTED');
    assert.equal(r.rounds.length, 1);
    assert.ok(!r.phases.some((p) => p.phase === 'checkpoint'), 'never stopped');
    assert.deepEqual(await runningOn('pc'), [1]);
    assert.match(await verifyNow(1, 'pc'), /^verify ok/);
  });

  it('a failure in the stopped final phase resumes the source with its memory', async () => {
    const r = await migrate(1, 0, { name: 'pc', strategy: 'precopy', faults: { failPhase: 'transfer' } });
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
    assert.ok(
      r.phases.some((p) => p.phase === 'checkpoint'),
      'it was stopped',
    );
    assert.ok(r.phases.some((p) => p.phase === 'rollback' && p.error === undefined));
    assert.deepEqual(await runningOn('pc'), [1]);
    assert.match(await verifyNow(1, 'pc'), /^verify ok/);
    // And it still migrates afterwards, also with a final dump that writes every page.
    const again = await migrate(1, 0, { name: 'pc', strategy: 'precopy', predict: false, finalDump: 'full' });
    assert.equal(again.outcome, 'committed', JSON.stringify(again.error));
    assert.equal(again.options?.finalDump, 'full');
    assert.equal(again.lazy, undefined, 'every page crossed in the dump');
    assert.match(await verifyNow(0, 'pc'), /^verify ok/);
    await host(0).a.remove('pc', { force: true });
  });

  it('a service dirtying faster than its link: the rounds stop by rule, and it still moves intact', async () => {
    // 16 MiB, 8 MB/s over an 8 Mbit/s (1 MB/s) link.
    await start(0, 'fast', memload(16, 8, 8));
    const r = await migrate(0, 2, { name: 'fast', strategy: 'precopy', maxRounds: 6 });
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error));
    assert.ok(r.rounds.length <= 7, `rounds ${r.rounds.length}`);
    assert.ok(
      ['dirty-rate-exceeds-link', 'not-shrinking', 'max-rounds'].includes(r.stopReason ?? ''),
      `stop reason ${r.stopReason}`,
    );
    assert.match(await verifyNow(2, 'fast'), /^verify ok/);
    console.log(
      `# dirtying 8 MB/s over 1 MB/s: ${r.rounds.length} rounds, stopped by ${r.stopReason}, downtime ${r.downtimeMs} ms`,
    );
    await host(2).a.remove('fast', { force: true });
  });
});
