/**
 * Cold migration end to end on the testbed's `edge` link: a container holding 256 MiB of
 * written memory (zero, repeated and random pages) moves h1 → h2 and verifies its own memory
 * after the restore; the return trip reuses the chunks h1 still holds; a link cut and a
 * destination agent killed mid-transfer leave exactly one running copy with its state intact.
 */
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { migrateThrough } from '../../src/migration/client.js';
import type { MigrationReport } from '../../src/core/migration.js';
import { probeInNetns } from '../../src/bench/manual-migration.js';
import { runChecked, runCommand } from '../../src/system/exec.js';
import { linkProfile } from '../../src/testbed/profiles.js';
import { useMigrationTestbed } from './migration-testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('cold migration on the edge link', { skip }, () => {
  const bed = useMigrationTestbed({
    name: `gwc${process.pid % 100000}`,
    hosts: 2,
    link: linkProfile('edge')!,
  });
  const { host } = bed;

  /** Starts a migration through the source agent; `during` runs once the transfer phase is reached. */
  async function migrate(
    from: number,
    to: number,
    cname: string,
    during?: () => Promise<void>,
  ): Promise<MigrationReport> {
    const dst = host(to).h;
    let fired = false;
    return migrateThrough(
      host(from).a,
      { name: cname, to: { host: dst.address, port: dst.port, label: dst.name } },
      {
        pollMs: 50,
        onReport: async (r) => {
          if (during && !fired && r.progress?.phase === 'transfer') {
            fired = true;
            await during();
          }
        },
      },
    );
  }

  /** Where `cname` runs, among `hosts` (an agent that is down is not asked). */
  async function runningOn(cname: string, hosts: number[] = [0, 1]): Promise<number[]> {
    return (await bed.runningOn(cname)).filter((i) => hosts.includes(i));
  }

  async function waitVerified(i: number, cname: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const logs = await host(i).a.logs(cname);
      assert.doesNotMatch(logs, /verify FAILED/, `${cname} found its memory corrupted`);
      if (/verify ok/.test(logs)) return logs;
      if (Date.now() > deadline)
        throw new Error(`${cname} on h${i + 1} never verified its memory:\n${logs.slice(-500)}`);
      await sleep(200);
    }
  }

  const memload = (mib: number): string[] => [
    '/usr/local/bin/godwit-memload',
    '--mib',
    String(mib),
    '--mix',
    '30:30:40',
    '--verify-interval-ms',
    '500',
    '--port',
    '8080',
  ];

  it('moves 256 MiB h1 → h2 with less on the wire than in memory, and back for a fraction', async () => {
    const info = await host(0).a.run({ name: 'big', image: 'busybox', args: memload(256), env: {} });
    await waitVerified(0, 'big', 120_000);

    const probe = probeInNetns({
      bin: resolve('bin/godwit.js'),
      netns: bed.tb.client!.netns,
      target: `${info.network!.ip}:8080`,
      durationMs: 40_000,
      intervalMs: 20,
    });
    probe.catch(() => undefined);
    await sleep(1000);
    const there = await migrate(0, 1, 'big');
    assert.equal(there.outcome, 'committed', JSON.stringify(there.error ?? there.warnings));
    assert.deepEqual(await runningOn('big'), [1], 'exactly one copy, on h2');
    await waitVerified(1, 'big');
    assert.ok(
      there.bytes.wire < there.bytes.logical,
      `wire ${there.bytes.wire} < logical ${there.bytes.logical}`,
    );
    assert.ok(there.bytes.logical >= 256 * 1024 * 1024);

    const back = await migrate(1, 0, 'big');
    assert.equal(back.outcome, 'committed', JSON.stringify(back.error ?? back.warnings));
    assert.deepEqual(await runningOn('big'), [0], 'exactly one copy, on h1');
    await waitVerified(0, 'big');
    assert.ok(
      back.bytes.wire <= 0.2 * there.bytes.wire,
      `return trip sent ${back.bytes.wire} B, first trip ${there.bytes.wire} B`,
    );
    const seen = await probe;
    console.log(
      `# cold 256 MiB on edge: there downtime ${there.downtimeMs} ms, wire ${there.bytes.wire} B of ` +
        `${there.bytes.logical} B logical; back downtime ${back.downtimeMs} ms, wire ${back.bytes.wire} B; ` +
        `client gap ${seen.fresh.maxGapMs.toFixed(0)} ms (fresh), ${seen.longLived.maxGapMs.toFixed(0)} ms (long-lived), ` +
        `counter resets ${seen.fresh.counterResets + seen.longLived.counterResets}`,
    );
    assert.equal(seen.fresh.counterResets + seen.longLived.counterResets, 0, 'the counter continued');
    await host(0).a.remove('big', { force: true });
  });

  it('a link cut mid-transfer: resumes or rolls back, exactly one running copy, state intact', async () => {
    await host(0).a.run({ name: 'cut', image: 'busybox', args: memload(96), env: {} });
    await waitVerified(0, 'cut', 60_000);
    const ns = bed.tb.hosts[0]!.netns;
    const rule = ['-p', 'tcp', '--dport', '7071', '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    const r = await migrate(0, 1, 'cut', async () => {
      await runChecked('ip', ['netns', 'exec', ns, 'iptables', '-I', 'OUTPUT', ...rule]);
      await sleep(1500);
      await runChecked('ip', ['netns', 'exec', ns, 'iptables', '-D', 'OUTPUT', ...rule]);
    });
    await runCommand('ip', ['netns', 'exec', ns, 'iptables', '-D', 'OUTPUT', ...rule]); // in case it is still there
    assert.ok(r.outcome === 'committed' || r.outcome === 'rolled-back', `outcome ${r.outcome}`);
    const where = await runningOn('cut');
    assert.equal(
      where.length,
      1,
      `exactly one running copy (on ${where.map((i) => `h${i + 1}`).join(', ')})`,
    );
    await waitVerified(where[0]!, 'cut');
    const transfer = r.phases.find((p) => p.phase === 'transfer');
    console.log(
      `# link cut: ${r.outcome}, transfer detail ${JSON.stringify(transfer?.detail ?? transfer?.error)}`,
    );
    await host(where[0]!).a.remove('cut', { force: true });
  });

  it('the destination agent killed mid-transfer: the container runs on h1 with its state', async () => {
    await host(0).a.run({ name: 'kill', image: 'busybox', args: memload(96), env: {} });
    await waitVerified(0, 'kill', 60_000);
    const victim = bed.tb.hosts[1]!.agentPid!;
    const r = await migrate(0, 1, 'kill', async () => {
      process.kill(victim, 'SIGKILL');
    });
    assert.equal(r.outcome, 'rolled-back', JSON.stringify(r.error));
    assert.deepEqual(await runningOn('kill', [0]), [0], 'runs on h1');
    // h2's agent is dead: look at its state directory directly.
    const runcList = await runCommand('runc', [
      '--root',
      join(bed.tb.hosts[1]!.stateDir, 'runc'),
      'list',
      '-q',
    ]);
    assert.doesNotMatch(runcList.stdout, /^kill$/m, 'no copy on h2');
    const logs = await waitVerified(0, 'kill');
    assert.match(logs, /verify ok/);
  });
});
