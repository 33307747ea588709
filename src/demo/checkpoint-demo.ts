/**
 * The checkpoint/restore demo: a container keeps a counter only in memory and prints it;
 * it is checkpointed, restored under a new name, and the restored process must print the
 * next value. The output is read from the processes themselves, so a passing demo proves
 * that memory was restored, not a file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, UnavailableError } from '../core/errors.js';
import type { ContainerRuntime, RunSpec } from '../core/runtime.js';

/** Options of the demo. */
export interface CheckpointDemoOptions {
  /** Prefix of the two container names; a random suffix is added. */
  namePrefix?: string;
  /** Hold this many MiB of written memory (godwit-memload) instead of a busybox shell counter. */
  memoryMiB?: number;
  /** Where the checkpoint goes; default a new temp dir, removed afterwards. */
  checkpointDir?: string;
  /** Progress lines (human); default none. */
  onStep?: (line: string) => void;
  clock?: Clock;
}

/** What the demo measured. `continued` is the verdict. */
export interface CheckpointDemoReport {
  source: string;
  restored: string;
  workload: string;
  memoryMiB: number;
  /** Last counter the source printed before the checkpoint. */
  counterAtCheckpoint: number;
  /** First counter the restored container printed. */
  firstCounterAfterRestore: number;
  /** True when the restored counter is exactly the next value. */
  continued: boolean;
  checkpointMs: number;
  imageBytes: number;
  pagesBytes: number;
  restoreMs: number;
}

/** The workload: a shell loop whose counter lives only in the shell's memory, or memload. */
export function demoSpec(name: string, memoryMiB: number): RunSpec {
  if (memoryMiB > 0) {
    return {
      name,
      image: 'busybox',
      args: ['/usr/local/bin/godwit-memload', '--mib', String(memoryMiB), '--interval-ms', '100'],
      env: {},
    };
  }
  return {
    name,
    image: 'busybox',
    args: ['/bin/sh', '-c', 'i=0; while true; do i=$((i+1)); echo "counter $i"; sleep 0.1; done'],
    env: {},
  };
}

/** Counters printed in a log, in order (`counter N` lines). */
export function countersIn(log: string): number[] {
  const out: number[] = [];
  for (const m of log.matchAll(/^counter (\d+)/gm)) out.push(Number(m[1]));
  return out;
}

/** Runs the demo on `runtime`. Always removes its containers, also on failure. */
export async function runCheckpointDemo(
  runtime: ContainerRuntime,
  opts: CheckpointDemoOptions = {},
): Promise<CheckpointDemoReport> {
  const clock = opts.clock ?? systemClock;
  const step = opts.onStep ?? (() => undefined);
  const memoryMiB = opts.memoryMiB ?? 0;
  const suffix = Math.random().toString(36).slice(2, 8);
  const prefix = opts.namePrefix ?? 'demo';
  const source = `${prefix}-counter-${suffix}`;
  const restored = `${prefix}-restored-${suffix}`;
  const ownDir = opts.checkpointDir === undefined;
  const dir = opts.checkpointDir ?? join(await mkdtemp(join(tmpdir(), 'godwit-demo-')), 'checkpoint');

  try {
    step(
      `starting ${source}: ${memoryMiB > 0 ? `godwit-memload holding ${memoryMiB} MiB` : 'a shell counting in memory'}`,
    );
    await runtime.run(demoSpec(source, memoryMiB));
    await waitForCounters(runtime, source, 10, clock, memoryMiB > 0 ? 60_000 : 10_000);

    step(`checkpointing ${source}`);
    const cp = await runtime.checkpoint(source, { dir });
    const before = countersIn(await runtime.logs(source));
    const counterAtCheckpoint = before[before.length - 1] ?? -1;
    step(`  counter at checkpoint: ${counterAtCheckpoint}`);

    step(`restoring as ${restored}`);
    const rs = await runtime.restore({ dir, name: restored });
    const after = await waitForCounters(runtime, restored, 1, clock, 10_000);
    const firstCounterAfterRestore = after[0] ?? -1;
    step(`  first counter after restore: ${firstCounterAfterRestore}`);
    return {
      source,
      restored,
      workload: memoryMiB > 0 ? 'godwit-memload' : 'busybox-sh-counter',
      memoryMiB,
      counterAtCheckpoint,
      firstCounterAfterRestore,
      continued: firstCounterAfterRestore === counterAtCheckpoint + 1,
      checkpointMs: cp.durationMs,
      imageBytes: cp.imageBytes,
      pagesBytes: cp.pagesBytes,
      restoreMs: rs.durationMs,
    };
  } finally {
    for (const name of [restored, source]) await runtime.remove(name, { force: true }).catch(() => undefined);
    if (ownDir) await rm(join(dir, '..'), { recursive: true, force: true });
  }
}

async function waitForCounters(
  runtime: ContainerRuntime,
  name: string,
  n: number,
  clock: Clock,
  timeoutMs: number,
): Promise<number[]> {
  const deadline = clock.monotonic() + timeoutMs;
  for (;;) {
    const counters = countersIn(await runtime.logs(name));
    if (counters.length >= n) return counters;
    if (clock.monotonic() > deadline) {
      const info = await runtime.inspect(name);
      throw new UnavailableError(
        ErrorCode.Timeout,
        `${name} printed no counter within ${timeoutMs} ms (it is ${info.status})`,
      );
    }
    await clock.sleep(50);
  }
}
