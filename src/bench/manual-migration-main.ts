/**
 * `npm run bench:manual -- [--reps 5] [--link lan] [--out FILE]`: brings up a 2-host testbed
 * with a client, runs the counter service, and migrates it by hand (checkpoint through the
 * source agent, file copy, restore through the destination agent) back and forth N times
 * while the client probes it. Prints and writes the client-perceived downtime per repetition
 * and the median, min and max.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AgentClient } from '../agent/client.js';
import { formatMs, table } from '../cli/format.js';
import { projectRoot } from '../system/tools.js';
import { parseLinkSpec } from '../testbed/profiles.js';
import { pairTestbedUp, testbedDown } from '../testbed/testbed.js';
import { counterdServiceArgs } from '../demo/memload.js';
import { summarize } from './checkpoint-restore.js';
import { migrateByHand, probeInNetns, type ManualMigrationReport } from './manual-migration.js';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    link: { type: 'string', default: 'lan' },
    out: { type: 'string' },
  },
});
const reps = Number(values.reps);
const link = parseLinkSpec(values.link ?? 'lan');
const name = `gwb${process.pid % 100000}`;
const dir = await mkdtemp(join(tmpdir(), 'godwit-bench-manual-'));
const bin = resolve(projectRoot(), 'bin/godwit.js');
const log = (l: string): void => void process.stderr.write(l + '\n');
try {
  const tb = await pairTestbedUp({ name, link, godwitBin: bin, dir, log });
  const hosts = tb.hosts.map((h) => ({ host: h, runtime: new AgentClient({ socketPath: h.socket }) }));
  const info = await hosts[0]!.runtime.run({
    name: 'web',
    image: 'busybox',
    args: counterdServiceArgs(),
    env: {},
  });
  const target = `${info.network!.ip}:8080`;
  const rows: {
    migration: ManualMigrationReport;
    longLivedGapMs: number;
    freshGapMs: number;
    survived: boolean;
    counterResets: number;
  }[] = [];
  for (let i = 0; i < reps; i++) {
    const from = hosts[i % 2]!;
    const to = hosts[(i + 1) % 2]!;
    const probe = probeInNetns({ bin, netns: tb.clientNetns, target, durationMs: 4000 });
    probe.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1200));
    const migration = await migrateByHand({ name: 'web', from, to });
    const report = await probe;
    const row = {
      migration,
      longLivedGapMs: report.longLived.maxGapMs,
      freshGapMs: report.fresh.maxGapMs,
      survived: report.longLived.survived,
      counterResets: report.longLived.counterResets + report.fresh.counterResets,
    };
    rows.push(row);
    log(
      `#${i + 1} ${from.host.name}→${to.host.name}: frozen ${formatMs(migration.frozenMs)}, client gap ${formatMs(row.longLivedGapMs)} (long-lived), ${formatMs(row.freshGapMs)} (fresh), survived ${row.survived}`,
    );
  }
  for (const h of hosts) h.runtime.close();
  const summary = {
    link,
    reps,
    frozenMs: summarize(rows.map((r) => r.migration.frozenMs)),
    checkpointMs: summarize(rows.map((r) => r.migration.checkpointMs)),
    restoreMs: summarize(rows.map((r) => r.migration.restoreMs)),
    longLivedGapMs: summarize(rows.map((r) => r.longLivedGapMs)),
    freshGapMs: summarize(rows.map((r) => r.freshGapMs)),
    allSurvived: rows.every((r) => r.survived),
    counterResets: rows.reduce((a, r) => a + r.counterResets, 0),
  };
  if (values.out) await writeFile(values.out, JSON.stringify({ summary, rows }, null, 2) + '\n');
  const f = (s: { median: number; min: number; max: number }): string =>
    `${formatMs(s.median)} (${formatMs(s.min)}-${formatMs(s.max)})`;
  console.log(
    table(
      ['METRIC', `MEDIAN OF ${reps} (MIN-MAX)`],
      [
        ['checkpoint', f(summary.checkpointMs)],
        ['restore', f(summary.restoreMs)],
        ['frozen (checkpoint start → restored)', f(summary.frozenMs)],
        ['client gap, long-lived connection', f(summary.longLivedGapMs)],
        ['client gap, fresh connections', f(summary.freshGapMs)],
        ['long-lived connection survived', summary.allSurvived ? `all ${reps}` : 'NOT ALL'],
        ['counter resets', String(summary.counterResets)],
      ],
    ),
  );
} finally {
  await testbedDown({ name, dir }).catch((e: unknown) => log(`testbed down failed: ${String(e)}`));
  await rm(dir, { recursive: true, force: true });
}
