/** Machine commands: `doctor` and `setup`. */
import type { Command } from 'commander';
import { formatDoctor, runDoctor } from '../../system/doctor.js';
import { runSetup } from '../../system/setup.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatMs, table } from '../format.js';

/** Registers `doctor` and `setup`. */
export function registerSystemCommands(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('doctor')
    .description('check that this machine can run godwit; exits 0 only when every required item is ok')
    .option('--json', 'print the report as one JSON document')
    .action(async (o: { json?: boolean }) => {
      const report = await runDoctor({ toolsDir: ctx().options.toolsDir });
      emit(
        Boolean(o.json),
        () => formatDoctor(report),
        () => report,
      );
      if (!report.ok) setExit(ExitCode.Negative);
    });

  program
    .command('setup')
    .description('install what godwit needs: Debian packages, CRIU >= 4.2, native helpers (idempotent)')
    .option(
      '--mirror <url>',
      'Debian mirror for provisioning CRIU (default: the one apt uses; env GODWIT_DEBIAN_MIRROR)',
    )
    .option('--json', 'print the step report as JSON (progress still goes to stderr)')
    .action(async (o: { mirror?: string; json?: boolean }) => {
      const log = (line: string): void => {
        (o.json ? process.stderr : process.stdout).write(line.endsWith('\n') ? line : line + '\n');
      };
      const report = await runSetup({ toolsDir: ctx().options.toolsDir, mirror: o.mirror, log });
      emit(
        Boolean(o.json),
        () =>
          table(
            ['STEP', 'STATUS', 'TIME', 'DETAIL'],
            report.steps.map((s) => [s.step, s.status, formatMs(s.durationMs), s.detail]),
          ),
        () => report,
      );
    });
}
