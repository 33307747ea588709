/**
 * Measures local checkpoint and restore times: N repetitions of run → checkpoint →
 * restore for a busybox counter and for memload holding M MiB of written memory.
 * Benchmarks measure and write numbers; they assert nothing but that each restore continued.
 */
import { runCheckpointDemo, type CheckpointDemoReport } from '../demo/checkpoint-demo.js';
import type { ContainerRuntime } from '../core/runtime.js';

/** Summary statistics of one series, ms or bytes. */
export interface Series {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

/** One workload's results. */
export interface CheckpointRestoreBench {
  workload: string;
  memoryMiB: number;
  reps: number;
  checkpointMs: Series;
  restoreMs: Series;
  imageBytes: Series;
  allContinued: boolean;
}

/** Median, min and max of a non-empty list. */
export function summarize(samples: readonly number[]): Series {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, samples: [...samples] };
}

/** Runs the benchmark for each memory size (0 = busybox shell counter). */
export async function benchCheckpointRestore(
  runtime: ContainerRuntime,
  opts: { reps: number; memoryMiB: readonly number[]; onRep?: (r: CheckpointDemoReport, i: number) => void },
): Promise<CheckpointRestoreBench[]> {
  const out: CheckpointRestoreBench[] = [];
  for (const mib of opts.memoryMiB) {
    const runs: CheckpointDemoReport[] = [];
    for (let i = 0; i < opts.reps; i++) {
      const r = await runCheckpointDemo(runtime, { memoryMiB: mib, namePrefix: 'bench' });
      opts.onRep?.(r, i);
      runs.push(r);
    }
    out.push({
      workload: runs[0]?.workload ?? 'unknown',
      memoryMiB: mib,
      reps: opts.reps,
      checkpointMs: summarize(runs.map((r) => r.checkpointMs)),
      restoreMs: summarize(runs.map((r) => r.restoreMs)),
      imageBytes: summarize(runs.map((r) => r.imageBytes)),
      allContinued: runs.every((r) => r.continued),
    });
  }
  return out;
}
