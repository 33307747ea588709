/**
 * Post-copy and hybrid end to end on the testbed: a memload service dirtying a hot set runs on
 * the destination right after a short stop while godwit's page server feeds CRIU's lazy-pages
 * daemon (faults first, the rest in the background); memload then verifies its whole memory.
 * A failure before commit resumes the source; a source that dies after commit (its page source
 * drops the connection) gets the container stopped on the destination, never run with holes.
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
import { linkProfile } from '../../src/testbed/profiles.js';
import { testbedDown, testbedUp } from '../../src/testbed/testbed.js';
import { missingRequirement } from './support.js';

const skip = await missingRequirement();
if (skip && process.env['CI'] === 'true') throw new Error(`integration tests cannot run in CI: ${skip}`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('post-copy and hybrid migration', { skip }, () => {
  const name = `gwl${process.pid % 100000}`;
  let dir: string;
  let tb: TestbedInfo;
  let agents: AgentClient[];

  before(async () => {
    // The agents inherit it: this file's migrations may ask for injected failures.
    process.env['GODWIT_FAULT_INJECTION'] = '1';
    dir = await mkdtemp(join(tmpdir(), 'godwit-postcopy-'));
    tb = await testbedUp({
      name,
      hosts: 2,
      link: linkProfile('edge')!,
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

  it('post-copy: runs on the destination after a short stop, then gets every page; memory exact', async () => {
    const target = await start(0, 'pl', memload(64, 2, 16));
    const [r, seen] = await probeDuring(
      { bin: resolve('bin/godwit.js'), netns: tb.client!.netns, target, intervalMs: 10 },
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
      { bin: resolve('bin/godwit.js'), netns: tb.client!.netns, target, intervalMs: 10 },
      () => migrate(1, 0, { name: 'pl', strategy: 'hybrid' }),
    );
    assert.equal(r.outcome, 'committed', JSON.stringify(r.error ?? r.warnings));
    assert.deepEqual(await runningOn('pl'), [0]);
    const l = r.lazy!;
    assert.equal(l.outcome, 'filled', JSON.stringify(l));
    assert.ok(r.rounds.length >= 1);
    assert.ok(l.pagesLocal > l.pagesRemote, `local ${l.pagesLocal}, remote ${l.pagesRemote}`);
    assert.match(await verifyNow(0, 'pl'), /^verify ok/);
    assert.equal(seen.longLived.counterResets + seen.fresh.counterResets, 0, 'the counter continued');
    console.log(
      `# hybrid 64 MiB on edge: ${r.rounds.length} rounds, downtime ${r.downtimeMs} ms, ` +
        `client gap ${seen.longLived.maxGapMs.toFixed(0)} ms, local ${l.pagesLocal} pages, remote ${l.pagesRemote} ` +
        `(${l.pagesOnDemand} on faults), degraded ${l.degradationWindowMs} ms, wire ${r.bytes.wire} B`,
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
