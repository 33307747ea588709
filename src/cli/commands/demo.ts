/**
 * `godwit demo`: the main job. By default the live-migration demo on a testbed (cold
 * migration of the counter service while a client probes it); `--local` runs the
 * checkpoint/restore demo on this host instead.
 */
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import { runCheckpointDemo, type CheckpointDemoReport } from '../../demo/checkpoint-demo.js';
import { runMigrationDemo } from '../../demo/migration-demo.js';
import { formatMigrationReport } from '../../migration/format.js';
import { formatProbeReport } from './probe.js';
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
      'migrate the counter service between two testbed hosts while a client probes it, and show both sides ' +
        '(--local: checkpoint/restore on this host)',
    )
    .option('--link <profile>', 'link between the hosts: lan, edge, 4g, wan or RATE,DELAY[,LOSS]', 'edge')
    .option('--memory-mib <n>', 'the service holds N MiB of written memory (godwit-memload)', '0')
    .option('--local', 'run the local checkpoint/restore demo instead')
    .option('--json', 'print the report as JSON')
    .action(async (o: { link: string; memoryMib: string; local?: boolean; json?: boolean }) => {
      const mib = Number(o.memoryMib);
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
        ...(onStep ? { onStep } : {}),
      });
      emit(
        Boolean(o.json),
        () =>
          [
            '',
            '== what godwit did ==',
            formatMigrationReport(report.migration),
            '',
            `== what the client saw (probe of ${report.target} from the client namespace) ==`,
            formatProbeReport(report.probe),
            '',
            report.ok
              ? `The service moved to ${report.migration.to}: runtime downtime ${formatMs(report.migration.downtimeMs ?? 0)}, ` +
                `longest gap seen by the client ${formatMs(report.probe.longLived.maxGapMs)} (kept connection) / ` +
                `${formatMs(report.probe.fresh.maxGapMs)} (new connections); its counter continued.`
              : 'FAILED: the service did not come back with its state.',
          ].join('\n'),
        () => report,
      );
      if (!report.ok) setExit(ExitCode.Negative);
    });
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
