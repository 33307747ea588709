/**
 * Hybrid migration, whose final phase moves no memory: pre-copy rounds, then CRIU's lazy dump
 * leaves the memory in the frozen source, the source judges every page against the last round,
 * and the restored container is served the unchanged pages from the destination's own chunk
 * store and the rest from the source. Checked here: 20 consecutive moves back and forth of a
 * memload under writes, each followed by memload's own check of its whole memory; a failure
 * before commit resumes the source; a source lost during the fill stops the container on the
 * destination (never run with pages missing) and the report names the pages lost.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContainerStatus } from '../../src/core/runtime.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { memloadServiceArgs } from '../../src/demo/memload.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

/** Moves in the back-and-forth test. */
const MOVES = Number(process.env['GODWIT_TEST_MOVES'] ?? 20);

describe('hybrid migration (memory-free final phase)', { skip }, () => {
  const bed = useMigrationTestbed({
    name: `gwh${process.pid % 100000}`,
    hosts: 2,
    link: linkProfile('lan')!,
  });
  const { host, start, verifyNow, runningOn, migrate } = bed;

  it(
    `${MOVES} moves back and forth under writes: memory exact after every one`,
    { timeout: 15 * 60_000 },
    async () => {
      await start(0, 'hl', memloadServiceArgs({ mib: 64, dirtyMBps: 2, hotMiB: 16 }));
      const lines: string[] = [];
      let closingSent = 0;
      for (let k = 0; k < MOVES; k++) {
        const from = k % 2;
        const to = 1 - from;
        const r = await migrate(from, to, { name: 'hl', strategy: 'hybrid' });
        const what = `move ${k + 1} (h${from + 1} → h${to + 1})`;
        assert.equal(r.outcome, 'committed', `${what}: ${JSON.stringify(r.error ?? r.warnings)}`);
        assert.deepEqual(await runningOn('hl'), [to], `${what}: exactly one copy`);
        const l = r.lazy!;
        assert.equal(l.outcome, 'filled', `${what}: ${JSON.stringify(l)}`);
        const fromStore = l.pagesFromStore ?? 0;
        assert.equal(fromStore + l.pagesOnDemand + l.pagesPushed, l.pagesRemote, `${what}: every page once`);
        assert.ok(
          fromStore > 0.5 * l.pagesRemote,
          `${what}: ${fromStore} of ${l.pagesRemote} from the store`,
        );
        assert.match(await verifyNow(to, 'hl'), /^verify ok/, `${what}: memload's memory check`);
        // Writes tracked by the kernel (godwit-wptrack): the verdicts of every page it vouched for
        // were checked against the bytes after the fill, and none differed.
        const wt = r.writeTracking;
        assert.equal(wt?.tracked, true, `${what}: ${JSON.stringify(wt)}`);
        assert.ok((wt?.audited ?? 0) > 0.5 * l.pagesRemote, `${what}: ${JSON.stringify(wt)}`);
        assert.equal(wt?.auditMismatches, 0, `${what}: ${JSON.stringify(wt)}`);
        // Closing passes: what changed among the pages written during the rounds, sent right
        // before the freeze and laid over the last round at the destination.
        const closing = r.phases.filter((p) => p.detail?.['closing'] !== undefined);
        assert.ok(closing.length >= 1, `${what}: a closing pass ran`);
        const sent = closing.map((p) => Number(p.detail?.['changedPages'] ?? 0));
        closingSent += sent.reduce((a, b) => a + b, 0);
        lines.push(
          `${k + 1}: downtime ${r.downtimeMs} ms, ${r.rounds.length} rounds, closing ${sent.join('+')} pages, ` +
            `${fromStore}/${l.pagesRemote} from the store, ${wt?.pagesAtFreeze} written at the freeze, ` +
            `${l.pagesOnDemand} on faults, ${l.pagesPushed} pushed, degraded ${l.degradationWindowMs} ms`,
        );
      }
      console.log(`# hybrid, ${MOVES} moves of memload 64 MiB on lan:\n# ${lines.join('\n# ')}`);
      assert.ok(closingSent > 0, 'the closing passes found and sent pages written after the last round');
    },
  );

  it('a failure before commit lets the held source go on, memory exact', async () => {
    const r = await migrate(0, 1, { name: 'hl', strategy: 'hybrid', faults: { failPhase: 'restore' } });
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r));
    assert.ok(
      r.phases.some((p) => p.phase === 'checkpoint' && p.detail?.['held'] === true),
      'the dump held the memory',
    );
    assert.deepEqual(await runningOn('hl'), [0]);
    assert.match(await verifyNow(0, 'hl'), /^verify ok/);
  });

  it('the source lost during the fill: stopped on the destination, the report names the lost pages', async () => {
    // The source sends no verdicts (the destination fetches only what faults ask for) and its
    // page source dies right after the commit: most pages are still missing there.
    const r = await migrate(0, 1, { name: 'hl', strategy: 'hybrid', faults: { dropSourceAtCommit: true } });
    assert.equal(
      r.committed,
      true,
      JSON.stringify({ error: r.error, warnings: r.warnings, phases: r.phases }),
    );
    assert.equal(r.outcome, 'failed', JSON.stringify(r));
    assert.equal(r.error?.code, 'GODWIT_MEMORY_LOST');
    const l = r.lazy!;
    assert.equal(l.outcome, 'lost');
    assert.ok((l.missingPages ?? 0) > 0 && (l.missingRuns?.length ?? 0) > 0, JSON.stringify(l));
    // Never run with pages missing: stopped there; the source keeps the state as a full checkpoint.
    assert.deepEqual(await runningOn('hl'), []);
    assert.equal((await host(1).a.inspect('hl')).status, ContainerStatus.Stopped);
    assert.equal((await host(0).a.inspect('hl')).status, ContainerStatus.Checkpointed);
    console.log(`# hybrid, source lost after commit: ${l.missingPages} pages missing, stopped on h2`);
  });
});

describe('hybrid without userfaultfd', { skip }, () => {
  const bed = useMigrationTestbed({
    name: `gwf${process.pid % 100000}`,
    hosts: 2,
    link: linkProfile('lan')!,
    env: { GODWIT_LAZY_PAGES: '0' },
  });

  it('falls back to pre-copy and says why; memory exact', async () => {
    await bed.start(0, 'fb', memloadServiceArgs({ mib: 16, dirtyMBps: 1, hotMiB: 4 }));
    const r = await bed.migrate(0, 1, { name: 'fb', strategy: 'hybrid' });
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error ?? r.warnings));
    assert.equal(r.strategy, 'precopy');
    assert.equal(r.fallback?.from, 'hybrid');
    assert.match(r.fallback?.reason ?? '', /userfaultfd/);
    assert.equal(r.lazy, undefined);
    assert.ok(r.rounds.length >= 1);
    assert.match(await bed.verifyNow(1, 'fb'), /^verify ok/);
  });
});
