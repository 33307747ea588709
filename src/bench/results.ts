/**
 * What `godwit bench` writes to results.json: every repetition's raw report, the machine, the
 * versions, the matrix and its links, and the per-cell summaries (median, min, max) with the
 * analytic pre-copy model's prediction next to each pre-copy row. Pure: building and checking
 * the document; the runner does the I/O.
 */
import type { LinkSpec } from '../core/testbed.js';
import type { MigrationReport } from '../core/migration.js';
import type { BaselineReport } from './baseline.js';
import { isBaseline, type BenchKind, type WorkloadSpec } from './matrix.js';
import { predictPrecopy, type PrecopyModelOutput } from './precopy-model.js';
import { MEMLOAD_MIX } from '../demo/memload.js';

/** The results.json schema id; bumped when a field changes meaning. */
export const RESULTS_SCHEMA = 'godwit-bench/1';

/** What the probe saw during one run (absent for workloads without a network service). */
export interface RunProbe {
  /** Longest gap between replies on the long-lived connection, and across fresh connections. */
  longLivedMaxGapMs: number;
  freshMaxGapMs: number;
  survived: boolean;
  counterResets: number;
  /** When the probe started (ISO), and its longest long-lived gap, ms since then: for the timeline. */
  probeStartedAt?: string;
  gapStartMs?: number;
  gapEndMs?: number;
}

/** One repetition of one kind in one cell. */
export interface BenchRun {
  link: string;
  workload: string;
  kind: BenchKind;
  rep: number;
  startedAt: string;
  /** `failed`: the run threw (error set); `rolled-back`: the tool put the source back. */
  outcome: 'committed' | 'rolled-back' | 'failed';
  /** Client-perceived downtime: the probe's longest gap on its long-lived connection. */
  clientDowntimeMs?: number;
  /** The runtime's downtime (checkpoint start → running on the destination). */
  downtimeMs?: number;
  totalMs?: number;
  wireBytes?: number;
  /** Size of the state the tool had to move (its checkpoint's logical bytes). */
  stateBytes?: number;
  /** The service's state survived: memload's own memory check, or the counter never went back. */
  stateKept?: boolean;
  probe?: RunProbe;
  /** The tool's own report: godwit's MigrationReport or a baseline's. */
  report?: MigrationReport | BaselineReport;
  error?: { code: string; message: string };
}

/** Median, min and max of the runs that had the figure; n of them. */
export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** The model's prediction for a pre-copy row, with what it was fed. */
export interface ModelRow {
  inputs: {
    residentBytes: number;
    dirtyBytesPerS: number;
    writableBytes: number;
    wireRatio: number;
    dirtyWireRatio: number;
    linkBytesPerS: number;
    rttMs: number;
    roundOverheadMs: number;
    stopOverheadMs: number;
  };
  rounds: number;
  stopReason: PrecopyModelOutput['stopReason'];
  wireBytes: number;
  downtimeMs: number;
  totalMs: number;
}

/** One kind in one cell, over its repetitions. */
export interface CellSummary {
  link: string;
  workload: string;
  kind: BenchKind;
  runs: number;
  committed: number;
  stateKept: number;
  clientDowntimeMs?: Stat;
  downtimeMs?: Stat;
  totalMs?: Stat;
  wireBytes?: Stat;
  /** Wire bytes over the workload's resident memory. */
  wireOverResident?: Stat;
  rounds?: Stat;
  /** Post-copy and hybrid: restore → every page in place. */
  degradationWindowMs?: Stat;
  model?: ModelRow;
}

/** The machine the run measured. */
export interface MachineInfo {
  hostname: string;
  kernel: string;
  os: string;
  cpus: number;
  cpuModel: string;
  memoryBytes: number;
}

/** The whole of results.json. */
export interface BenchResults {
  schema: typeof RESULTS_SCHEMA;
  startedAt: string;
  finishedAt?: string;
  /** Stopped early (Ctrl-C): the runs so far are kept, the rest never ran. */
  interrupted: boolean;
  command: string;
  matrix: {
    name: string;
    reps: number;
    kinds: BenchKind[];
    cells: { link: LinkSpec; workload: WorkloadSpec }[];
  };
  machine: MachineInfo;
  /** Versions of godwit, Node, runc, CRIU and the baselines' tools. */
  versions: Record<string, string>;
  /** Kinds that could not run on this machine, and exactly why. */
  unavailable: { kind: BenchKind; reason: string }[];
  /** Every run, in the order made. */
  runs: BenchRun[];
  summary: CellSummary[];
}

/** Median, min and max of the finite values; undefined when there are none. */
export function stat(values: readonly (number | undefined)[]): Stat | undefined {
  const xs = values
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v))
    .sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const m = xs.length >> 1;
  const median = xs.length % 2 ? (xs[m] as number) : ((xs[m - 1] as number) + (xs[m] as number)) / 2;
  return { median, min: xs[0] as number, max: xs[xs.length - 1] as number, n: xs.length };
}

const MiB = 1024 * 1024;

/**
 * The resident memory a cell's wire bytes are compared with: memload's own size, else the
 * median state size cold migration (else the by-hand baseline) measured in the cell.
 */
export function residentBytes(workload: WorkloadSpec, runs: readonly BenchRun[]): number | undefined {
  if (workload.type === 'memload') return workload.mib * MiB;
  for (const k of ['cold', 'byhand'] as const) {
    const s = stat(runs.filter((r) => r.kind === k && r.outcome === 'committed').map((r) => r.stateBytes));
    if (s) return s.median;
  }
  return undefined;
}

const isGodwit = (r: BenchRun): r is BenchRun & { report: MigrationReport } =>
  !isBaseline(r.kind) && r.report !== undefined && 'rounds' in r.report;

/**
 * The model's prediction for a pre-copy kind of a cell, fed by the workload's nominal figures
 * (memload: its dirty rate and hot set, of which only the random pages' rewrites change content)
 * or by what the runs' rounds measured (other workloads: the dirty rate round 1 found, the
 * compression of the rewritten pages), the first round's compression, the link's profile,
 * and the stop's fixed cost measured by cold migration in the same cell (its downtime minus its
 * transfer); undefined when no pre-copy run has a first round.
 */
export function modelRow(
  workload: WorkloadSpec,
  link: LinkSpec,
  kindRuns: readonly BenchRun[],
  coldRuns: readonly BenchRun[],
): ModelRow | undefined {
  const reports = kindRuns.filter(isGodwit).map((r) => r.report);
  const firsts = reports
    .map((r) => r.rounds[0])
    .filter((r): r is NonNullable<typeof r> => r !== undefined && r.pagesScanned > 0);
  if (firsts.length === 0) return undefined;
  const scanned = stat(firsts.map((r) => r.pagesScanned * 4096))?.median ?? 0;
  const wireRatio = stat(firsts.map((r) => r.bytesWire / (r.pagesScanned * 4096)))?.median ?? 1;
  let resident = scanned;
  let dirty = 0;
  let writable = scanned;
  // Rounds after the first: wire bytes per byte of the rewritten pages sent, as measured.
  let dirtyWireRatio =
    stat(
      reports.map((r) => {
        const later = r.rounds.slice(1);
        const sent = later.reduce((a, x) => a + x.bytesSent, 0);
        return sent > 0 ? later.reduce((a, x) => a + x.bytesWire, 0) / sent : undefined;
      }),
    )?.median ?? wireRatio;
  if (workload.type === 'memload') {
    // memload's rewrites change content only on its random pages (MEMLOAD_MIX), incompressibly.
    const visible = MEMLOAD_MIX.randomPct / 100;
    resident = workload.mib * MiB;
    dirty = workload.dirtyMBps * MiB * visible;
    writable = (workload.pattern === 'hotset' ? workload.hotMiB : workload.mib) * MiB * visible;
    dirtyWireRatio = 1;
  } else {
    // Round 1 found what was written during round 0.
    dirty =
      stat(
        reports.map((r) =>
          r.rounds[1] && r.rounds[0] && r.rounds[0].durationMs > 0
            ? (r.rounds[1].dirtyPages * 4096 * 1000) / r.rounds[0].durationMs
            : undefined,
        ),
      )?.median ?? 0;
  }
  const overhead =
    stat(
      coldRuns
        .filter(isGodwit)
        .map((r) =>
          r.report.downtimeMs !== undefined
            ? r.report.downtimeMs - (r.report.timings.finalTransferMs ?? 0)
            : undefined,
        ),
    )?.median ?? 0;
  // A transfer's fixed cost: what rounds after the first took beyond their bytes at the link's rate.
  const linkBytesPerS = (link.rateMbit * 1e6) / 8;
  const roundOverheadMs =
    stat(
      reports.flatMap((r) =>
        r.rounds.slice(1).map((x) => Math.max(0, x.transferMs - (x.bytesWire / linkBytesPerS) * 1000)),
      ),
    )?.median ?? 2 * link.delayMs;
  const inputs = {
    residentBytes: resident,
    dirtyBytesPerS: dirty,
    writableBytes: writable,
    wireRatio,
    dirtyWireRatio,
    linkBytesPerS,
    rttMs: 2 * link.delayMs,
    roundOverheadMs,
    stopOverheadMs: overhead,
  };
  const p = predictPrecopy(inputs);
  return {
    inputs,
    rounds: p.rounds.length,
    stopReason: p.stopReason,
    wireBytes: p.wireBytes,
    downtimeMs: p.downtimeMs,
    totalMs: p.totalMs,
  };
}

/** The per-cell, per-kind summaries of the runs, in matrix order. */
export function summarize(
  cells: readonly { link: LinkSpec; workload: WorkloadSpec }[],
  kinds: readonly BenchKind[],
  runs: readonly BenchRun[],
): CellSummary[] {
  const out: CellSummary[] = [];
  for (const c of cells) {
    const inCell = runs.filter((r) => r.link === c.link.name && r.workload === c.workload.id);
    const resident = residentBytes(c.workload, inCell);
    for (const kind of kinds) {
      const rs = inCell.filter((r) => r.kind === kind);
      if (rs.length === 0) continue;
      const ok = rs.filter((r) => r.outcome === 'committed');
      const godwit = ok.filter(isGodwit).map((r) => r.report);
      const s: CellSummary = {
        link: c.link.name,
        workload: c.workload.id,
        kind,
        runs: rs.length,
        committed: ok.length,
        stateKept: rs.filter((r) => r.stateKept === true).length,
      };
      const put = <K extends keyof CellSummary>(key: K, v: CellSummary[K] | undefined): void => {
        if (v !== undefined) s[key] = v;
      };
      put('clientDowntimeMs', stat(ok.map((r) => r.clientDowntimeMs)));
      put('downtimeMs', stat(ok.map((r) => r.downtimeMs)));
      put('totalMs', stat(ok.map((r) => r.totalMs)));
      put('wireBytes', stat(ok.map((r) => r.wireBytes)));
      if (resident) put('wireOverResident', stat(ok.map((r) => (r.wireBytes ?? Number.NaN) / resident)));
      if (godwit.length) put('rounds', stat(godwit.map((r) => r.rounds.length)));
      put('degradationWindowMs', stat(godwit.map((r) => r.lazy?.degradationWindowMs)));
      if (kind === 'precopy' || kind === 'precopy-predict') {
        put(
          'model',
          modelRow(
            c.workload,
            c.link,
            ok,
            inCell.filter((r) => r.kind === 'cold' && r.outcome === 'committed'),
          ),
        );
      }
      out.push(s);
    }
  }
  return out;
}

/**
 * Checks a parsed results.json against the schema's required shape; returns the problems found
 * (empty: valid). Used by the test of a one-cell run and by `godwit bench --report-only`.
 */
export function validateResults(doc: unknown): string[] {
  const problems: string[] = [];
  const obj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!obj(doc)) return ['not an object'];
  const need = (o: Record<string, unknown>, key: string, type: string, where: string): void => {
    const v = o[key];
    const t = Array.isArray(v) ? 'array' : typeof v;
    if (t !== type) problems.push(`${where}${key}: expected ${type}, got ${v === undefined ? 'nothing' : t}`);
  };
  if (doc['schema'] !== RESULTS_SCHEMA) problems.push(`schema: expected ${RESULTS_SCHEMA}`);
  need(doc, 'startedAt', 'string', '');
  need(doc, 'interrupted', 'boolean', '');
  need(doc, 'matrix', 'object', '');
  need(doc, 'machine', 'object', '');
  need(doc, 'versions', 'object', '');
  need(doc, 'unavailable', 'array', '');
  need(doc, 'runs', 'array', '');
  need(doc, 'summary', 'array', '');
  if (obj(doc['machine']))
    for (const k of ['kernel', 'os', 'cpuModel']) need(doc['machine'], k, 'string', 'machine.');
  if (obj(doc['matrix'])) {
    need(doc['matrix'], 'cells', 'array', 'matrix.');
    for (const [i, c] of ((doc['matrix']['cells'] as unknown[]) ?? []).entries()) {
      if (!obj(c) || !obj(c['link']) || !obj(c['workload']))
        problems.push(`matrix.cells[${i}]: expected link and workload`);
      else
        for (const k of ['rateMbit', 'delayMs', 'lossPct'])
          need(c['link'], k, 'number', `matrix.cells[${i}].link.`);
    }
  }
  for (const [i, r] of ((Array.isArray(doc['runs']) ? doc['runs'] : []) as unknown[]).entries()) {
    if (!obj(r)) {
      problems.push(`runs[${i}]: not an object`);
      continue;
    }
    for (const k of ['link', 'workload', 'kind', 'outcome', 'startedAt']) need(r, k, 'string', `runs[${i}].`);
    need(r, 'rep', 'number', `runs[${i}].`);
    if (r['outcome'] === 'committed') {
      for (const k of ['downtimeMs', 'totalMs', 'wireBytes']) need(r, k, 'number', `runs[${i}].`);
      need(r, 'report', 'object', `runs[${i}].`);
    }
  }
  for (const [i, s] of ((Array.isArray(doc['summary']) ? doc['summary'] : []) as unknown[]).entries()) {
    if (!obj(s)) {
      problems.push(`summary[${i}]: not an object`);
      continue;
    }
    for (const k of ['link', 'workload', 'kind']) need(s, k, 'string', `summary[${i}].`);
    for (const k of ['clientDowntimeMs', 'downtimeMs', 'totalMs', 'wireBytes']) {
      const v = s[k];
      if (v === undefined) continue;
      if (!obj(v) || !['median', 'min', 'max', 'n'].every((f) => typeof v[f] === 'number')) {
        problems.push(`summary[${i}].${k}: expected {median, min, max, n}`);
      } else if (!(
        (v['min'] as number) <= (v['median'] as number) && (v['median'] as number) <= (v['max'] as number)
      )) {
        problems.push(`summary[${i}].${k}: min ≤ median ≤ max does not hold`);
      }
    }
  }
  return problems;
}
