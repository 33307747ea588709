/** `godwit probe`: measures the service interruption an HTTP or Redis client sees (fresh and long-lived connections). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ErrorCode, InvalidArgumentError, NotFoundError } from '../../core/errors.js';
import {
  describeTarget,
  PROBE_ERROR_KINDS,
  runProbe,
  type LongLivedReport,
  type ProbeProgress,
  type ProbeReport,
  type SeriesReport,
} from '../../probe/index.js';
import { runCommand } from '../../system/exec.js';
import { projectRoot } from '../../system/tools.js';
import type { CliContext } from '../context.js';
import { emit } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatMs } from '../format.js';

interface ProbeFlags {
  interval: string;
  duration: string;
  timeout: string;
  netns?: string;
  json?: boolean;
  ready?: boolean;
}

/** Registers `probe`. Exit status: 0 when the verdict is ok, 1 when it found a problem. */
export function registerProbeCommand(
  program: Command,
  ctx: () => CliContext,
  setExit: (code: number) => void,
): void {
  program
    .command('probe')
    .description(
      'probe an HTTP service (or Redis, with INCR, for redis:// targets) with a new connection per request and ' +
        'one long-lived keep-alive connection; ' +
        'report the longest gap between replies, latency, counter continuity and whether the connection survived ' +
        '(exit 1 when a series got no reply, a counter went back, or the long-lived connection broke)',
    )
    .argument('<target>', 'host:port, http://host:port/path or redis://host:port')
    .option('--interval <duration>', 'time between two requests of each series (ms or s suffix)', '5ms')
    .option(
      '--duration <duration>',
      'how long to probe (ms or s suffix); Ctrl-C or SIGTERM ends it early',
      '10s',
    )
    .option('--timeout <duration>', 'per-request timeout (ms or s suffix)', '1s')
    .option('--netns <name>', 'run the probe inside this network namespace (ip netns exec)')
    .option('--json', 'print the report as one JSON document')
    .option(
      '--ready',
      'print a line `ready` on stderr once both series have had a reply (for scripts that start their work then)',
    )
    .action(async (target: string, o: ProbeFlags) => {
      const intervalMs = parseDuration(o.interval, '--interval', { allowZero: true });
      const durationMs = parseDuration(o.duration, '--duration');
      const timeoutMs = parseDuration(o.timeout, '--timeout');
      if (o.netns !== undefined) {
        setExit(await probeInNetns(o.netns, target, o, ctx().options.debug));
        return;
      }
      const progress = process.stderr.isTTY ? new ProgressLine() : undefined;
      // Ctrl-C or SIGTERM ends the run early; the report covers the time until then.
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let report: ProbeReport;
      let saidReady = false;
      try {
        report = await runProbe({
          target,
          intervalMs,
          durationMs,
          timeoutMs,
          signal: stop.signal,
          ...(o.ready ? { tickMs: 20 } : {}),
          onTick: (p) => {
            progress?.show(p);
            if (o.ready && !saidReady && p.fresh.ok > 0 && p.longLived.ok > 0) {
              saidReady = true;
              progress?.clear();
              process.stderr.write('ready\n');
            }
          },
        });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        progress?.clear();
      }
      emit(
        Boolean(o.json),
        () => formatProbeReport(report),
        () => report,
      );
      if (!report.verdict.ok) setExit(ExitCode.Negative);
    });
}

/**
 * Parses a duration written as `250ms`, `1.5s` or `0s` into ms. A bare number is refused (is it ms or s?).
 * Throws InvalidFlag naming `flag`.
 */
export function parseDuration(text: string, flag: string, opts: { allowZero?: boolean } = {}): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$/.exec(text);
  const value = m ? Number(m[1]) * (m[2] === 's' ? 1000 : 1) : Number.NaN;
  if (!Number.isFinite(value) || value > 24 * 3600 * 1000 || (value === 0 && !opts.allowZero)) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `${flag} ${text}: not a duration`, {
      hint: 'write it with a unit, e.g. 5ms, 300ms or 10s',
    });
  }
  return value;
}

/** Re-runs this probe as `ip netns exec NS node bin/godwit.js probe …`, output passed through; returns its exit code. */
async function probeInNetns(netns: string, target: string, o: ProbeFlags, debug: boolean): Promise<number> {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(netns) || netns === '.' || netns === '..') {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, `--netns ${netns}: not a namespace name`);
  }
  if (!existsSync(join('/run/netns', netns))) {
    throw new NotFoundError(ErrorCode.NetnsNotFound, `no network namespace named ${netns}`, {
      hint: 'ip netns list shows the named network namespaces',
    });
  }
  const args = [
    'netns',
    'exec',
    netns,
    process.execPath,
    join(projectRoot(), 'bin', 'godwit.js'),
    ...(debug ? ['--debug'] : []),
    'probe',
    target,
    '--interval',
    o.interval,
    '--duration',
    o.duration,
    '--timeout',
    o.timeout,
    ...(o.json ? ['--json'] : []),
    ...(o.ready ? ['--ready'] : []),
  ];
  const res = await runCommand('ip', args, { inherit: true });
  return res.code;
}

/** The human report: a short block per series, then the verdict line. */
export function formatProbeReport(r: ProbeReport): string {
  const lines = [
    `probe ${describeTarget(r.target)} for ${seconds(r.durationMs)}: a request every ${r.intervalMs} ms ` +
      `per series, timeout ${r.timeoutMs} ms`,
    '',
    'fresh connections (one per request)',
    ...seriesLines(r.fresh),
    '',
    'long-lived connection (keep-alive)',
    ...seriesLines(r.longLived),
    `  connection ${connectionLine(r.longLived)}`,
    '',
    verdictLine(r),
  ];
  return lines.join('\n');
}

function seriesLines(s: SeriesReport | LongLivedReport): string[] {
  const errorCount = PROBE_ERROR_KINDS.reduce((n, k) => n + s.errors[k], 0);
  const byKind = PROBE_ERROR_KINDS.filter((k) => s.errors[k] > 0)
    .map((k) => `${s.errors[k]} ${k}`)
    .join(', ');
  const late =
    'lateReplies' in s && s.lateReplies > 0
      ? `; ${s.lateReplies} late repl${s.lateReplies === 1 ? 'y' : 'ies'}`
      : '';
  const rows: [string, string][] = [
    [
      'requests',
      `${s.requests}: ${s.ok} ok, ${errorCount} error${errorCount === 1 ? '' : 's'}${byKind ? ` (${byKind})` : ''}${late}`,
    ],
    ['max gap', `${formatMs(s.maxGapMs)}, from ${seconds(s.gapStartMs)} to ${seconds(s.gapEndMs)}`],
    [
      'latency',
      s.latencyMs === null
        ? 'no successful request'
        : `p50 ${formatMs(s.latencyMs.p50)}, p90 ${formatMs(s.latencyMs.p90)}, p99 ${formatMs(s.latencyMs.p99)}, ` +
          `max ${formatMs(s.latencyMs.max)}`,
    ],
    [
      'counter',
      s.counterFirst === null
        ? 'none seen'
        : `${s.counterFirst} → ${s.counterLast}, ${s.counterResets === 0 ? 'continued' : `went back ${s.counterResets}×`}`,
    ],
  ];
  const first = s.firstErrors[0];
  if (first !== undefined)
    rows.push(['first error', `at ${seconds(first.atMs)}: ${first.kind}: ${first.message}`]);
  return rows.map(([k, v]) => `  ${k.padEnd(11)} ${v}`);
}

function connectionLine(l: LongLivedReport): string {
  if (l.survived) return 'survived';
  const b = l.breaks[0];
  const how =
    b === undefined
      ? 'could not be opened at the first try'
      : `broke at ${seconds(b.atMs)} (${b.kind}: ${b.message})`;
  const more = l.breaks.length > 1 ? `, ${l.breaks.length} breaks in all` : '';
  return `${how}${more}; ${l.reconnects} reconnect${l.reconnects === 1 ? '' : 's'}`;
}

function verdictLine(r: ProbeReport): string {
  if (r.verdict.ok) {
    const gap = Math.max(r.fresh.maxGapMs, r.longLived.maxGapMs);
    const counters =
      r.fresh.counterFirst === null && r.longLived.counterFirst === null
        ? 'no counters seen'
        : 'counters continued';
    return `verdict: ok: max gap ${formatMs(gap)}, ${counters}, the long-lived connection survived`;
  }
  return `verdict: ${r.verdict.problems.join('; ')}`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(3)} s`;
}

/** One line of live progress on stderr (a TTY), rewritten in place. */
class ProgressLine {
  private shown = false;

  show(p: ProbeProgress): void {
    const series = (name: string, s: ProbeProgress['fresh']): string =>
      `${name} ${s.requests} req, ${s.errors} err, gap ${formatMs(s.currentGapMs)} (max ${formatMs(s.maxGapMs)})`;
    const line =
      `probe ${seconds(p.elapsedMs)} · ${series('fresh', p.fresh)} · ${series('long-lived', p.longLived)}` +
      (p.longLived.breaks > 0 ? ` · ${p.longLived.breaks} break${p.longLived.breaks === 1 ? '' : 's'}` : '');
    const width = process.stderr.columns ?? 120;
    process.stderr.write(`\r\x1b[2K${line.length > width - 1 ? line.slice(0, width - 2) + '…' : line}`);
    this.shown = true;
  }

  clear(): void {
    if (this.shown) process.stderr.write('\r\x1b[2K');
    this.shown = false;
  }
}
