/**
 * The benchmark matrix as data: which workloads run on which links, which strategies and
 * baselines measure each, how many repetitions, and in what order. Pure: no I/O, no clock.
 *
 * A *cell* is one link × one workload; every kind (godwit's strategies and the baselines) is
 * measured in every cell. Within a cell the repetitions are rep-major and the kinds alternate
 * within each repetition (godwit's strategies interleaved with the baselines), rotated by one
 * place per repetition, so drift of the machine over the run hits every kind alike.
 */
import { ErrorCode, InvalidArgumentError } from '../core/errors.js';
import type { LinkSpec } from '../core/testbed.js';
import type { BaselineKind } from './baseline.js';
import { LINK_PROFILES } from '../testbed/profiles.js';

/** godwit's strategies as the benchmark names them (pre-copy with and without prediction). */
export type StrategyKind = 'cold' | 'precopy' | 'precopy-predict' | 'postcopy' | 'hybrid';
/** Everything a cell can measure. */
export type BenchKind = StrategyKind | BaselineKind;

/** Every kind, in the order runs interleave them: a godwit strategy, then a baseline, and so on. */
export const BENCH_KINDS: readonly BenchKind[] = [
  'cold',
  'byhand',
  'precopy',
  'criu-page-server',
  'precopy-predict',
  'podman',
  'postcopy',
  'hybrid',
];
/** The kinds that are baselines (the tools people use today), not godwit. */
export const BASELINE_KINDS: readonly BaselineKind[] = ['byhand', 'criu-page-server', 'podman'];

/** Whether a kind is a baseline. */
export function isBaseline(kind: BenchKind): kind is BaselineKind {
  return (BASELINE_KINDS as readonly string[]).includes(kind);
}

/** What a workload runs; the runner turns it into a container and a client. */
export type WorkloadSpec =
  | { id: string; type: 'idle'; title: string }
  | { id: string; type: 'web'; title: string }
  | { id: string; type: 'redis'; title: string }
  | {
      id: string;
      type: 'memload';
      title: string;
      mib: number;
      dirtyMBps: number;
      pattern: 'uniform' | 'hotset';
      hotMiB: number;
    };

/** Dirty rates of the memload workloads, MB/s: low, medium, high (high outruns edge's 12.5 MB/s). */
export const DIRTY_RATES = { low: 1, medium: 4, high: 16 } as const;
export type DirtyLevel = keyof typeof DIRTY_RATES;

/** A memload workload: `memload-<level>-<uniform|hot>`, its hot set a quarter of its memory. */
export function memloadWorkload(level: DirtyLevel, pattern: 'uniform' | 'hotset', mib: number): WorkloadSpec {
  const hotMiB = Math.max(1, Math.round(mib / 4));
  const rate = DIRTY_RATES[level];
  return {
    id: `memload-${level}-${pattern === 'hotset' ? 'hot' : 'uniform'}`,
    type: 'memload',
    title:
      `memload ${mib} MiB, ${rate} MB/s ` +
      (pattern === 'hotset' ? `on a ${hotMiB} MiB hot set` : 'uniform over all of it'),
    mib,
    dirtyMBps: rate,
    pattern,
    hotMiB,
  };
}

export const IDLE: WorkloadSpec = { id: 'idle', type: 'idle', title: 'idle shell' };
export const WEB: WorkloadSpec = { id: 'web', type: 'web', title: 'web service (counterd) under the probe' };
export const REDIS: WorkloadSpec = {
  id: 'redis',
  type: 'redis',
  title: 'Redis under redis-benchmark SET load',
};

/** One link × one workload, measured by every kind of the matrix. */
export interface BenchCell {
  link: LinkSpec;
  workload: WorkloadSpec;
}

/** A whole matrix. */
export interface BenchMatrix {
  name: string;
  reps: number;
  kinds: BenchKind[];
  /** Cells grouped by link: the runner brings one testbed up per link. */
  cells: BenchCell[];
}

/** The named matrices. */
export const MATRIX_NAMES = ['quick', 'full'] as const;
export type MatrixName = (typeof MATRIX_NAMES)[number];

/** memload's size in the quick and the full matrix, MiB. */
export const QUICK_MIB = 16;
export const FULL_MIB = 24;

/** Default repetitions: every number is a median of at least 3. */
export const DEFAULT_REPS = 3;

const link = (name: 'lan' | 'edge' | '4g'): LinkSpec => ({ ...(LINK_PROFILES[name] as LinkSpec) });

/**
 * The named matrices.
 * - quick (≤ 10 min): memload 16 MiB at the medium rate on a hot set, on lan, edge and 4g.
 * - full (≤ 60 min): every workload on edge (idle, web, Redis, memload 24 MiB at low, medium
 *   and high rates, uniform and hot-set); on lan and 4g the web service, Redis and memload
 *   24 MiB medium hot-set.
 * Sizes are what fits the time bounds on this machine (2 cores): quick (72 runs) took 7.5 min;
 * on 4g (20 Mbit/s) one move of memload 32 MiB takes 7-18 s, CRIU's page server (raw pages) ~16 s.
 */
export function namedMatrix(name: MatrixName, reps = DEFAULT_REPS): BenchMatrix {
  const kinds = [...BENCH_KINDS];
  if (name === 'quick') {
    const w = memloadWorkload('medium', 'hotset', QUICK_MIB);
    return {
      name,
      reps,
      kinds,
      cells: (['lan', 'edge', '4g'] as const).map((l) => ({ link: link(l), workload: w })),
    };
  }
  const mib = FULL_MIB;
  const memloads = (['low', 'medium', 'high'] as const).flatMap((level) =>
    (['hotset', 'uniform'] as const).map((p) => memloadWorkload(level, p, mib)),
  );
  const few = [WEB, REDIS, memloadWorkload('medium', 'hotset', mib)];
  return {
    name,
    reps,
    kinds,
    cells: [
      ...[IDLE, WEB, REDIS, ...memloads].map((workload) => ({ link: link('edge'), workload })),
      ...few.map((workload) => ({ link: link('lan'), workload })),
      ...few.map((workload) => ({ link: link('4g'), workload })),
    ],
  };
}

/** Narrows a matrix to the links, workloads and kinds named (undefined: keep all). */
export function filterMatrix(
  m: BenchMatrix,
  f: { links?: readonly string[]; workloads?: readonly string[]; kinds?: readonly string[] },
): BenchMatrix {
  const check = (what: string, asked: readonly string[] | undefined, known: readonly string[]): void => {
    for (const a of asked ?? []) {
      if (!known.includes(a)) {
        throw new InvalidArgumentError(
          ErrorCode.InvalidFlag,
          `--${what}: ${a} is not in the ${m.name} matrix`,
          {
            hint: `it has: ${[...new Set(known)].join(', ')}`,
          },
        );
      }
    }
  };
  check(
    'links',
    f.links,
    m.cells.map((c) => c.link.name),
  );
  check(
    'workloads',
    f.workloads,
    m.cells.map((c) => c.workload.id),
  );
  check('kinds', f.kinds, m.kinds);
  const cells = m.cells.filter(
    (c) =>
      (!f.links || f.links.includes(c.link.name)) && (!f.workloads || f.workloads.includes(c.workload.id)),
  );
  if (cells.length === 0) {
    throw new InvalidArgumentError(ErrorCode.InvalidFlag, 'no cell of the matrix has that link and workload');
  }
  return { ...m, cells, kinds: m.kinds.filter((k) => !f.kinds || f.kinds.includes(k)) };
}

/** One measurement to make: a kind in a cell, at a repetition (1-based). */
export interface PlannedRun {
  cell: BenchCell;
  kind: BenchKind;
  rep: number;
}

/**
 * The runs of a matrix in the order they are made: link by link (one testbed each), cell by
 * cell, repetition by repetition; within a repetition every kind once, the order rotated by
 * one place per repetition.
 */
export function planRuns(m: BenchMatrix): PlannedRun[] {
  const out: PlannedRun[] = [];
  const links = [...new Set(m.cells.map((c) => c.link.name))];
  for (const l of links) {
    for (const cell of m.cells.filter((c) => c.link.name === l)) {
      for (let rep = 1; rep <= m.reps; rep++) {
        const n = m.kinds.length;
        for (let i = 0; i < n; i++) out.push({ cell, kind: m.kinds[(i + rep - 1) % n] as BenchKind, rep });
      }
    }
  }
  return out;
}

/** `link/workload`, the key of a cell in results and tables. */
export function cellKey(c: BenchCell): string {
  return `${c.link.name}/${c.workload.id}`;
}
