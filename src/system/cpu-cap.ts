/**
 * Caps a process's CPU time with a cgroup of its own (CFS bandwidth: `quota` µs of CPU per
 * 100 ms period), on cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`). Used to hold a load
 * generator to a fixed share of the machine, so that it loads the service under test without
 * starving the hosts being measured. Best effort: where no cpu controller is writable, the
 * process runs uncapped and the caller is told why.
 */
import { existsSync } from 'node:fs';
import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';

const PERIOD_US = 100_000;
const V2_ROOT = '/sys/fs/cgroup';
const V1_CPU = '/sys/fs/cgroup/cpu';

/** A cap in place: `release` removes the cgroup once the process has exited (errors ignored). */
export interface CpuCap {
  /** The cgroup directory, or undefined when the process runs uncapped. */
  dir?: string;
  /** Why it is uncapped. */
  reason?: string;
  release(): Promise<void>;
}

/**
 * Moves `pid` into a new cgroup named `name` allowed `percent` % of one CPU. Never throws.
 * Threads the process starts later inherit the cgroup.
 */
export async function capCpu(pid: number, name: string, percent: number): Promise<CpuCap> {
  const quota = Math.max(1000, Math.round((PERIOD_US * percent) / 100));
  const v2 = existsSync(join(V2_ROOT, 'cgroup.controllers'));
  const dir = v2 ? join(V2_ROOT, name) : join(V1_CPU, name);
  try {
    await mkdir(dir, { recursive: true });
    if (v2) await writeFile(join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`);
    else {
      await writeFile(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
      await writeFile(join(dir, 'cpu.cfs_quota_us'), String(quota));
    }
    await writeFile(join(dir, 'cgroup.procs'), String(pid));
  } catch (err) {
    await rmdir(dir).catch(() => undefined);
    return { reason: `no CPU cap (${dir}: ${errorMessage(err)})`, release: () => Promise.resolve() };
  }
  return { dir, release: () => rmdir(dir).catch(() => undefined) };
}
