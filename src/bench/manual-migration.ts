/**
 * Checkpoint on one agent, plain file copy, restore on another: the by-hand migration
 * that precedes godwit's transfer engine, used to measure what a client sees (with the
 * probe) and as the baseline the migration strategies are compared against.
 */
import { cp, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import type { ContainerRuntime } from '../core/runtime.js';
import type { TestbedHost } from '../core/testbed.js';
import { ErrorCode, UnavailableError } from '../core/errors.js';
import type { ProbeReport } from '../probe/probe.js';

/** Phase timings of one by-hand migration, ms. */
export interface ManualMigrationReport {
  name: string;
  from: string;
  to: string;
  checkpointMs: number;
  copyMs: number;
  restoreMs: number;
  /** Checkpoint start → restored container running: the downtime the runtime causes. */
  frozenMs: number;
}

/**
 * Moves container `name` from `from` to `to`: checkpoint (the source stops), copy the
 * checkpoint directory, restore under the same name, then remove the source record.
 * If the restore fails, the source is restored from its own checkpoint and the error rethrown.
 */
export async function migrateByHand(opts: {
  name: string;
  from: { host: TestbedHost; runtime: ContainerRuntime };
  to: { host: TestbedHost; runtime: ContainerRuntime };
}): Promise<ManualMigrationReport> {
  const { name, from, to } = opts;
  const stamp = `${name}-${Date.now()}`;
  const srcDir = join(from.host.stateDir, 'checkpoints', stamp);
  const dstDir = join(to.host.stateDir, 'incoming', stamp);
  await mkdir(join(from.host.stateDir, 'checkpoints'), { recursive: true });
  await mkdir(join(to.host.stateDir, 'incoming'), { recursive: true });
  const t0 = performance.now();
  await from.runtime.checkpoint(name, { dir: srcDir, tcpEstablished: true });
  const t1 = performance.now();
  await cp(srcDir, dstDir, { recursive: true, preserveTimestamps: true });
  const t2 = performance.now();
  try {
    await to.runtime.restore({ dir: dstDir, name, tcpEstablished: true });
  } catch (err) {
    // Before the destination runs it, the container belongs to the source: put it back.
    await from.runtime.remove(name, { force: true }).catch(() => undefined);
    await from.runtime.restore({ dir: srcDir, name, tcpEstablished: true });
    throw err;
  }
  const t3 = performance.now();
  await from.runtime.remove(name, { force: true });
  await rm(srcDir, { recursive: true, force: true });
  return {
    name,
    from: from.host.name,
    to: to.host.name,
    checkpointMs: t1 - t0,
    copyMs: t2 - t1,
    restoreMs: t3 - t2,
    frozenMs: t3 - t0,
  };
}

/**
 * Runs `godwit probe` inside namespace `netns` for `durationMs`; resolves with its JSON report.
 * `bin` is the path of bin/godwit.js.
 */
export function probeInNetns(opts: {
  bin: string;
  netns: string;
  target: string;
  durationMs: number;
  intervalMs?: number;
  /** Ends the probe early (SIGTERM); it still reports the time until then. */
  signal?: AbortSignal;
  /** Called once both of the probe's series have had a reply. */
  onReady?: () => void;
}): Promise<ProbeReport> {
  const args = [
    'netns',
    'exec',
    opts.netns,
    process.execPath,
    opts.bin,
    'probe',
    opts.target,
    '--interval',
    `${opts.intervalMs ?? 5}ms`,
    '--duration',
    `${opts.durationMs}ms`,
    '--json',
    ...(opts.onReady ? ['--ready'] : []),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // `ip netns exec` execs the probe, so the signal reaches it.
    const stop = (): void => void child.kill('SIGTERM');
    if (opts.signal?.aborted) stop();
    else opts.signal?.addEventListener('abort', stop, { once: true });
    child.on('close', () => opts.signal?.removeEventListener('abort', stop));
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    let onReady = opts.onReady;
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      err += c;
      if (onReady && /^ready$/m.test(err)) {
        err = err.replace(/^ready\n?/m, '');
        onReady();
        onReady = undefined;
      }
    });
    child.on('error', reject);
    child.on('close', () => {
      try {
        resolve(JSON.parse(out) as ProbeReport);
      } catch {
        reject(
          new UnavailableError(
            ErrorCode.CommandFailed,
            `probe printed no report: ${err.trim() || out.trim()}`,
          ),
        );
      }
    });
  });
}

/** Time the probe runs before and after the measured work, so both sides of a gap are seen. */
export const PROBE_MARGIN_MS = 1500;
/**
 * The longest wait for the probe's first replies before the work starts anyway. Its Node process
 * takes a few hundred ms to start, over a second on a loaded machine (measured: under a Redis
 * load on the 2 cores, a probe started 500 ms ahead had not connected when the container froze).
 */
export const PROBE_READY_TIMEOUT_MS = 15_000;

/**
 * Runs `work` while `godwit probe` watches `target` from namespace `netns`: once both of the
 * probe's series have had a reply (at most PROBE_READY_TIMEOUT_MS), then `marginMs` (default
 * PROBE_MARGIN_MS) more, `work` starts; the probe is stopped `marginMs` after it has resolved.
 * Resolves with what `work` returned and the probe's report; the probe is stopped when `work`
 * throws too.
 */
export async function probeDuring<T>(
  opts: { bin: string; netns: string; target: string; intervalMs?: number; marginMs?: number },
  work: () => Promise<T>,
): Promise<[T, ProbeReport]> {
  const stop = new AbortController();
  let ready = (): void => undefined;
  const isReady = new Promise<void>((r) => (ready = r));
  const probe = probeInNetns({ ...opts, durationMs: 600_000, signal: stop.signal, onReady: () => ready() });
  probe.catch(() => undefined);
  const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  try {
    const margin = opts.marginMs ?? PROBE_MARGIN_MS;
    await Promise.race([
      isReady,
      probe.then(
        () => undefined,
        () => undefined,
      ),
      pause(PROBE_READY_TIMEOUT_MS),
    ]);
    await pause(margin);
    const out = await work();
    await pause(margin);
    stop.abort();
    return [out, await probe];
  } finally {
    stop.abort();
  }
}
