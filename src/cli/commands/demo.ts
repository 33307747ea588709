/**
 * `godwit demo`: the main job. By default the live-migration demo on a testbed (cold
 * migration of the counter service while a client probes it); `--local` runs the
 * checkpoint/restore demo on this host instead.
 */
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import { runCheckpointDemo, type CheckpointDemoReport } from '../../demo/checkpoint-demo.js';
import { runMigrationDemo, type DemoMove, type MigrationDemoReport } from '../../demo/migration-demo.js';
import { formatMigrationReport } from '../../migration/format.js';
import { projectRoot } from '../../system/tools.js';
import { parseLinkSpec } from '../../testbed/profiles.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatBytes, formatMs, table } from '../format.js';
import { join } from 'node:path';

/** Registers `demo`. */
export function registerDemoCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('demo')
    .description(
      'migrate a stateful service between two testbed hosts, cold there and pre-copy back, while a client ' +
        'probes it, and show both side by side (--local: checkpoint/restore on this host)',
    )
    .option('--link <profile>', 'link between the hosts: lan, edge, 4g, wan or RATE,DELAY[,LOSS]', 'edge')
    .option(
      '--memory-mib <n>',
      'the service holds N MiB of written memory (godwit-memload); 0: the counter service',
      '256',
    )
    .option('--dirty <MBps>', 'memload rewrites this many MB/s of its hot set', '2')
    .option('--local', 'run the local checkpoint/restore demo instead')
    .option('--json', 'print the report as JSON')
    .action(
      async (o: { link: string; memoryMib: string; dirty: string; local?: boolean; json?: boolean }) => {
        const mib = Number(o.memoryMib);
        const dirty = Number(o.dirty);
        if (!Number.isFinite(dirty) || dirty < 0 || dirty > 10_000) {
          throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--dirty ${o.dirty}: expected 0..10000 MB/s`);
        }
        if (!Number.isInteger(mib) || mib < 0 || mib > 16384) {
          throw new InvalidArgumentError(
            ErrorCode.InvalidFlag,
            `--memory-mib ${o.memoryMib}: expected 0..16384`,
          );
        }
        const onStep = o.json ? undefined : (line: string) => console.log(line);
        if (o.local) {
          await localDemo(ctx, mib, Boolean(o.json), onStep, setExit);
          return;
        }
        await ctx().localHost(); // fails early with "run godwit setup" when tools are missing
        const report = await runMigrationDemo({
          godwitBin: join(projectRoot(), 'bin', 'godwit.js'),
          link: parseLinkSpec(o.link),
          memoryMiB: mib,
          dirtyMBps: dirty,
          ...(onStep ? { onStep } : {}),
        });
        emit(
          Boolean(o.json),
          () => formatDemo(report),
          () => report,
        );
        if (!report.ok) setExit(ExitCode.Negative);
      },
    );
}

/** The four moves side by side, then each report in full. */
function formatDemo(r: MigrationDemoReport): string {
  const order = ['cold', 'precopy', 'postcopy', 'hybrid'] as const;
  const titles = { cold: 'COLD', precopy: 'PRE-COPY', postcopy: 'POST-COPY', hybrid: 'HYBRID' };
  const col = (m: DemoMove): string[] => {
    const l = m.migration.lazy;
    return [
      `${m.migration.from} → ${m.migration.to}`,
      m.migration.outcome,
      formatMs(m.probe.longLived.maxGapMs),
      formatMs(m.probe.fresh.maxGapMs),
      m.migration.downtimeMs === undefined ? '-' : formatMs(m.migration.downtimeMs),
      m.migration.totalMs === undefined ? '-' : formatMs(m.migration.totalMs),
      formatBytes(m.migration.bytes.wire),
      String(m.migration.rounds.length),
      l?.degradationWindowMs === undefined ? '-' : formatMs(l.degradationWindowMs),
      l ? `${l.pagesOnDemand} / ${l.pagesRemote}` : '-',
      l ? `${formatMs(l.faultWaitMs.p50)} / ${formatMs(l.faultWaitMs.p99)}` : '-',
      m.memoryVerified === undefined ? '-' : m.memoryVerified ? 'exact' : 'CORRUPT',
    ];
  };
  const labels = [
    'move',
    'outcome',
    'client downtime (kept connection)',
    'client downtime (new connections)',
    'runtime downtime',
    'total time',
    'bytes on the wire',
    'pre-copy rounds',
    'degraded after restore',
    'pages fetched on faults / left on source',
    'fault wait p50 / p99',
    'memory after the move',
  ];
  const cols = order.map((k) => col(r.moves[k]));
  return [
    '',
    `== cold, pre-copy, post-copy and hybrid on the ${r.link.name} link, service holding ${r.memoryMiB} MiB ==`,
    table(
      ['', ...order.map((k) => titles[k])],
      labels.map((l, i) => [l, ...cols.map((c) => c[i] ?? '')]),
    ),
    ...order.flatMap((k) => ['', `== ${k}: what godwit did ==`, formatMigrationReport(r.moves[k].migration)]),
    '',
    r.ok
      ? `Every move kept the service's state: the counter never went back${r.memoryMiB > 0 ? ' and memload found its memory exact after each' : ''}.`
      : 'FAILED: the service did not come back with its state.',
  ].join('\n');
}

async function localDemo(
  ctx: () => CliContext,
  mib: number,
  json: boolean,
  onStep: ((line: string) => void) | undefined,
  setExit: (code: number) => void,
): Promise<void> {
  const { runtime } = await ctx().services();
  const reports: CheckpointDemoReport[] = [
    await runCheckpointDemo(runtime, { ...(onStep ? { onStep } : {}) }),
  ];
  if (mib > 0)
    reports.push(await runCheckpointDemo(runtime, { ...(onStep ? { onStep } : {}), memoryMiB: mib }));
  const ok = reports.every((r) => r.continued);
  emit(
    json,
    () =>
      '\n' +
      table(
        ['WORKLOAD', 'MEMORY', 'AT CHECKPOINT', 'AFTER RESTORE', 'CHECKPOINT', 'IMAGE', 'RESTORE', 'VERDICT'],
        reports.map((r) => [
          r.workload,
          r.memoryMiB > 0 ? `${r.memoryMiB} MiB` : '-',
          String(r.counterAtCheckpoint),
          String(r.firstCounterAfterRestore),
          formatMs(r.checkpointMs),
          formatBytes(r.imageBytes),
          formatMs(r.restoreMs),
          r.continued ? 'continued' : 'DID NOT CONTINUE',
        ]),
      ) +
      (ok
        ? '\n\nThe restored process continued counting from its checkpointed memory.'
        : '\n\nFAILED: a counter did not continue.'),
    () => ({ ok, runs: reports }),
  );
  if (!ok) setExit(ExitCode.Negative);
}
