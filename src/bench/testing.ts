/**
 * Fixtures for the benchmark's unit tests: runs and results as a real run would write them,
 * with figures chosen by the test. No I/O.
 */
import type { MigrationReport, RoundReport } from '../core/migration.js';
import type { BaselineReport } from './baseline.js';
import { memloadWorkload, namedMatrix, type BenchKind } from './matrix.js';
import { RESULTS_SCHEMA, summarize, type BenchResults, type BenchRun } from './results.js';

/** A godwit MigrationReport with the given figures; rounds from `rounds` (pages, wire bytes, ms). */
export function fakeMigration(o: {
  strategy?: MigrationReport['strategy'];
  downtimeMs: number;
  totalMs: number;
  wire: number;
  logical?: number;
  finalTransferMs?: number;
  rounds?: { pages: number; dirty: number; wire: number; ms: number }[];
  degradationWindowMs?: number;
}): MigrationReport {
  const rounds: RoundReport[] = (o.rounds ?? []).map((r, i) => ({
    round: i,
    pagesScanned: r.pages,
    dirtyPages: r.dirty,
    heldBackPages: 0,
    bytesLogical: r.pages * 4096,
    bytesSent: r.dirty * 4096,
    bytesWire: r.wire,
    scanMs: 10,
    transferMs: r.ms - 10,
    durationMs: r.ms,
    predictedFinalMs: 100,
  }));
  let t = 0;
  const phases: MigrationReport['phases'] = [
    { phase: 'prepare' as MigrationReport['phases'][number]['phase'], startMs: 0, endMs: 20, durationMs: 20 },
  ];
  t = 20;
  for (const r of rounds) {
    phases.push({ phase: 'round' as never, startMs: t, endMs: t + r.durationMs, durationMs: r.durationMs });
    t += r.durationMs;
  }
  for (const [phase, ms] of [
    ['checkpoint', o.downtimeMs / 3],
    ['transfer', o.finalTransferMs ?? o.downtimeMs / 3],
    ['restore', o.downtimeMs / 3],
    ['commit', 1],
  ] as const) {
    phases.push({ phase: phase as never, startMs: t, endMs: t + ms, durationMs: ms });
    t += ms;
  }
  return {
    id: 'm1',
    name: 'b1',
    strategy: o.strategy ?? 'cold',
    from: 'h1',
    to: 'h2',
    outcome: 'committed',
    committed: true,
    startedAt: '2026-11-26T06:00:00.000Z',
    phases,
    rounds,
    stopReason: rounds.length ? 'downtime-target' : 'cold',
    timings: { ...(o.finalTransferMs !== undefined ? { finalTransferMs: o.finalTransferMs } : {}) },
    downtimeMs: o.downtimeMs,
    totalMs: o.totalMs,
    bytes: { logical: o.logical ?? 32 << 20, zero: 0, dedup: 0, sent: o.wire, wire: o.wire },
    ...(o.degradationWindowMs !== undefined
      ? {
          lazy: {
            outcome: 'filled' as const,
            pagesRemote: 10,
            pagesOnDemand: 1,
            pagesPushed: 9,
            pagesLocal: 0,
            pagesServed: 10,
            faults: 1,
            faultWaitMs: { p50: 1, p99: 2, max: 2 },
            degradationWindowMs: o.degradationWindowMs,
            bytesWire: 100,
          },
        }
      : {}),
    warnings: [],
  };
}

/** A baseline report. */
export function fakeBaseline(kind: BaselineReport['kind'], downtimeMs: number, wire: number): BaselineReport {
  return {
    kind,
    outcome: 'committed',
    downtimeMs,
    totalMs: downtimeMs + 50,
    wireBytes: wire,
    logicalBytes: 33 << 20,
    phases: [
      { name: 'checkpoint', startMs: 0, durationMs: downtimeMs / 3 },
      { name: 'copy', startMs: downtimeMs / 3, durationMs: downtimeMs / 3 },
      { name: 'restore', startMs: (2 * downtimeMs) / 3, durationMs: downtimeMs / 3 },
    ],
  };
}

/** A run of `kind` in quick's edge cell with the figures of `report`. */
export function fakeRun(
  kind: BenchKind,
  rep: number,
  report: MigrationReport | BaselineReport,
  clientMs: number,
): BenchRun {
  const isMig = 'rounds' in report;
  return {
    link: 'edge',
    workload: 'memload-medium-hot',
    kind,
    rep,
    startedAt: '2026-11-26T06:00:00.000Z',
    outcome: 'committed',
    clientDowntimeMs: clientMs,
    downtimeMs: report.downtimeMs ?? 0,
    totalMs: report.totalMs ?? 0,
    wireBytes: isMig ? report.bytes.wire : report.wireBytes,
    stateBytes: isMig ? report.bytes.logical : report.logicalBytes,
    stateKept: true,
    probe: {
      longLivedMaxGapMs: clientMs,
      freshMaxGapMs: clientMs,
      survived: true,
      counterResets: 0,
      probeStartedAt: '2026-11-26T05:59:59.200Z',
      gapStartMs: 900,
      gapEndMs: 900 + clientMs,
    },
    report,
  };
}

/** A whole results document of quick's edge cell: cold, by hand and pre-copy, 3 reps each. */
export function fakeResults(): BenchResults {
  const m = namedMatrix('quick');
  const cell = { link: m.cells[1]!.link, workload: memloadWorkload('medium', 'hotset', 32) };
  const kinds: BenchKind[] = ['cold', 'byhand', 'precopy-predict', 'hybrid'];
  const runs: BenchRun[] = [];
  for (let rep = 1; rep <= 3; rep++) {
    runs.push(
      fakeRun(
        'cold',
        rep,
        fakeMigration({ downtimeMs: 3000 + rep * 100, totalMs: 3500, wire: 15e6, finalTransferMs: 2500 }),
        3100 + rep,
      ),
    );
    runs.push(fakeRun('byhand', rep, fakeBaseline('byhand', 2800 + rep * 10, 14e6), 2900));
    runs.push(
      fakeRun(
        'precopy-predict',
        rep,
        fakeMigration({
          strategy: 'precopy',
          downtimeMs: 600,
          totalMs: 4000,
          wire: 17e6,
          rounds: [
            { pages: 8192, dirty: 8192, wire: 14e6, ms: 1300 },
            { pages: 8192, dirty: 1200, wire: 2e6, ms: 250 },
          ],
        }),
        640 + rep,
      ),
    );
    runs.push(
      fakeRun(
        'hybrid',
        rep,
        fakeMigration({
          strategy: 'hybrid',
          downtimeMs: 300,
          totalMs: 4200,
          wire: 16e6,
          rounds: [{ pages: 8192, dirty: 8192, wire: 14e6, ms: 1300 }],
          degradationWindowMs: 400,
        }),
        310 + rep,
      ),
    );
  }
  return {
    schema: RESULTS_SCHEMA,
    startedAt: '2026-11-26T06:00:00.000Z',
    finishedAt: '2026-11-26T06:05:00.000Z',
    interrupted: false,
    command: 'godwit bench --matrix quick --links edge',
    matrix: { name: 'quick', reps: 3, kinds, cells: [cell] },
    machine: {
      hostname: 'h',
      kernel: '6.18.0',
      os: 'Debian GNU/Linux 12 (bookworm)',
      cpus: 2,
      cpuModel: 'cpu',
      memoryBytes: 24 << 30,
    },
    versions: { godwit: '0.1.0', node: 'v20' },
    unavailable: [{ kind: 'podman', reason: 'not installed' }],
    runs,
    summary: summarize([cell], kinds, runs),
  };
}
