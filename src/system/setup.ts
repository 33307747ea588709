/**
 * `godwit setup`: installs and builds everything godwit needs into a tools directory. Idempotent, and safe when
 * several processes run it at once (they serialise on a lock file in the tools directory).
 */
import { link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ErrorCategory,
  ErrorCode,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
  isGodwitError,
  type GodwitError,
  type GodwitErrorOptions,
} from '../core/errors.js';
import { ensureCriu } from '../criu/provision.js';
import { ensurePackages } from './apt.js';
import { buildNative } from './native-build.js';
import { loadTools, toolPaths, type Tools } from './tools.js';

/** The setup steps, in the order they run. */
export const SETUP_STEPS = ['root', 'packages', 'criu', 'native'] as const;
/** One setup step's name. */
export type SetupStepName = (typeof SETUP_STEPS)[number];

/** Debian packages godwit needs on every host (CRIU itself is handled by the 'criu' step). */
export const REQUIRED_PACKAGES: readonly string[] = [
  'runc',
  'iptables',
  'iproute2',
  'busybox-static',
  'debootstrap',
  'gcc',
  'libc6-dev',
  'ca-certificates',
  // The benchmark suite (`godwit bench`): zstd for the by-hand baseline's tar stream; Redis
  // (redis-tools carries the server binary as redis-check-rdb, without a host service) and
  // redis-benchmark for the Redis workload; a font for the charts' PNG rendering.
  'zstd',
  'redis-tools',
  'fonts-dejavu-core',
  'podman', // the Podman checkpoint/restore baseline of `godwit bench` (src/bench/podman-baseline.ts)
];

/** How one step went: 'already' means nothing needed doing. */
export interface SetupStepReport {
  step: SetupStepName;
  status: 'done' | 'already' | 'failed';
  detail: string;
  durationMs: number;
}

/** The outcome of a successful setup. */
export interface SetupReport {
  toolsDir: string;
  steps: SetupStepReport[];
  /** The verified tools, as loadTools returns them. */
  tools: Tools;
  durationMs: number;
}

/** Options of runSetup. */
export interface SetupOptions {
  toolsDir: string;
  /** Debian mirror to provision CRIU from; default: $GODWIT_DEBIAN_MIRROR, else the apt sources. */
  mirror?: string;
  /** Receives one human line per action ("setup: …"). */
  log: (line: string) => void;
  /** How long to wait for another setup holding the lock; default 30 minutes. */
  lockTimeoutMs?: number;
}

/**
 * Runs the steps in SETUP_STEPS order under the tools directory's lock and returns their reports with the verified
 * tools. A failing step throws SetupFailed (in the failing cause's category) naming the step, with a hint and the
 * cause's details; nothing after it runs.
 */
export async function runSetup(opts: SetupOptions): Promise<SetupReport> {
  const started = performance.now();
  const steps: SetupStepReport[] = [];
  const run = async (
    step: SetupStepName,
    fn: () => Promise<{ status: 'done' | 'already'; detail: string }>,
  ) => {
    const t0 = performance.now();
    try {
      const { status, detail } = await fn();
      steps.push({ step, status, detail, durationMs: performance.now() - t0 });
    } catch (err) {
      steps.push({ step, status: 'failed', detail: errorMessage(err), durationMs: performance.now() - t0 });
      opts.log(`setup: ${step} failed: ${errorMessage(err)}`);
      throw setupError(step, err);
    }
  };

  await run('root', async () => {
    const uid = process.getuid?.();
    if (uid !== 0) {
      throw new FailedPreconditionError(
        ErrorCode.NotRoot,
        `setup must run as root (uid is ${uid ?? 'unknown'})`,
        {
          hint: 'run `sudo godwit setup`',
        },
      );
    }
    return { status: 'already', detail: 'running as root' };
  });

  await mkdir(opts.toolsDir, { recursive: true, mode: 0o755 });
  const lock = await acquireLock(join(opts.toolsDir, '.setup.lock'), {
    timeoutMs: opts.lockTimeoutMs ?? 30 * 60_000,
    onWait: (holder) => opts.log(`setup: waiting for another setup (pid ${holder}) to finish…`),
  });
  try {
    await run('packages', async () => {
      const { installed } = await ensurePackages(REQUIRED_PACKAGES, opts.log);
      if (installed.length === 0) {
        opts.log(`setup: packages ok (${REQUIRED_PACKAGES.join(', ')})`);
        return { status: 'already', detail: `all ${REQUIRED_PACKAGES.length} packages installed` };
      }
      opts.log(`setup: installed ${installed.join(', ')}`);
      return { status: 'done', detail: `installed ${installed.join(', ')}` };
    });

    await run('criu', async () => {
      const criu = await ensureCriu({
        toolsDir: opts.toolsDir,
        ...(opts.mirror === undefined ? {} : { mirror: opts.mirror }),
        log: opts.log,
      });
      const source = criu.source === 'system' ? `system, ${criu.binary}` : 'provisioned';
      opts.log(`setup: criu ${criu.version} ok (${source}, ${criu.wrapper})`);
      return {
        status: criu.changed ? 'done' : 'already',
        detail: `criu ${criu.version} (${criu.source}${criu.packageVersion ? ` ${criu.packageVersion}` : ''}) via ${criu.wrapper}`,
      };
    });

    await run('native', async () => {
      const results = await buildNative({ toolsDir: opts.toolsDir, log: opts.log });
      const built = results.filter((r) => r.built).map((r) => r.name);
      opts.log(
        `setup: native helpers ok (${results.map((r) => r.name).join(', ')} in ${toolPaths(opts.toolsDir).binDir})`,
      );
      return built.length > 0
        ? { status: 'done', detail: `built ${built.join(', ')}` }
        : { status: 'already', detail: `${results.map((r) => r.name).join(', ')} up to date` };
    });

    const tools = await loadTools(opts.toolsDir);
    return { toolsDir: opts.toolsDir, steps, tools, durationMs: performance.now() - started };
  } finally {
    await lock.release();
  }
}

const STEP_HINTS: Record<SetupStepName, string> = {
  root: 'run `sudo godwit setup`',
  packages: 'check network access to the apt mirrors, then run `godwit setup` again',
  criu: 'check access to the Debian mirror (choose one with --mirror or GODWIT_DEBIAN_MIRROR), then run `godwit setup` again',
  native: 'install gcc and libc6-dev (apt-get install gcc libc6-dev), then run `godwit setup` again',
};

function setupError(step: SetupStepName, cause: unknown): GodwitError {
  const message = `setup step '${step}' failed: ${errorMessage(cause)}`;
  const options: GodwitErrorOptions = {
    cause,
    hint: (isGodwitError(cause) ? cause.hint : undefined) ?? STEP_HINTS[step],
    details: isGodwitError(cause) ? cause.details : [],
  };
  const category = isGodwitError(cause) ? cause.category : ErrorCategory.Internal;
  switch (category) {
    case ErrorCategory.FailedPrecondition:
    case ErrorCategory.NotFound:
    case ErrorCategory.AlreadyExists:
      return new FailedPreconditionError(ErrorCode.SetupFailed, message, options);
    case ErrorCategory.InvalidArgument:
      return new InvalidArgumentError(ErrorCode.SetupFailed, message, options);
    case ErrorCategory.Unavailable:
      return new UnavailableError(ErrorCode.SetupFailed, message, options);
    default:
      return new InternalError(ErrorCode.SetupFailed, message, options);
  }
}

/** A held lock file; release() removes it (only if it is still ours) and never throws. */
export interface HeldLock {
  path: string;
  release(): Promise<void>;
}

/** Options of acquireLock. */
export interface AcquireLockOptions {
  /** Give up (Timeout error) after this long; default 30 minutes. */
  timeoutMs?: number;
  /** Poll interval while another live process holds the lock; default 250 ms. */
  pollMs?: number;
  /** Called once, with the holder's pid, when the lock is busy. */
  onWait?: (holderPid: number) => void;
}

interface LockOwner {
  pid: number;
  /** The holder's start time (field 22 of /proc/PID/stat), so a reused pid is not mistaken for the holder. */
  startTime: string | undefined;
  token: string;
}

/**
 * Takes an exclusive lock by creating `path` with O_EXCL ('wx'), writing our pid and start time into it. When the
 * file exists and its owner process is gone (or the pid now belongs to another process), the stale lock is broken;
 * otherwise this waits. Throws Timeout after `timeoutMs`.
 */
export async function acquireLock(path: string, opts: AcquireLockOptions = {}): Promise<HeldLock> {
  const timeoutMs = opts.timeoutMs ?? 30 * 60_000;
  const pollMs = opts.pollMs ?? 250;
  const deadline = performance.now() + timeoutMs;
  const me: LockOwner = {
    pid: process.pid,
    startTime: await processStartTime(process.pid),
    token: `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`,
  };
  let warned = false;
  for (;;) {
    try {
      const fh = await open(path, 'wx', 0o644);
      try {
        await fh.writeFile(`${JSON.stringify(me)}\n`);
      } finally {
        await fh.close();
      }
      return { path, release: () => releaseLock(path, me.token) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = await readOwner(path);
    if (holder === 'gone') continue;
    if (holder === undefined || !(await ownerAlive(holder))) {
      if (holder !== undefined || (await olderThan(path, 5_000))) {
        await breakStaleLock(path);
        continue;
      }
    }
    if (!warned && holder !== undefined) {
      warned = true;
      opts.onWait?.(holder.pid);
    }
    if (performance.now() >= deadline) {
      throw new UnavailableError(
        ErrorCode.Timeout,
        `lock ${path} still held by pid ${holder?.pid ?? '?'} after ${timeoutMs} ms`,
        {
          hint: `wait for that process to finish, or remove ${path} if it is not running`,
        },
      );
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined | 'gone'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
  try {
    const raw: unknown = JSON.parse(text);
    if (typeof raw !== 'object' || raw === null) return undefined;
    const r = raw as Record<string, unknown>;
    if (typeof r['pid'] !== 'number' || !Number.isInteger(r['pid']) || r['pid'] <= 0) return undefined;
    if (typeof r['token'] !== 'string') return undefined;
    return {
      pid: r['pid'],
      startTime: typeof r['startTime'] === 'string' ? r['startTime'] : undefined,
      token: r['token'],
    };
  } catch {
    return undefined; // being written right now, or garbage
  }
}

async function ownerAlive(owner: LockOwner): Promise<boolean> {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (owner.startTime === undefined) return true;
  const now = await processStartTime(owner.pid);
  return now === undefined || now === owner.startTime;
}

/** Field 22 (starttime) of /proc/PID/stat, or undefined when unreadable. */
async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

async function olderThan(path: string, ms: number): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > ms;
  } catch {
    return false;
  }
}

/**
 * Moves a stale lock aside (rename is atomic, so only one breaker wins) and checks that what it moved is still the
 * stale lock; if another process had meanwhile taken a fresh lock, that lock is put back.
 */
async function breakStaleLock(path: string): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = await readOwner(aside);
  const live =
    moved === undefined ? !(await olderThan(aside, 5_000)) : moved !== 'gone' && (await ownerAlive(moved));
  if (live) {
    try {
      await link(aside, path);
    } catch {
      // someone else holds the lock now; theirs stands
    }
  }
  await unlink(aside).catch(() => undefined);
}

async function releaseLock(path: string, token: string): Promise<void> {
  try {
    const owner = await readOwner(path);
    if (owner !== 'gone' && owner?.token === token) await unlink(path);
  } catch {
    // never throw from release
  }
}
