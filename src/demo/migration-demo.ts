/**
 * The live-migration demo: a testbed of two hosts on a shaped link with a client; the
 * counter service runs on h1 while the client probes it; godwit migrates it to h2; the
 * migration report is shown next to what the client saw. Everything is torn down after.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../agent/client.js';
import { migrateThrough } from '../migration/client.js';
import type { LinkSpec } from '../core/testbed.js';
import type { MigrationReport } from '../core/migration.js';
import { probeInNetns } from '../bench/manual-migration.js';
import type { ProbeReport } from '../probe/probe.js';
import { testbedDown, testbedUp } from '../testbed/testbed.js';

/** What the demo measured. */
export interface MigrationDemoReport {
  link: LinkSpec;
  target: string;
  migration: MigrationReport;
  probe: ProbeReport;
  /** The service answered after the migration, from h2, with its counter continued. */
  ok: boolean;
}

/** Runs the demo; `godwitBin` is bin/godwit.js (agents and the probe run it). */
export async function runMigrationDemo(opts: {
  godwitBin: string;
  link: LinkSpec;
  memoryMiB?: number;
  onStep?: (line: string) => void;
}): Promise<MigrationDemoReport> {
  const step = opts.onStep ?? (() => undefined);
  const name = `gwdemo${process.pid % 10000}`;
  const dir = await mkdtemp(join(tmpdir(), 'godwit-demo-'));
  try {
    step(`bringing up a testbed: 2 hosts joined by the ${opts.link.name} link profile, and a client`);
    const tb = await testbedUp({
      name,
      hosts: 2,
      link: opts.link,
      client: true,
      startAgents: true,
      godwitBin: opts.godwitBin,
      dir,
      baseStateDir: join(dir, 'hosts'),
    });
    const [h1, h2] = tb.hosts;
    if (!h1 || !h2 || !tb.client) throw new Error('testbed came up without two hosts and a client');
    const src = new AgentClient({ socketPath: h1.socket });
    try {
      const mib = opts.memoryMiB ?? 0;
      const args =
        mib > 0
          ? ['/usr/local/bin/godwit-memload', '--mib', String(mib), '--mix', '30:30:40', '--port', '8080']
          : ['/usr/local/bin/godwit-counterd', '--port', '8080'];
      const info = await src.run({ name: 'web', image: 'busybox', args, env: {} });
      const target = `${info.network?.ip ?? '?'}:8080`;
      step(
        `web runs on h1 at ${target}${mib > 0 ? ` holding ${mib} MiB` : ''}; the client probes it every 5 ms`,
      );
      if (mib > 0) await waitFor(async () => /ready mib/.test(await src.logs('web')), 120_000);
      const probeMs = 4000 + mib * 120;
      const probe = probeInNetns({
        bin: opts.godwitBin,
        netns: tb.client.netns,
        target,
        durationMs: probeMs,
      });
      probe.catch(() => undefined);
      await sleep(1500);
      step('migrating web h1 → h2 (cold)');
      const migration = await migrateThrough(src, {
        name: 'web',
        to: { host: h2.address, port: h2.port, label: h2.name },
        strategy: 'cold',
      });
      step(`migration ${migration.outcome}; waiting for the probe to finish`);
      const report = await probe;
      const ok =
        migration.outcome === 'committed' &&
        report.longLived.counterResets === 0 &&
        report.fresh.counterResets === 0 &&
        report.fresh.ok > 0;
      return { link: opts.link, target, migration, probe: report, ok };
    } finally {
      src.close();
    }
  } finally {
    step('tearing the testbed down');
    await testbedDown({ name, dir }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the workload');
    await sleep(100);
  }
}
