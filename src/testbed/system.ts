/**
 * The machine-level operations a testbed needs: network namespaces, processes found by the
 * namespace they are in, detached daemons, mounts and cgroups. Every short-lived command goes
 * through runCommand/runChecked.
 *
 * Daemons are started with `nsenter --net=/run/netns/NS`, not `ip netns exec`: the latter also
 * puts the process into a private mount namespace whose mounts never propagate back (it makes
 * `/` a slave), so a network namespace the process creates with `ip netns add` — the service
 * network's, for a container — and the container mounts it makes would be invisible to the
 * CLI, to the other agents and to `testbed down`. nsenter changes only the network namespace.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, type Dirent } from 'node:fs';
import { readdir, readFile, realpath, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { runChecked, runCommand, type CommandResult } from '../system/exec.js';

/** Where `ip netns` keeps its namespaces (iproute2's NETNS_RUN_DIR). */
export const NETNS_RUN_DIR = '/run/netns';

/** Path of a named network namespace. */
export function netnsPath(name: string): string {
  return join(NETNS_RUN_DIR, name);
}

/** `ip ARGS`, throwing CommandFailed on a non-zero exit. */
export function ip(args: readonly string[]): Promise<CommandResult> {
  return runChecked('ip', args, { timeoutMs: 15_000 });
}

/** Several `ip` commands in network namespace `netns`, run by one `ip -batch` process. */
export function ipBatch(netns: string, commands: readonly (readonly string[])[]): Promise<CommandResult> {
  const input = commands.map((c) => `${c.join(' ')}\n`).join('');
  return runChecked('ip', ['-n', netns, '-batch', '-'], { timeoutMs: 15_000, input });
}

/** `tc ARGS`, throwing CommandFailed on a non-zero exit. */
export function tc(args: readonly string[]): Promise<CommandResult> {
  return runChecked('tc', args, { timeoutMs: 15_000 });
}

/** Runs `file args` inside network namespace `netns` (and nothing else: same mounts). */
export function runInNetns(
  netns: string,
  file: string,
  args: readonly string[],
  timeoutMs = 15_000,
): Promise<CommandResult> {
  return runCommand('nsenter', [`--net=${netnsPath(netns)}`, '--', file, ...args], { timeoutMs });
}

/** Names of the network namespaces in NETNS_RUN_DIR (including stale, unmounted entries). */
export async function listNetns(): Promise<string[]> {
  try {
    return (await readdir(NETNS_RUN_DIR)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** True when `name` exists and is a mounted namespace (not a stale file). */
export async function netnsExists(name: string): Promise<boolean> {
  return (await netnsId(name)) !== undefined;
}

/**
 * `dev:inode` of a named network namespace, the same string as for /proc/PID/ns/net of its
 * processes; undefined when it does not exist or is not mounted.
 */
export async function netnsId(name: string): Promise<string | undefined> {
  try {
    const [s, proc] = await Promise.all([stat(netnsPath(name)), stat('/proc/self/ns/net')]);
    // A stale entry is a plain file on /run's filesystem, not on nsfs.
    return s.dev === proc.dev ? `${s.dev}:${s.ino}` : undefined;
  } catch {
    return undefined;
  }
}

/** Creates a named network namespace with `lo` up. */
export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  await ip(['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Deletes a named network namespace; also clears a stale entry. Idempotent. */
export async function deleteNetns(name: string): Promise<void> {
  const path = netnsPath(name);
  const res = await runCommand('ip', ['netns', 'delete', name], { timeoutMs: 15_000 });
  if (res.code !== 0) {
    await runCommand('umount', ['-l', path], { timeoutMs: 15_000 });
    await rm(path, { force: true });
  }
}

/** PIDs (other than this process) whose network namespace is one of `ids` (from netnsId). */
export async function processesInNetns(ids: ReadonlySet<string>): Promise<number[]> {
  if (ids.size === 0) return [];
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const s = await stat(`/proc/${pid}/ns/net`);
      if (ids.has(`${s.dev}:${s.ino}`)) pids.push(pid);
    } catch {
      // gone, a zombie, or not ours to inspect
    }
  }
  return pids;
}

/** The network namespace id (`dev:inode`) of a process, or undefined when it is gone. */
export async function processNetnsId(pid: number): Promise<string | undefined> {
  try {
    const s = await stat(`/proc/${pid}/ns/net`);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/** A process's argv, or undefined when it is gone. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((s, i, a) => i < a.length - 1 || s.length > 0);
  } catch {
    return undefined;
  }
}

/** True while `pid` exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    const st = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Sends `signal` to each pid (ignoring those already gone). */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Waits until none of `pids` is alive, up to `timeoutMs`; returns those still alive. */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = [...pids];
  for (;;) {
    const next: number[] = [];
    for (const pid of alive) if (await isAlive(pid)) next.push(pid);
    alive = next;
    if (alive.length === 0 || Date.now() >= deadline) return alive;
    await sleep(50);
  }
}

/** Options of spawnInNetns. */
export interface DetachedOptions {
  /** Stdout and stderr are appended to this file. */
  outFile: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts `file args` detached inside `netns` (nsenter execs it, so the PID is the program's) with
 * stdin from /dev/null and stdout/stderr appended to `outFile`. Returns its PID. It outlives this
 * process. (Not runCommand: that waits for the command to finish.)
 */
export function spawnInNetns(
  netns: string,
  file: string,
  args: readonly string[],
  opts: DetachedOptions,
): Promise<number> {
  const fd = openSync(opts.outFile, 'a', 0o600);
  try {
    const child = spawn('nsenter', [`--net=${netnsPath(netns)}`, '--', file, ...args], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: opts.env ?? process.env,
    });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => {
        child.unref();
        if (child.pid === undefined) reject(new Error(`nsenter ${file}: no pid`));
        else resolve(child.pid);
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** Mount points at or below any of `dirs` in this mount namespace, deepest first. */
export async function mountsUnder(dirs: readonly string[]): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => unescapeMount(l.split(' ')[4] ?? ''))
    .filter((m) => m !== '' && dirs.some((d) => m === d || m.startsWith(d + '/')));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.localeCompare(a));
}

/** Unmounts each mount point (lazily when a plain unmount fails); returns those unmounted. */
export async function unmountAll(points: readonly string[]): Promise<string[]> {
  const done: string[] = [];
  for (const p of points) {
    let res = await runCommand('umount', [p], { timeoutMs: 15_000 });
    if (res.code !== 0) res = await runCommand('umount', ['-l', p], { timeoutMs: 15_000 });
    if (res.code === 0) done.push(p);
  }
  return done;
}

/** The cgroup directories `<mount>/godwit/<hostId>` that exist, for each cgroup mount. */
export async function cgroupDirs(hostIds: readonly string[]): Promise<string[]> {
  const roots = ['/sys/fs/cgroup'];
  try {
    for (const e of await readdir('/sys/fs/cgroup', { withFileTypes: true })) {
      if (e.isDirectory() || e.isSymbolicLink()) roots.push(join('/sys/fs/cgroup', e.name));
    }
  } catch {
    return [];
  }
  const found: string[] = [];
  const seen = new Set<string>();
  for (const root of roots) {
    for (const id of hostIds) {
      const dir = join(root, 'godwit', id);
      try {
        // Controllers mounted together (cpu,cpuacct) show up under several links; count each once.
        const key = await realpath(dir);
        if ((await stat(dir)).isDirectory() && !seen.has(key)) {
          seen.add(key);
          found.push(dir);
        }
      } catch {
        // not in this hierarchy
      }
    }
  }
  return found;
}

/** Every directory under `dir` (inclusive), deepest first. */
async function cgroupTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Dirent[] = [];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await walk(join(d, e.name));
    out.push(d);
  };
  await walk(dir);
  return out;
}

/** PIDs in the cgroups below `dirs`; thaws frozen ones first so that SIGKILL can take effect. */
export async function processesInCgroups(dirs: readonly string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const dir of dirs) {
    for (const d of await cgroupTree(dir)) {
      await writeFile(join(d, 'freezer.state'), 'THAWED').catch(() => undefined);
      await writeFile(join(d, 'cgroup.freeze'), '0').catch(() => undefined);
      const procs = await readFile(join(d, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const l of procs.split('\n')) if (/^\d+$/.test(l.trim())) pids.add(Number(l.trim()));
    }
  }
  pids.delete(process.pid);
  return [...pids];
}

/** Removes the cgroup trees `dirs` (deepest first), retrying while the kernel releases them. */
export async function removeCgroups(dirs: readonly string[]): Promise<string[]> {
  const left: string[] = [];
  for (const dir of dirs) {
    for (const d of await cgroupTree(dir)) {
      let ok = false;
      for (let attempt = 0; attempt < 20 && !ok; attempt++) {
        try {
          await rmdir(d);
          ok = true;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') ok = true;
          else if (code === 'EBUSY') await sleep(50);
          else break;
        }
      }
      if (!ok) left.push(d);
    }
  }
  return left;
}

/** Every interface name in `netns` (or the current one), without the `@peer` suffix. */
export async function linkNames(netns?: string): Promise<string[]> {
  const res = await runCommand('ip', [...(netns ? ['-n', netns] : []), '-o', 'link', 'show'], {
    timeoutMs: 15_000,
  });
  if (res.code !== 0) return [];
  return res.stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined);
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The last lines of a text file, or [] when it cannot be read. */
export async function tailFile(path: string, n: number): Promise<string[]> {
  try {
    return (await readFile(path, 'utf8'))
      .split('\n')
      .map((l) => l.trimEnd())
      .filter(Boolean)
      .slice(-n);
  } catch (err) {
    return [`(cannot read ${path}: ${errorMessage(err)})`];
  }
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
