/**
 * `godwit bench`: the benchmark suite. Measures godwit's strategies and the baselines (the tools
 * people use today) across workloads and links on testbeds, in one run, and writes results.json,
 * report.md and charts (SVG, PNG) to a directory.
 */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, InvalidArgumentError } from '../../core/errors.js';
import {
  BENCH_KINDS,
  DEFAULT_REPS,
  MATRIX_NAMES,
  filterMatrix,
  namedMatrix,
  planRuns,
  type MatrixName,
} from '../../bench/matrix.js';
import { KIND_TITLES, downtimeOf, fmtMs, fmtStat, writeReport } from '../../bench/report.js';
import { validateResults, type BenchResults } from '../../bench/results.js';
import { runBench } from '../../bench/suite.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatBytes, table } from '../format.js';

interface BenchFlags {
  matrix: string;
  reps: string;
  out?: string;
  links?: string;
  workloads?: string;
  kinds?: string;
  reportOnly?: boolean;
  list?: boolean;
  json?: boolean;
}

const list = (v: string | undefined): string[] | undefined =>
  v === undefined
    ? undefined
    : v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);

/** Registers `bench`. */
export function registerBenchCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('bench')
    .description(
      'measure every migration strategy and the baselines (by hand with runc + tar/zstd, CRIU page server, ' +
        'Podman) across workloads and links on testbeds; write results.json, report.md and charts',
    )
    .option('--matrix <name>', `which matrix: ${MATRIX_NAMES.join(' (≤ 10 min) | ')} (≤ 60 min)`, 'quick')
    .option('--reps <n>', 'repetitions of every measurement (medians need ≥ 3)', String(DEFAULT_REPS))
    .option('--out <dir>', 'output directory (default bench-results/<matrix>-<time>)')
    .option('--links <list>', 'only these links of the matrix (comma-separated: lan,edge,4g)')
    .option('--workloads <list>', 'only these workloads of the matrix (comma-separated ids)')
    .option('--kinds <list>', `only these kinds (comma-separated: ${BENCH_KINDS.join(', ')})`)
    .option('--list', 'print the runs the matrix would make, and exit')
    .option('--report-only', "rewrite report.md and the charts from --out's results.json, without measuring")
    .option('--json', 'print the summary as JSON at the end')
    .addHelpText(
      'after',
      '\nCtrl-C stops after the run in progress and writes the report of the runs made; Ctrl-C again stops at once.' +
        '\nExit status: 0 when every run committed with its state kept, 1 otherwise.',
    )
    .action(async (o: BenchFlags) => {
      if (o.reportOnly) {
        if (!o.out) throw new InvalidArgumentError(ErrorCode.InvalidFlag, '--report-only needs --out DIR');
        const dir = resolve(o.out);
        const doc = JSON.parse(await readFile(join(dir, 'results.json'), 'utf8')) as BenchResults;
        const problems = validateResults(doc);
        if (problems.length) {
          throw new InvalidArgumentError(
            ErrorCode.InvalidFlag,
            `${join(dir, 'results.json')} is not a godwit bench result`,
            {
              details: problems.slice(0, 5),
            },
          );
        }
        const files = await writeReport(dir, doc);
        emit(
          Boolean(o.json),
          () => `wrote ${files.map((f) => join(dir, f)).join(', ')}`,
          () => ({ dir, files }),
        );
        return;
      }
      if (!(MATRIX_NAMES as readonly string[]).includes(o.matrix)) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `--matrix ${o.matrix}: expected ${MATRIX_NAMES.join(' or ')}`,
        );
      }
      const reps = Number(o.reps);
      if (!Number.isInteger(reps) || reps < 1 || reps > 100) {
        throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--reps ${o.reps}: expected 1..100`);
      }
      const matrix = filterMatrix(namedMatrix(o.matrix as MatrixName, reps), {
        ...(o.links ? { links: list(o.links) } : {}),
        ...(o.workloads ? { workloads: list(o.workloads) } : {}),
        ...(o.kinds ? { kinds: list(o.kinds) } : {}),
      });
      if (o.list) {
        const plan = planRuns(matrix);
        emit(
          Boolean(o.json),
          () =>
            table(
              ['#', 'LINK', 'WORKLOAD', 'KIND', 'REP'],
              plan.map((p, i) => [
                String(i + 1),
                p.cell.link.name,
                p.cell.workload.id,
                p.kind,
                String(p.rep),
              ]),
            ),
          () =>
            plan.map((p) => ({
              link: p.cell.link.name,
              workload: p.cell.workload.id,
              kind: p.kind,
              rep: p.rep,
            })),
        );
        return;
      }
      await ctx().localHost(); // fails early with "run godwit setup" when tools are missing
      const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
      const outDir = resolve(o.out ?? join('bench-results', `${matrix.name}-${stamp}`));
      const stop = new AbortController();
      let interrupts = 0;
      const onSigint = (): void => {
        interrupts++;
        if (interrupts === 1) {
          process.stderr.write(
            '\ngodwit bench: stopping after the run in progress (Ctrl-C again to stop at once)\n',
          );
          stop.abort();
        } else {
          process.stderr.write(
            `\ngodwit bench: stopped; the runs made so far are in ${join(outDir, 'results.json')}\n`,
          );
          process.exit(130);
        }
      };
      process.on('SIGINT', onSigint);
      process.on('SIGTERM', onSigint);
      try {
        if (reps < 3)
          process.stderr.write(`godwit bench: --reps ${reps}: medians of fewer than 3 runs are not robust\n`);
        process.stderr.write(`godwit bench: ${matrix.name} matrix → ${outDir}\n`);
        const { results, files } = await runBench({
          matrix,
          outDir,
          command: ['godwit', ...process.argv.slice(2)].join(' '),
          ...(o.json ? {} : { onProgress: (l: string) => process.stderr.write(`${l}\n`) }),
          signal: stop.signal,
        });
        emit(
          Boolean(o.json),
          () => formatSummary(results, outDir, files),
          () => ({
            outDir,
            files,
            interrupted: results.interrupted,
            unavailable: results.unavailable,
            summary: results.summary,
          }),
        );
        const good = results.runs.every((r) => r.outcome === 'committed' && r.stateKept !== false);
        if (!good || results.interrupted) setExit(ExitCode.Negative);
      } finally {
        process.off('SIGINT', onSigint);
        process.off('SIGTERM', onSigint);
      }
    });
}

/** The headline table on the terminal: every cell's kinds with downtime, total and bytes. */
function formatSummary(r: BenchResults, dir: string, files: readonly string[]): string {
  const rows = r.summary.map((s) => [
    s.link,
    s.workload,
    KIND_TITLES[s.kind],
    fmtStat(downtimeOf(s), fmtMs) + (s.clientDowntimeMs ? '' : s.downtimeMs ? ' (runtime)' : ''),
    fmtStat(s.totalMs, fmtMs),
    s.wireBytes ? formatBytes(Math.round(s.wireBytes.median)) : '-',
    `${s.stateKept}/${s.runs}`,
  ]);
  return [
    '',
    table(['LINK', 'WORKLOAD', 'KIND', 'DOWNTIME', 'TOTAL', 'WIRE', 'STATE KEPT'], rows),
    ...r.unavailable.map((u) => `not measured: ${u.kind}: ${u.reason}`),
    r.interrupted ? 'stopped early: the report covers the runs made' : '',
    `wrote ${files.length} files to ${dir}: ${files.join(', ')}`,
  ]
    .filter(Boolean)
    .join('\n');
}
