/**
 * `godwit doctor`: what this machine has and lacks for live migration, each item with a one-line fix.
 * Checks never throw; an unexpected failure inside one becomes that check's detail.
 */
import { existsSync } from 'node:fs';
import { access, open, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { probeCriu, findSystemCriu } from '../criu/provision.js';
import { CRIU_PIPE_BYTES, ensurePipeMaxSize } from '../criu/pipe-size.js';
import { isSupportedCriuVersion, MIN_CRIU_VERSION } from '../criu/version.js';
import { runCommand, which } from './exec.js';
import { kernelOptionEnabled, kernelVersion, readKernelConfig, type KernelConfig } from './kernel.js';
import { nativeSourceSha256, NATIVE_PROGRAMS } from './native-build.js';
import { isExecutable, readToolsRecord, toolPaths, type ToolsRecord } from './tools.js';

/** The verdict of one check: 'degraded' means usable with a limitation the detail names. */
export type DoctorStatus = 'ok' | 'missing' | 'degraded';

/** One line of the doctor's report. */
export interface DoctorCheck {
  id: string;
  title: string;
  status: DoctorStatus;
  /** Whether godwit cannot work without it (an optional item only limits some features). */
  required: boolean;
  detail: string;
  /** One line telling the user how to fix a non-ok item. */
  fix?: string;
}

/** The doctor's verdict: ok when every required check is 'ok'. */
export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
}

/** Options of runDoctor. */
export interface DoctorOptions {
  toolsDir: string;
}

const SETUP_FIX = 'run `godwit setup`';

/** Runs every check (concurrently; each is independent) and returns them in a fixed order. Never throws. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const kconfig = await readKernelConfig().catch(() => undefined);
  const record = await readToolsRecord(opts.toolsDir).catch(() => ({}) as ToolsRecord);
  const checks: Array<[string, string, boolean, () => Promise<Verdict>]> = [
    ['root', 'running as root', true, checkRoot],
    ['namespaces', 'kernel namespaces', true, checkNamespaces],
    ['cgroups', 'cgroups with freezer', true, checkCgroups],
    ['overlayfs', 'overlay filesystem', true, checkOverlay],
    ['checkpoint-restore', 'CONFIG_CHECKPOINT_RESTORE', true, () => checkCheckpointRestore(kconfig)],
    ['userfaultfd', 'userfaultfd (post-copy)', false, () => checkUserfaultfd(kconfig)],
    ['soft-dirty', 'soft-dirty page tracking', false, () => checkSoftDirty(kconfig)],
    ['pipe-max-size', "pipes as large as CRIU's page pipes", false, checkPipeMaxSize],
    ['runc', 'runc', true, checkRunc],
    ['criu', `criu >= ${MIN_CRIU_VERSION}`, true, () => checkCriu(opts.toolsDir)],
    ['iptables-restore', 'iptables-restore', true, checkIptables],
    ['iproute2', 'iproute2 (ip, tc)', true, checkIproute2],
    ['busybox-static', 'busybox-static', true, checkBusybox],
    ['gcc', 'gcc and static libc', true, checkGcc],
    ['native-helpers', 'godwit native helpers', true, () => checkNative(opts.toolsDir, record)],
    ['debootstrap', 'debootstrap', false, checkDebootstrap],
  ];
  const results = await Promise.all(
    checks.map(async ([id, title, required, fn]): Promise<DoctorCheck> => {
      let v: Verdict;
      try {
        v = await fn();
      } catch (err) {
        v = { status: 'missing', detail: `check failed: ${errorMessage(err)}`, fix: SETUP_FIX };
      }
      return {
        id,
        title,
        status: v.status,
        required,
        detail: v.detail,
        ...(v.status !== 'ok' && v.fix !== undefined ? { fix: v.fix } : {}),
      };
    }),
  );
  return { ok: results.every((c) => !c.required || c.status === 'ok'), checks: results };
}

/** The report as a human table: status, item, detail, and a `fix:` line under each item that is not ok. */
export function formatDoctor(report: DoctorReport): string {
  const titleWidth = Math.max(...report.checks.map((c) => label(c).length));
  const lines: string[] = [];
  for (const c of report.checks) {
    lines.push(`${c.status.padEnd(8)}  ${label(c).padEnd(titleWidth)}  ${c.detail}`);
    if (c.status !== 'ok' && c.fix !== undefined) lines.push(`${''.padEnd(10 + titleWidth)}  fix: ${c.fix}`);
  }
  const failed = report.checks.filter((c) => c.required && c.status !== 'ok');
  const limited = report.checks.filter((c) => !c.required && c.status !== 'ok');
  lines.push('');
  if (failed.length === 0) {
    lines.push(
      `ready: all required checks pass` +
        (limited.length > 0 ? ` (limited: ${limited.map((c) => c.id).join(', ')})` : ''),
    );
  } else {
    lines.push(`not ready: ${failed.length} required check(s) failed: ${failed.map((c) => c.id).join(', ')}`);
  }
  return lines.join('\n');
}

function label(c: DoctorCheck): string {
  return c.required ? c.title : `${c.title} (optional)`;
}

interface Verdict {
  status: DoctorStatus;
  detail: string;
  fix?: string;
}

async function checkRoot(): Promise<Verdict> {
  const uid = process.getuid?.();
  return uid === 0
    ? { status: 'ok', detail: 'uid 0' }
    : { status: 'missing', detail: `uid ${uid ?? 'unknown'}`, fix: 'run godwit as root (sudo)' };
}

async function checkNamespaces(): Promise<Verdict> {
  const wanted = ['mnt', 'pid', 'net', 'ipc', 'uts'];
  const missing = wanted.filter((ns) => !existsSync(`/proc/self/ns/${ns}`));
  return missing.length === 0
    ? { status: 'ok', detail: wanted.join(', ') }
    : {
        status: 'missing',
        detail: `no ${missing.join(', ')} namespace`,
        fix: `use a kernel with CONFIG_${missing.map((n) => n.toUpperCase()).join('_NS, CONFIG_')}_NS`,
      };
}

/** Mounts of type cgroup/cgroup2: mount point and super options, from /proc/self/mountinfo. Pure. */
export function parseCgroupMounts(
  mountinfo: string,
): Array<{ mountPoint: string; type: string; options: string[] }> {
  const out: Array<{ mountPoint: string; type: string; options: string[] }> = [];
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (pre === undefined || post === undefined) continue;
    const mountPoint = pre.split(' ')[4];
    const [type, , superOpts] = post.split(' ');
    if (mountPoint === undefined || (type !== 'cgroup' && type !== 'cgroup2')) continue;
    out.push({ mountPoint, type, options: (superOpts ?? '').split(',') });
  }
  return out;
}

async function checkCgroups(): Promise<Verdict> {
  const mounts = parseCgroupMounts(await readFile('/proc/self/mountinfo', 'utf8'));
  const unified = mounts.find((m) => m.type === 'cgroup2' && m.mountPoint === '/sys/fs/cgroup');
  if (unified) {
    const [maj, min] = kernelVersion();
    return maj > 5 || (maj === 5 && min >= 2)
      ? { status: 'ok', detail: 'v2 (unified) at /sys/fs/cgroup, freezer via cgroup.freeze' }
      : { status: 'missing', detail: 'v2 without cgroup.freeze (kernel < 5.2)', fix: 'use kernel >= 5.2' };
  }
  const freezer = mounts.find((m) => m.type === 'cgroup' && m.options.includes('freezer'));
  const v1 = mounts.filter((m) => m.type === 'cgroup');
  if (v1.length === 0) {
    return {
      status: 'missing',
      detail: 'no cgroup filesystem mounted',
      fix: 'mount cgroups (v1 or v2) at /sys/fs/cgroup',
    };
  }
  const hybrid = mounts.find((m) => m.type === 'cgroup2');
  const mode = hybrid ? `v1 hybrid (v2 at ${hybrid.mountPoint})` : 'v1';
  return freezer
    ? { status: 'ok', detail: `${mode}, freezer at ${freezer.mountPoint}` }
    : {
        status: 'missing',
        detail: `${mode} without the freezer controller`,
        fix: 'mount the freezer cgroup controller (CONFIG_CGROUP_FREEZER)',
      };
}

async function checkOverlay(): Promise<Verdict> {
  const fs = await readFile('/proc/filesystems', 'utf8');
  if (/\toverlay$/m.test(fs)) return { status: 'ok', detail: 'overlay in /proc/filesystems' };
  return { status: 'missing', detail: 'overlay not in /proc/filesystems', fix: 'modprobe overlay' };
}

async function checkCheckpointRestore(cfg: KernelConfig | undefined): Promise<Verdict> {
  const on = cfg === undefined ? undefined : kernelOptionEnabled(cfg, 'CONFIG_CHECKPOINT_RESTORE');
  if (on === true) return { status: 'ok', detail: 'enabled in kernel config' };
  if (on === undefined && existsSync('/proc/sys/kernel/ns_last_pid')) {
    return { status: 'ok', detail: 'kernel config unreadable; /proc/sys/kernel/ns_last_pid present' };
  }
  return {
    status: 'missing',
    detail: on === false ? 'not set in kernel config' : 'kernel config unreadable and no ns_last_pid',
    fix: 'use a kernel built with CONFIG_CHECKPOINT_RESTORE=y',
  };
}

async function checkUserfaultfd(cfg: KernelConfig | undefined): Promise<Verdict> {
  const on = cfg === undefined ? undefined : kernelOptionEnabled(cfg, 'CONFIG_USERFAULTFD');
  const sysctl = existsSync('/proc/sys/vm/unprivileged_userfaultfd');
  if (on === true || sysctl) {
    return {
      status: 'ok',
      detail: on === true ? 'CONFIG_USERFAULTFD=y' : '/proc/sys/vm/unprivileged_userfaultfd present',
    };
  }
  return {
    status: 'missing',
    detail: 'no userfaultfd: post-copy (lazy) migration is unavailable',
    fix: 'use a kernel built with CONFIG_USERFAULTFD=y',
  };
}

async function checkSoftDirty(cfg: KernelConfig | undefined): Promise<Verdict> {
  const on = cfg === undefined ? undefined : kernelOptionEnabled(cfg, 'CONFIG_MEM_SOFT_DIRTY');
  if (on === true) return { status: 'ok', detail: 'CONFIG_MEM_SOFT_DIRTY=y' };
  return {
    status: 'degraded',
    detail:
      (on === false ? 'CONFIG_MEM_SOFT_DIRTY not set' : 'kernel config unreadable') +
      ': criu pre-dump is unavailable; godwit tracks dirty pages by content instead',
    fix: 'optional: a kernel with CONFIG_MEM_SOFT_DIRTY=y lets CRIU track dirty pages itself',
  };
}

async function checkPipeMaxSize(): Promise<Verdict> {
  const r = await ensurePipeMaxSize({ raise: false });
  if (r.state === 'enough') return { status: 'ok', detail: `fs.pipe-max-size = ${r.bytes}` };
  return {
    status: 'degraded',
    detail:
      (r.bytes !== undefined ? `fs.pipe-max-size = ${r.bytes}` : 'fs.pipe-max-size unreadable') +
      `: CRIU dumps use ${r.bytes !== undefined ? Math.ceil(CRIU_PIPE_BYTES / r.bytes) : 'several'}× as many page pipes (a 1 GiB dump ~100 ms longer)`,
    fix: `the agent raises it at start (unless --keep-pipe-max-size); or: sysctl -w fs.pipe-max-size=${CRIU_PIPE_BYTES}`,
  };
}

async function checkRunc(): Promise<Verdict> {
  const runc = await which('runc');
  if (runc === undefined)
    return { status: 'missing', detail: 'runc not in PATH', fix: 'apt-get install runc' };
  const res = await runCommand(runc, ['--version'], { timeoutMs: 10_000 });
  const version = /runc version (\S+)/.exec(res.stdout)?.[1];
  if (res.code !== 0 || version === undefined) {
    return { status: 'missing', detail: `${runc} --version failed`, fix: 'apt-get install --reinstall runc' };
  }
  return { status: 'ok', detail: `${version} (${runc})` };
}

async function checkCriu(toolsDir: string): Promise<Verdict> {
  const wrapper = toolPaths(toolsDir).criu;
  const binary = (await isExecutable(wrapper)) ? wrapper : await findSystemCriu(toolsDir);
  if (binary === undefined) return { status: 'missing', detail: 'no criu found', fix: SETUP_FIX };
  const probe = await probeCriu(binary);
  const which = binary === wrapper ? `godwit's wrapper ${wrapper}` : binary;
  if (probe.version === undefined) {
    return {
      status: 'missing',
      detail: `${which} does not run: ${probe.checkLines.join('; ')}`,
      fix: SETUP_FIX,
    };
  }
  if (!isSupportedCriuVersion(probe.version)) {
    return {
      status: 'missing',
      detail: `${probe.version} at ${which} is older than ${MIN_CRIU_VERSION}`,
      fix: `${SETUP_FIX} (it provisions CRIU ${MIN_CRIU_VERSION}+ from Debian testing)`,
    };
  }
  if (!probe.checkOk) {
    return {
      status: 'missing',
      detail: `${probe.version} at ${which}: criu check failed: ${probe.checkLines.join(' | ')}`,
      fix: 'see `criu check` output; the kernel may lack a feature CRIU needs',
    };
  }
  return { status: 'ok', detail: `${probe.version} (${which}), criu check: Looks good` };
}

async function checkIptables(): Promise<Verdict> {
  const path = await which('iptables-restore');
  return path === undefined
    ? {
        status: 'missing',
        detail: 'iptables-restore not in PATH (CRIU locks the network with it)',
        fix: 'apt-get install iptables',
      }
    : { status: 'ok', detail: path };
}

async function checkIproute2(): Promise<Verdict> {
  const [ip, tc] = await Promise.all([which('ip'), which('tc')]);
  if (ip !== undefined && tc !== undefined) return { status: 'ok', detail: `${ip}, ${tc}` };
  const missing = [ip === undefined ? 'ip' : undefined, tc === undefined ? 'tc' : undefined].filter(Boolean);
  return {
    status: 'missing',
    detail: `${missing.join(' and ')} not in PATH`,
    fix: 'apt-get install iproute2',
  };
}

/**
 * True when an ELF image has no PT_INTERP program header (statically linked); undefined when `read` does not yield
 * a valid ELF. `read(offset, length)` returns the file's bytes in that range (fewer at end of file).
 */
export async function elfIsStatic(
  read: (offset: number, length: number) => Promise<Uint8Array>,
): Promise<boolean | undefined> {
  const header = Buffer.from(await read(0, 64));
  if (header.length < 52 || header.readUInt32BE(0) !== 0x7f454c46) return undefined;
  const is64 = header[4] === 2;
  const le = header[5] === 1;
  if (!is64 && header[4] !== 1) return undefined;
  const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  if (is64 && header.length < 64) return undefined;
  const phoff = is64
    ? Number(le ? header.readBigUInt64LE(0x20) : header.readBigUInt64BE(0x20))
    : u32(header, 0x1c);
  const phentsize = u16(header, is64 ? 0x36 : 0x2a);
  const phnum = u16(header, is64 ? 0x38 : 0x2c);
  if (phnum === 0 || phentsize < 4) return phnum === 0 ? true : undefined;
  const table = Buffer.from(await read(phoff, phentsize * phnum));
  if (table.length < phentsize * phnum) return undefined;
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) if (u32(table, i * phentsize) === PT_INTERP) return false;
  return true;
}

/** Reads the ELF file at `path` and reports whether it is statically linked (undefined when not an ELF). */
export async function fileIsStaticElf(path: string): Promise<boolean | undefined> {
  const fh = await open(path, 'r');
  try {
    return await elfIsStatic(async (offset, length) => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    });
  } finally {
    await fh.close();
  }
}

async function checkBusybox(): Promise<Verdict> {
  const path = '/bin/busybox';
  try {
    await access(path);
  } catch {
    return { status: 'missing', detail: `${path} not found`, fix: 'apt-get install busybox-static' };
  }
  const isStatic = await fileIsStaticElf(path);
  if (isStatic === true) return { status: 'ok', detail: `${path}, statically linked` };
  return {
    status: 'missing',
    detail:
      isStatic === false
        ? `${path} is dynamically linked (busybox, not busybox-static)`
        : `${path} is not an ELF`,
    fix: 'apt-get install busybox-static',
  };
}

async function checkGcc(): Promise<Verdict> {
  const gcc = await which('gcc');
  if (gcc === undefined)
    return { status: 'missing', detail: 'gcc not in PATH', fix: 'apt-get install gcc libc6-dev' };
  const [ver, libc] = await Promise.all([
    runCommand(gcc, ['-dumpfullversion'], { timeoutMs: 10_000 }),
    runCommand(gcc, ['-print-file-name=libc.a'], { timeoutMs: 10_000 }),
  ]);
  const printed = libc.stdout.trim();
  const libcPath = printed.startsWith('/') ? resolve(printed) : '';
  if (libcPath === '' || !existsSync(libcPath)) {
    return {
      status: 'missing',
      detail: `gcc ${ver.stdout.trim()} but no static libc.a`,
      fix: 'apt-get install libc6-dev',
    };
  }
  return { status: 'ok', detail: `gcc ${ver.stdout.trim()} (${gcc}), ${libcPath}` };
}

async function checkNative(toolsDir: string, record: ToolsRecord): Promise<Verdict> {
  const paths = toolPaths(toolsDir);
  const problems: string[] = [];
  for (const program of NATIVE_PROGRAMS) {
    const binary = paths[program.key];
    if (!(await isExecutable(binary))) {
      problems.push(`${program.name} not built`);
      continue;
    }
    const recorded = record[program.key]?.sourceSha256;
    let current: string | undefined;
    try {
      current = await nativeSourceSha256(program);
    } catch {
      current = undefined; // sources not shipped: trust the binary
    }
    if (current !== undefined && recorded !== current) problems.push(`${program.name} out of date`);
  }
  return problems.length === 0
    ? { status: 'ok', detail: `${NATIVE_PROGRAMS.map((p) => p.name).join(', ')} in ${paths.binDir}` }
    : { status: 'missing', detail: problems.join(', '), fix: SETUP_FIX };
}

async function checkDebootstrap(): Promise<Verdict> {
  const path = await which('debootstrap');
  return path === undefined
    ? {
        status: 'missing',
        detail: 'not installed; only needed when the system CRIU is too old',
        fix: 'apt-get install debootstrap',
      }
    : { status: 'ok', detail: `${path} (provisions CRIU when the system's is too old)` };
}
