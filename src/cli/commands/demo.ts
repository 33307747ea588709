/** `godwit demo`: the main job. For now the checkpoint/restore demo. */
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import { runCheckpointDemo, type CheckpointDemoReport } from '../../demo/checkpoint-demo.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatBytes, formatMs, table } from '../format.js';

/** Registers `demo`. */
export function registerDemoCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('demo')
    .description(
      'checkpoint a container that counts in memory, restore it under a new name, show the count continued',
    )
    .option('--memory-mib <n>', 'also run the demo with a container holding N MiB of written memory', '0')
    .option('--json', 'print the report as JSON')
    .action(async (o: { memoryMib: string; json?: boolean }) => {
      const mib = Number(o.memoryMib);
      if (!Number.isInteger(mib) || mib < 0 || mib > 16384) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `--memory-mib ${o.memoryMib}: expected 0..16384`,
        );
      }
      const { runtime } = await ctx().services();
      const onStep = o.json ? undefined : (line: string) => console.log(line);
      const reports: CheckpointDemoReport[] = [await runCheckpointDemo(runtime, { onStep })];
      if (mib > 0) reports.push(await runCheckpointDemo(runtime, { onStep, memoryMiB: mib }));
      const ok = reports.every((r) => r.continued);
      emit(
        Boolean(o.json),
        () =>
          '\n' +
          table(
            [
              'WORKLOAD',
              'MEMORY',
              'AT CHECKPOINT',
              'AFTER RESTORE',
              'CHECKPOINT',
              'IMAGE',
              'RESTORE',
              'VERDICT',
            ],
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
    });
}
