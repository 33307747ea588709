/**
 * The live-migration demo: a testbed of two hosts on a shaped link with a client; a stateful
 * service (godwit-memload, or the counter service) runs on h1 while the client probes it;
 * godwit migrates it back and forth with each strategy in turn (cold h1 → h2, pre-copy back,
 * post-copy to h2, hybrid back), and all four are shown side by side with what the client saw.
 * Everything is torn down after.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../agent/client.js';
import { migrateThrough } from '../migration/client.js';
import type { LinkSpec } from '../core/testbed.js';
import type { MigrationReport, MigrationStrategy } from '../core/migration.js';
import type { TestbedHost } from '../core/testbed.js';
import { newProgressLines } from '../migration/format.js';
import { probeDuring } from '../bench/manual-migration.js';
import type { ProbeReport } from '../probe/probe.js';
import { pairTestbedUp, testbedDown } from '../testbed/testbed.js';
import { counterdServiceArgs, memloadServiceArgs } from './memload.js';

/** One move of the demo: the migration report and what the client saw during it. */
export interface DemoMove {
  migration: MigrationReport;
  probe: ProbeReport;
  /** memload's own check of its whole memory after the move (undefined for counterd). */
  memoryVerified?: boolean;
}

/** What the demo measured. */
export interface MigrationDemoReport {
  link: LinkSpec;
  target: string;
  memoryMiB: number;
  /** h1 → h2 cold, h2 → h1 pre-copy, h1 → h2 post-copy, h2 → h1 hybrid. */
  moves: Record<MigrationStrategy, DemoMove>;
  /** Every move committed, the counter never went back, and memory verified exact after each. */
  ok: boolean;
}

/**
 * Runs the demo; `godwitBin` is bin/godwit.js (agents and the probe run it). With memoryMiB > 0
 * the service is godwit-memload holding that much memory and rewriting `dirtyMBps` MB/s of a
 * hot set (a quarter of it, at most 32 MiB); with 0 it is the counter service.
 */
export async function runMigrationDemo(opts: {
  godwitBin: string;
  link: LinkSpec;
  memoryMiB?: number;
  dirtyMBps?: number;
  onStep?: (line: string) => void;
}): Promise<MigrationDemoReport> {
  const step = opts.onStep ?? (() => undefined);
  const name = `gwdemo${process.pid % 10000}`;
  const dir = await mkdtemp(join(tmpdir(), 'godwit-demo-'));
  try {
    step(`bringing up a testbed: 2 hosts joined by the ${opts.link.name} link profile, and a client`);
    const tb = await pairTestbedUp({ name, link: opts.link, godwitBin: opts.godwitBin, dir });
    const [h1, h2] = tb.hosts;
    const agents = [new AgentClient({ socketPath: h1.socket }), new AgentClient({ socketPath: h2.socket })];
    try {
      const mib = opts.memoryMiB ?? 0;
      const dirty = opts.dirtyMBps ?? 2;
      const hot = Math.max(1, Math.min(32, Math.floor(mib / 4)));
      const args =
        mib > 0 ? memloadServiceArgs({ mib, dirtyMBps: dirty, hotMiB: hot }) : counterdServiceArgs();
      const info = await (agents[0] as AgentClient).run({ name: 'web', image: 'busybox', args, env: {} });
      const target = `${info.network?.ip ?? '?'}:8080`;
      step(
        `web runs on h1 at ${target}` +
          (mib > 0 ? `, holding ${mib} MiB and rewriting ${dirty} MB/s of a ${hot} MiB hot set` : '') +
          '; the client probes it every 5 ms',
      );
      await waitFor(
        async () => /listening|ready/.test(await (agents[0] as AgentClient).logs('web')),
        120_000,
      );
      const move = async (from: number, strategy: MigrationStrategy): Promise<DemoMove> => {
        const to = tb.hosts[1 - from] as TestbedHost;
        const printed = { rounds: 0, closing: 0 };
        const [migration, seen] = await probeDuring(
          { bin: opts.godwitBin, netns: tb.clientNetns, target },
          () => {
            step(`migrating web h${from + 1} → ${to.name} (${strategy})`);
            return migrateThrough(
              agents[from] as AgentClient,
              { name: 'web', to: { host: to.address, port: to.port, label: to.name }, strategy },
              {
                onReport: (r) => {
                  for (const line of newProgressLines(r, printed)) step(`  ${line}`);
                },
              },
            );
          },
        );
        step(
          `  ${migration.outcome}: downtime ${migration.downtimeMs ?? '-'} ms, client gap ${seen.longLived.maxGapMs} ms`,
        );
        const at = migration.outcome === 'committed' ? 1 - from : from;
        const memoryVerified =
          mib > 0
            ? /^verify ok/.test((await verifyMemory(agents[at] as AgentClient, 'web')) ?? '')
            : undefined;
        return { migration, probe: seen, ...(memoryVerified === undefined ? {} : { memoryVerified }) };
      };
      const cold = await move(0, 'cold');
      const precopy = await move(1, 'precopy');
      const postcopy = await move(0, 'postcopy');
      const hybrid = await move(1, 'hybrid');
      const good = (m: DemoMove): boolean =>
        m.migration.outcome === 'committed' &&
        m.probe.longLived.counterResets === 0 &&
        m.probe.fresh.counterResets === 0 &&
        m.probe.fresh.ok > 0 &&
        m.memoryVerified !== false;
      return {
        link: opts.link,
        target,
        memoryMiB: mib,
        moves: { cold, precopy, postcopy, hybrid },
        ok: [cold, precopy, postcopy, hybrid].every(good),
      };
    } finally {
      for (const a of agents) a.close();
    }
  } finally {
    step('tearing the testbed down');
    await testbedDown({ name, dir }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Waits until the service `name` (memload, counterd) says `listening` in its logs; throws after
 * `timeoutMs` with the end of what it printed (a usage error, say).
 */
export async function waitListening(
  host: { logs(name: string): Promise<string> },
  name: string,
  timeoutMs = 60_000,
): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(100)) {
    const out = await host.logs(name);
    if (/listening/.test(out)) return;
    if (Date.now() > deadline) throw new Error(`${name} did not start listening: ${out.trim().slice(-300)}`);
  }
}

/**
 * Asks memload for a verify pass now (SIGUSR1) and returns the verdict line it then prints
 * (`verify ok …` or `verify FAILED …`), or undefined when none came within `timeoutMs`.
 */
export async function verifyMemory(
  agent: {
    logs(name: string): Promise<string>;
    exec(name: string, args: readonly string[]): Promise<unknown>;
  },
  name: string,
  timeoutMs = 60_000,
): Promise<string | undefined> {
  const verdicts = async (): Promise<string[]> =>
    (await agent.logs(name)).split('\n').filter((l) => l.startsWith('verify'));
  const before = (await verdicts()).length;
  await agent.exec(name, ['kill', '-USR1', '1']);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await verdicts();
    if (now.length > before) return now[now.length - 1];
    if (Date.now() > deadline) return undefined;
    await sleep(100);
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
