/**
 * Turns a benchmark's results into what people read: report.md (tables of median, min and max
 * per link and workload, the model's prediction under each pre-copy row, the winners per link,
 * godwit against the baselines) and the charts (SVG, and PNG rendered from it). Building the
 * text and the chart specs is pure; `writeReport` does the file I/O.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MigrationReport } from '../core/migration.js';
import { formatBytes } from '../cli/format.js';
import { barChart, lineChart, svgToPng, timelineChart } from './charts.js';
import { BASELINE_KINDS, isBaseline, type BenchKind, type WorkloadSpec } from './matrix.js';
import type { BenchResults, BenchRun, CellSummary, Stat } from './results.js';

/** How each kind is named in tables and legends. */
export const KIND_TITLES: Readonly<Record<BenchKind, string>> = {
  cold: 'godwit cold',
  precopy: 'godwit pre-copy',
  'precopy-predict': 'godwit pre-copy + prediction',
  postcopy: 'godwit post-copy',
  hybrid: 'godwit hybrid',
  byhand: 'by hand (runc + tar/zstd + TCP)',
  'criu-page-server': 'CRIU page server',
  podman: 'Podman checkpoint/restore',
};

/** ms as people read it: `374 ms`, `4.79 s`. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

const fmtBytes = (b: number): string => (Number.isFinite(b) ? formatBytes(Math.round(b)) : '-');

/** `median (min–max)`, or `-`. */
export function fmtStat(s: Stat | undefined, f: (v: number) => string): string {
  if (!s) return '-';
  const [lo, hi] = [f(s.min), f(s.max)];
  return lo === hi ? f(s.median) : `${f(s.median)} (${lo}–${hi})`;
}

/** The downtime a row is judged by: what the client saw, else (no service to probe) the runtime's. */
export function downtimeOf(s: CellSummary): Stat | undefined {
  return s.clientDowntimeMs ?? s.downtimeMs;
}

/** The kind with the lowest median of `f` among `rows` (ties: the first), or undefined. */
export function winner(
  rows: readonly CellSummary[],
  f: (s: CellSummary) => Stat | undefined,
): CellSummary | undefined {
  let best: CellSummary | undefined;
  for (const r of rows) {
    const v = f(r)?.median;
    if (v === undefined || r.committed === 0) continue;
    const b = best ? f(best)?.median : undefined;
    if (b === undefined || v < b) best = r;
  }
  return best;
}

/** One markdown table row. */
const mdRow = (cells: readonly string[]): string =>
  `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
const mdTable = (header: readonly string[], rows: readonly (readonly string[])[]): string =>
  [mdRow(header), mdRow(header.map(() => '---')), ...rows.map(mdRow)].join('\n');

/** The table of one cell: every kind's figures, the model's prediction under each pre-copy row. */
export function cellTable(rows: readonly CellSummary[]): string {
  const body: string[][] = [];
  for (const s of rows) {
    body.push([
      KIND_TITLES[s.kind],
      fmtStat(s.clientDowntimeMs, fmtMs),
      fmtStat(s.downtimeMs, fmtMs),
      fmtStat(s.totalMs, fmtMs),
      fmtStat(s.wireBytes, fmtBytes),
      s.wireOverResident ? s.wireOverResident.median.toFixed(2) : '-',
      s.rounds ? String(s.rounds.median) : '-',
      fmtStat(s.degradationWindowMs, fmtMs),
      `${s.stateKept}/${s.runs}`,
    ]);
    if (s.model) {
      body.push([
        '  ↳ model',
        '',
        fmtMs(s.model.downtimeMs),
        fmtMs(s.model.totalMs),
        fmtBytes(s.model.wireBytes),
        s.model.inputs.residentBytes > 0
          ? (s.model.wireBytes / s.model.inputs.residentBytes).toFixed(2)
          : '-',
        `${s.model.rounds} (${s.model.stopReason})`,
        '',
        '',
      ]);
    }
  }
  return mdTable(
    [
      'kind',
      'client downtime',
      'runtime downtime',
      'total time',
      'on the wire',
      'wire / resident',
      'rounds',
      'degraded after',
      'state kept',
    ],
    body,
  );
}

/** Per link: which kind wins on downtime, total time and bytes, in each of the link's cells. */
export function winnersTable(r: BenchResults): string {
  const rows: string[][] = [];
  for (const c of r.matrix.cells) {
    const inCell = r.summary.filter((s) => s.link === c.link.name && s.workload === c.workload.id);
    const name = (
      s: CellSummary | undefined,
      f: (s: CellSummary) => Stat | undefined,
      fmt: (n: number) => string,
    ): string => (s ? `${KIND_TITLES[s.kind]} (${fmt(f(s)?.median ?? Number.NaN)})` : '-');
    const d = winner(inCell, downtimeOf);
    const t = winner(inCell, (s) => s.totalMs);
    const b = winner(inCell, (s) => s.wireBytes);
    rows.push([
      c.link.name,
      c.workload.id,
      name(d, downtimeOf, fmtMs),
      name(t, (s) => s.totalMs, fmtMs),
      name(b, (s) => s.wireBytes, fmtBytes),
    ]);
  }
  return mdTable(['link', 'workload', 'lowest downtime', 'lowest total time', 'fewest bytes'], rows);
}

/**
 * godwit against the baselines, per cell: godwit's lowest median downtime, total time and bytes
 * over each baseline's (below 1: godwit is better).
 */
export function ratiosTable(r: BenchResults): string {
  const baselines = BASELINE_KINDS.filter((k) => r.summary.some((s) => s.kind === k && s.committed > 0));
  if (baselines.length === 0) return '_No baseline completed a run._';
  const rows: string[][] = [];
  for (const c of r.matrix.cells) {
    const inCell = r.summary.filter((s) => s.link === c.link.name && s.workload === c.workload.id);
    const ours = inCell.filter((s) => !isBaseline(s.kind));
    const best = (f: (s: CellSummary) => Stat | undefined): CellSummary | undefined => winner(ours, f);
    for (const b of baselines) {
      const base = inCell.find((s) => s.kind === b && s.committed > 0);
      if (!base) continue;
      const ratio = (f: (s: CellSummary) => Stat | undefined): string => {
        const g = best(f);
        const x = g ? f(g)?.median : undefined;
        const y = f(base)?.median;
        return g && x !== undefined && y ? `${(x / y).toFixed(2)}× (${g.kind})` : '-';
      };
      rows.push([
        c.link.name,
        c.workload.id,
        KIND_TITLES[b],
        ratio(downtimeOf),
        ratio((s) => s.totalMs),
        ratio((s) => s.wireBytes),
      ]);
    }
  }
  return mdTable(['link', 'workload', 'against', 'downtime', 'total time', 'bytes on the wire'], rows);
}

/** The files of the charts, by purpose; names relative to the output directory. */
export interface ChartFile {
  name: string;
  title: string;
  svg: string;
}

const MB = 1e6;

/**
 * The charts: client downtime against dirty rate per kind (one per link and memload pattern,
 * when the link has memload cells), bytes on the wire per kind for every cell, and the timeline
 * of one migration with its rounds (a hybrid or pre-copy run, else any godwit run).
 */
export async function buildCharts(r: BenchResults): Promise<ChartFile[]> {
  const charts: ChartFile[] = [];
  const links = [...new Set(r.matrix.cells.map((c) => c.link.name))];
  for (const link of links) {
    for (const pattern of ['hotset', 'uniform'] as const) {
      const cells = r.matrix.cells.filter(
        (c): c is { link: typeof c.link; workload: Extract<WorkloadSpec, { type: 'memload' }> } =>
          c.link.name === link && c.workload.type === 'memload' && c.workload.pattern === pattern,
      );
      if (cells.length === 0) continue;
      const series = r.matrix.kinds
        .map((kind) => ({
          name: KIND_TITLES[kind],
          points: cells
            .map((c) => {
              const s = r.summary.find(
                (x) => x.link === link && x.workload === c.workload.id && x.kind === kind,
              );
              const d = s ? downtimeOf(s) : undefined;
              return d ? { x: c.workload.dirtyMBps, y: d.median, yMin: d.min, yMax: d.max } : undefined;
            })
            .filter((p): p is { x: number; y: number; yMin: number; yMax: number } => p !== undefined)
            .sort((a, b) => a.x - b.x),
        }))
        .filter((s) => s.points.length > 0);
      const title = `Client downtime vs dirty rate, ${link} link, memload ${pattern === 'hotset' ? 'hot set' : 'uniform'}`;
      charts.push({
        name: `downtime-vs-dirty-${link}-${pattern}`,
        title,
        svg: await lineChart({
          title,
          xLabel: 'dirty rate (MB/s)',
          yLabel: 'client downtime (ms)',
          series,
          yLog: true,
        }),
      });
    }
  }
  /** A bar per kind in every cell: `of`'s median with min–max whiskers, divided by `scale`. */
  const perStrategy = async (o: {
    name: string;
    title: string;
    yLabel: string;
    of: (s: CellSummary) => Stat | undefined;
    scale: number;
    digits: number;
  }): Promise<ChartFile> => {
    const pick = (kind: BenchKind, f: (s: Stat) => number): (number | undefined)[] =>
      r.matrix.cells.map((c) => {
        const s = r.summary.find(
          (x) => x.link === c.link.name && x.workload === c.workload.id && x.kind === kind,
        );
        const v = s ? o.of(s) : undefined;
        return v ? f(v) / o.scale : undefined;
      });
    return {
      name: o.name,
      title: o.title,
      svg: await barChart({
        title: `${o.title} (median, min–max)`,
        yLabel: o.yLabel,
        groups: r.matrix.cells.map((c) => `${c.link.name}/${c.workload.id}`),
        series: r.matrix.kinds.map((kind) => ({
          name: KIND_TITLES[kind],
          values: pick(kind, (s) => s.median),
          mins: pick(kind, (s) => s.min),
          maxs: pick(kind, (s) => s.max),
        })),
        valueFormat: (v) => v.toFixed(o.digits),
      }),
    };
  };
  charts.push(
    await perStrategy({
      name: 'downtime',
      title: 'Client downtime per strategy',
      yLabel: 'downtime (s)',
      of: downtimeOf,
      scale: 1000,
      digits: 2,
    }),
    await perStrategy({
      name: 'wire-bytes',
      title: 'Bytes on the wire per strategy',
      yLabel: 'MB on the wire',
      of: (s) => s.wireBytes,
      scale: MB,
      digits: 1,
    }),
  );
  const run = timelineRun(r.runs);
  if (run) {
    const title = `One migration: ${KIND_TITLES[run.kind]}, ${run.link} link, ${run.workload} (rep ${run.rep})`;
    charts.push({ name: 'timeline', title, svg: await timelineChart({ title, ...timelineOf(run) }) });
  }
  return charts;
}

/**
 * The run the timeline shows: the first committed hybrid with rounds, else pre-copy, else any
 * godwit run; on the edge link when it has one.
 */
export function timelineRun(runs: readonly BenchRun[]): (BenchRun & { report: MigrationReport }) | undefined {
  const edge = runs.filter((x) => x.link === 'edge');
  return pickTimelineRun(edge) ?? pickTimelineRun(runs);
}

function pickTimelineRun(runs: readonly BenchRun[]): (BenchRun & { report: MigrationReport }) | undefined {
  // Runs the client watched first (the timeline then shows its outage), then the most rounds.
  const ranked = [...runs].sort(
    (a, b) => Number(b.probe !== undefined) - Number(a.probe !== undefined) || roundsOf(b) - roundsOf(a),
  );
  const godwit = ranked.filter(
    (x): x is BenchRun & { report: MigrationReport } =>
      x.outcome === 'committed' && !isBaseline(x.kind) && x.report !== undefined && 'phases' in x.report,
  );
  const withRounds = (k: BenchKind): (BenchRun & { report: MigrationReport }) | undefined =>
    godwit.find((x) => x.kind === k && x.report.rounds.length > 0);
  return withRounds('hybrid') ?? withRounds('precopy-predict') ?? withRounds('precopy') ?? godwit[0];
}

const roundsOf = (r: BenchRun): number => (r.report && 'rounds' in r.report ? r.report.rounds.length : 0);

const SOURCE_PHASES = new Set(['round', 'checkpoint', 'snapshot', 'rollback']);
/** Bookkeeping phases: drawn grey, out of the legend. */
const QUIET_PHASES = new Set(['prepare', 'cleanup']);
const LINK_PHASES = new Set(['transfer', 'fill']);

/** Lanes of one migration for timelineChart: source, link, destination, and the client's outage. */
export function timelineOf(run: BenchRun & { report: MigrationReport }): {
  lanes: { name: string; spans: { label: string; startMs: number; durationMs: number; kind?: string }[] }[];
  markers: { atMs: number; label: string }[];
} {
  const rep = run.report;
  const lanes = {
    source: [] as { label: string; startMs: number; durationMs: number; kind?: string }[],
    link: [] as { label: string; startMs: number; durationMs: number; kind?: string }[],
    destination: [] as { label: string; startMs: number; durationMs: number; kind?: string }[],
    client: [] as { label: string; startMs: number; durationMs: number; kind?: string }[],
  };
  let round = 0;
  const markers: { atMs: number; label: string }[] = [];
  for (const p of rep.phases) {
    const durationMs = p.durationMs ?? (p.endMs !== undefined ? p.endMs - p.startMs : 0);
    const closing = p.detail?.['closing'];
    const label =
      p.phase !== 'round'
        ? p.phase
        : closing !== undefined
          ? `closing ${String(closing)}`
          : `round ${round++}`;
    const lane = SOURCE_PHASES.has(p.phase) ? 'source' : LINK_PHASES.has(p.phase) ? 'link' : 'destination';
    lanes[lane].push({
      label,
      startMs: p.startMs,
      durationMs,
      ...(QUIET_PHASES.has(p.phase) ? {} : { kind: p.phase }),
    });
    if (p.phase === 'checkpoint') markers.push({ atMs: p.startMs, label: 'freeze' });
    if (p.phase === 'commit') markers.push({ atMs: p.startMs, label: 'commit' });
  }
  const probe = run.probe;
  if (probe?.probeStartedAt && probe.gapStartMs !== undefined && probe.gapEndMs !== undefined) {
    const offset = Date.parse(probe.probeStartedAt) - Date.parse(rep.startedAt);
    lanes.client.push({
      label: `no reply ${fmtMs(probe.longLivedMaxGapMs)}`,
      startMs: offset + probe.gapStartMs,
      durationMs: probe.gapEndMs - probe.gapStartMs,
      kind: 'outage',
    });
  }
  return {
    lanes: Object.entries(lanes).map(([name, spans]) => ({ name, spans })),
    markers,
  };
}

/** report.md's text; `charts` are the chart files written beside it. */
export function reportMarkdown(r: BenchResults, charts: readonly ChartFile[]): string {
  const out: string[] = [];
  out.push(`# godwit benchmark: ${r.matrix.name} matrix`);
  out.push('');
  out.push(
    `\`${r.command}\` — started ${r.startedAt}${r.finishedAt ? `, finished ${r.finishedAt}` : ''}` +
      (r.interrupted ? ' — **stopped early (Ctrl-C): only the runs made are reported**' : '') +
      '.',
  );
  out.push('');
  out.push(
    `Machine: ${r.machine.os}, kernel ${r.machine.kernel}, ${r.machine.cpus} × ${r.machine.cpuModel}, ` +
      `${fmtBytes(r.machine.memoryBytes)}. Versions: ${Object.entries(r.versions)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}.`,
  );
  out.push('');
  const links = new Map(r.matrix.cells.map((c) => [c.link.name, c.link]));
  out.push(
    'Links: ' +
      [...links.values()]
        .map(
          (l) =>
            `${l.name} (${l.rateMbit} Mbit/s, ${l.delayMs} ms each way${l.lossPct ? `, ${l.lossPct} % loss` : ''})`,
        )
        .join(', ') +
      `. Every figure is the median of ${r.matrix.reps} repetitions (min–max); godwit's strategies and the ` +
      'baselines alternate within each repetition. Client downtime is the longest gap between replies on a ' +
      "probe's long-lived connection (every 5 ms); runtime downtime is checkpoint start → running on the " +
      'destination. Every run starts a fresh service on h1 and moves it to h2 (a first trip: the destination ' +
      'holds none of its state). "model" rows: the analytic pre-copy model (src/bench/precopy-model.ts) fed ' +
      "the workload's figures, the link's rate and RTT, and cold's measured stop cost.",
  );
  out.push('');
  if (r.unavailable.length) {
    out.push('Not measured on this machine:');
    for (const u of r.unavailable) out.push(`- ${KIND_TITLES[u.kind]}: ${u.reason}`);
    out.push('');
  }
  for (const c of r.matrix.cells) {
    const rows = r.summary.filter((s) => s.link === c.link.name && s.workload === c.workload.id);
    if (rows.length === 0) continue;
    out.push(`## ${c.link.name} link — ${c.workload.title}`);
    out.push('');
    out.push(cellTable(rows));
    out.push('');
  }
  out.push('## Who wins');
  out.push('');
  out.push(winnersTable(r));
  out.push('');
  out.push('## godwit against the baselines');
  out.push('');
  out.push("godwit's best strategy in the cell over the baseline's median (below 1: godwit is better).");
  out.push('');
  out.push(ratiosTable(r));
  out.push('');
  const failed = r.runs.filter((x) => x.outcome !== 'committed');
  if (failed.length) {
    out.push('## Runs that did not commit');
    out.push('');
    for (const f of failed) {
      out.push(
        `- ${f.link}/${f.workload} ${f.kind} rep ${f.rep}: ${f.outcome}${f.error ? ` — ${f.error.message}` : ''}`,
      );
    }
    out.push('');
  }
  if (charts.length) {
    out.push('## Charts');
    out.push('');
    for (const ch of charts) out.push(`![${ch.title}](${ch.name}.svg) ([PNG](${ch.name}.png))`, '');
  }
  return out.join('\n');
}

/** Writes report.md and every chart as SVG and PNG into `dir`; returns the file names written. */
export async function writeReport(dir: string, r: BenchResults): Promise<string[]> {
  const charts = await buildCharts(r);
  const files: string[] = [];
  for (const ch of charts) {
    await writeFile(join(dir, `${ch.name}.svg`), ch.svg);
    await writeFile(join(dir, `${ch.name}.png`), await svgToPng(ch.svg));
    files.push(`${ch.name}.svg`, `${ch.name}.png`);
  }
  await writeFile(join(dir, 'report.md'), reportMarkdown(r, charts) + '\n');
  files.unshift('report.md');
  return files;
}
