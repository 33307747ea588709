/**
 * Pre-copy migration end to end on the testbed: a memload service dirtying a hot set moves
 * h1 → h2 in rounds while the client probes it, then verifies its whole memory; a failure
 * injected before a round and one injected in the stopped final phase both leave the service
 * running on h1 with its memory intact; a service that dirties faster than its link is
 * migrated after a bounded number of rounds, the report saying which rule stopped them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import { probeDuring } from '../../src/bench/manual-migration.js';
import { verifyMemory } from '../../src/demo/migration-demo.js';
import type { MigrationReport } from '../../src/core/migration.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import type { TestbedHost, TestbedInfo } from '../../src/core/testbed.js';
import { migrateThrough, type MigrationRequest } from '../../src/migration/client.js';
import { linkProfile, parseLinkSpec } from '../../src/testbed/profiles.js';
import { testbedDown, testbedUp } from '../../src/testbed/testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('pre-copy migration', { skip }, () => {
  const name = `gwq${process.pid % 100000}`;
  let dir: string;
  let tb: TestbedInfo;
  let agents: AgentClient[];

  before(async () => {
    // The agents inherit it: this file's migrations may ask for injected failures.
    process.env['GODWIT_FAULT_INJECTION'] = '1';
    dir = await mkdtemp(join(tmpdir(), 'godwit-precopy-'));
    tb = await testbedUp({
      name,
      hosts: 3,
      link: linkProfile('lan')!,
      // h1–h3 is slow: 8 Mbit/s, for the service that dirties faster than its link.
      pairLinks: { 'h1-h3': parseLinkSpec('8mbit,2ms') },
      client: true,
      startAgents: true,
      godwitBin: resolve('bin/godwit.js'),
      dir,
      baseStateDir: join(dir, 'hosts'),
    });
    agents = tb.hosts.map((h) => new AgentClient({ socketPath: h.socket }));
  });
  after(async () => {
    for (const a of agents ?? []) a.close();
    await testbedDown({ name, dir });
    await rm(dir, { recursive: true, force: true });
  });

  const host = (i: number): { h: TestbedHost; a: AgentClient } => ({ h: tb.hosts[i]!, a: agents[i]! });

  const memload = (mib: number, dirty: number, hot: number): string[] => [
    '/usr/local/bin/godwit-memload',
    '--mib',
    String(mib),
    '--mix',
    '30:30:40',
    '--pattern',
    'hotset',
    '--hot-mib',
    String(hot),
    '--dirty-mib-per-s',
    String(dirty),
    '--interval-ms',
    '100',
    '--verify-interval-ms',
    '0',
    '--port',
    '8080',
  ];

  async function start(i: number, cname: string, args: string[]): Promise<string> {
    const info = await host(i).a.run({ name: cname, image: 'busybox', args, env: {} });
    const deadline = Date.now() + 60_000;
    while (!/listening/.test(await host(i).a.logs(cname))) {
      if (Date.now() > deadline) throw new Error(`${cname} did not start`);
      await sleep(100);
    }
    return `${info.network!.ip}:8080`;
  }

  /** memload's verdict on its whole memory, asked for now. */
  async function verifyNow(i: number, cname: string): Promise<string> {
    const line = await verifyMemory(host(i).a, cname, 30_000);
    if (line === undefined) throw new Error(`${cname} on h${i + 1} gave no verdict`);
    return line;
  }

  async function runningOn(cname: string): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < agents.length; i++) {
      const info = await host(i)
        .a.inspect(cname)
        .catch(() => undefined);
      if (info?.status === ContainerStatus.Running) out.push(i);
    }
    return out;
  }

  function migrate(from: number, to: number, req: Omit<MigrationRequest, 'to'>): Promise<MigrationReport> {
    const dst = host(to).h;
    return migrateThrough(host(from).a, {
      ...req,
      to: { host: dst.address, port: dst.port, label: dst.name },
    });
  }

  it('moves a service dirtying a hot set in rounds; the client keeps its connection and the memory is exact', async () => {
    const target = await start(0, 'pc', memload(64, 2, 16));
    const [r, seen] = await probeDuring(
      { bin: resolve('bin/godwit.js'), netns: tb.client!.netns, target, intervalMs: 10 },
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
    // The stopped phase sent only what changed since the last round.
    const transfer = r.phases.find((p) => p.phase === 'transfer')!.detail as { rawBytesSent: number };
    assert.ok(transfer.rawBytesSent < 16 * 1024 * 1024, `final transfer sent ${transfer.rawBytesSent} B`);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    assert.ok(seen.survived, 'the long-lived connection survived');
    console.log(
      `# precopy 64 MiB on lan: ${r.rounds.length} rounds (${r.stopReason}), downtime ${r.downtimeMs} ms, ` +
        `total ${r.totalMs} ms, wire ${r.bytes.wire} B, final ${transfer.rawBytesSent} B; ` +
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
    // And it still migrates afterwards.
    const again = await migrate(1, 0, { name: 'pc', strategy: 'precopy', predict: false });
    assert.equal(again.outcome, 'committed', JSON.stringify(again.error));
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
