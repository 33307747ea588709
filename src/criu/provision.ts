/**
 * Getting a CRIU that works on this kernel: the system's own when it is new enough and passes `criu check`,
 * otherwise Debian testing's, debootstrapped into <toolsDir>/criu-root and run through its own dynamic loader.
 * Either way <toolsDir>/bin/criu is the wrapper everything else calls.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import { lastLines, runCommand, which } from '../system/exec.js';
import {
  isExecutable,
  readToolsRecord,
  toolPaths,
  updateToolsRecord,
  type CriuRecord,
} from '../system/tools.js';
import { compareVersions, isSupportedCriuVersion, MIN_CRIU_VERSION, parseCriuVersion } from './version.js';

/** The mirror used when neither an option, GODWIT_DEBIAN_MIRROR nor the apt sources name a Debian mirror. */
export const DEFAULT_DEBIAN_MIRROR = 'http://deb.debian.org/debian';
/** The Debian suite CRIU is provisioned from (testing at the time of writing; has criu 4.2.1). */
export const CRIU_SUITE = 'forky';
/** debootstrap script used for CRIU_SUITE (bookworm's debootstrap has no script named after it). */
export const DEBOOTSTRAP_SCRIPT = '/usr/share/debootstrap/scripts/sid';

const MARKER = '.godwit-criu-root.json';
const DEBOOTSTRAP_TIMEOUT_MS = 30 * 60_000;
const CRIU_CHECK_TIMEOUT_MS = 2 * 60_000;
const TEMP_PREFIX = '.criu-root.tmp-';
const OLD_PREFIX = '.criu-root.old-';
const CHECK_PREFIX = '.criu-check-';

/** One apt sources file: its path (the extension picks the format) and its text. */
export interface AptSourcesFile {
  path: string;
  text: string;
}

/** One `deb` entry of an apt source. */
interface AptEntry {
  uri: string;
  suite: string;
}

const DEBIAN_SUITES = new Set([
  'buzz', 'rex', 'bo', 'hamm', 'slink', 'potato', 'woody', 'sarge', 'etch', 'lenny', 'squeeze', 'wheezy', 'jessie',
  'stretch', 'buster', 'bullseye', 'bookworm', 'trixie', 'forky', 'duke', 'sid', 'oldoldstable', 'oldstable',
  'stable', 'testing', 'unstable', 'experimental',
]); // prettier-ignore

/**
 * The Debian archive mirror named in apt sources (one-line `.list` and deb822 `.sources` formats), or undefined.
 * Only `deb` entries with a Debian suite count; security archives and third-party repositories are ignored; an entry
 * for a bare codename ("bookworm") wins over "-updates"/"-backports". The URI is returned without a trailing slash. Pure.
 */
export function findDebianMirror(sourcesFiles: readonly AptSourcesFile[]): string | undefined {
  let best: { uri: string; rank: number } | undefined;
  for (const file of sourcesFiles) {
    const deb822 =
      file.path.endsWith('.sources') || (!file.path.endsWith('.list') && /^URIs:/im.test(file.text));
    for (const entry of deb822 ? parseDeb822(file.text) : parseOneLine(file.text)) {
      const rank = rankEntry(entry);
      if (rank > 0 && (best === undefined || rank > best.rank))
        best = { uri: entry.uri.replace(/\/+$/, ''), rank };
    }
  }
  return best?.uri;
}

function rankEntry({ uri, suite }: AptEntry): number {
  if (!/^(https?|ftp):\/\/[^\s/]+/.test(uri) || /debian-security/.test(uri)) return 0;
  if (/-security$|\/updates$/.test(suite)) return 0;
  const base = suite.replace(/-(updates|proposed-updates|backports|backports-sloppy)$/, '');
  if (!DEBIAN_SUITES.has(base)) return 0;
  return base === suite ? 2 : 1;
}

function parseOneLine(text: string): AptEntry[] {
  const out: AptEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) out.push({ uri: m[1], suite: m[2] });
  }
  return out;
}

function parseDeb822(text: string): AptEntry[] {
  const out: AptEntry[] = [];
  const stanzas = text
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('#'))
    .join('\n')
    .split(/\n\s*\n/);
  for (const stanza of stanzas) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line) && last !== undefined) {
        fields.set(last, `${fields.get(last) ?? ''} ${line.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m?.[1] === undefined || m[2] === undefined) continue;
      last = m[1].toLowerCase();
      fields.set(last, m[2].trim());
    }
    const words = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter((w) => w.length > 0);
    if (!words('types').includes('deb')) continue;
    if (/^(no|false|0)$/i.test(fields.get('enabled') ?? 'yes')) continue;
    for (const uri of words('uris')) for (const suite of words('suites')) out.push({ uri, suite });
  }
  return out;
}

/** The host's apt sources: /etc/apt/sources.list and sources.list.d/*.list and *.sources (missing files skipped). */
export async function readSystemAptSources(aptDir = '/etc/apt'): Promise<AptSourcesFile[]> {
  const paths = [join(aptDir, 'sources.list')];
  try {
    const dir = join(aptDir, 'sources.list.d');
    for (const name of (await readdir(dir)).sort()) {
      if (name.endsWith('.list') || name.endsWith('.sources')) paths.push(join(dir, name));
    }
  } catch {
    // no sources.list.d
  }
  const files: AptSourcesFile[] = [];
  for (const path of paths) {
    try {
      files.push({ path, text: await readFile(path, 'utf8') });
    } catch {
      // absent or unreadable: skip
    }
  }
  return files;
}

/** Where a mirror came from. */
export type MirrorSource = 'option' | 'env' | 'apt-sources' | 'default';

/**
 * The Debian mirror to debootstrap from: `explicit`, else $GODWIT_DEBIAN_MIRROR, else the apt sources, else
 * DEFAULT_DEBIAN_MIRROR. Throws InvalidFlag when the chosen value is not an http(s)/ftp URL.
 */
export async function resolveDebianMirror(
  explicit?: string,
): Promise<{ mirror: string; from: MirrorSource }> {
  const env = process.env['GODWIT_DEBIAN_MIRROR'];
  let pick: { mirror: string; from: MirrorSource };
  if (explicit !== undefined && explicit !== '') pick = { mirror: explicit, from: 'option' };
  else if (env !== undefined && env !== '') pick = { mirror: env, from: 'env' };
  else {
    const found = findDebianMirror(await readSystemAptSources());
    pick =
      found === undefined
        ? { mirror: DEFAULT_DEBIAN_MIRROR, from: 'default' }
        : { mirror: found, from: 'apt-sources' };
  }
  if (!/^(https?|ftp):\/\/[^\s/]+\S*$/.test(pick.mirror)) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `invalid Debian mirror ${JSON.stringify(pick.mirror)}`,
      {
        hint: 'give a URL such as http://deb.debian.org/debian (--mirror or GODWIT_DEBIAN_MIRROR)',
      },
    );
  }
  return { mirror: pick.mirror.replace(/\/+$/, ''), from: pick.from };
}

/** What a CRIU binary says about itself. `checkOk` is false (with a reason in checkLines) when check did not run. */
export interface CriuProbe {
  binary: string;
  /** Parsed from `--version`; undefined when it did not run or printed no version. */
  version: string | undefined;
  /** `criu check` exited 0 and said "Looks good". */
  checkOk: boolean;
  /** The decisive lines of `criu check` (errors when it failed, the verdict when it passed). */
  checkLines: string[];
}

/** The decisive lines of `criu check` output: its errors when it failed, the last lines otherwise. Pure. */
export function decisiveCheckLines(output: string, ok: boolean): string[] {
  if (ok) return lastLines(output, 2);
  const errs = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /error|fail|unexpected|not supported|can't|cannot|unable/i.test(l));
  return errs.length > 0 ? errs.slice(0, 8) : lastLines(output, 5);
}

/** Runs `BINARY check`; ok when it exits 0 and prints "Looks good". Never throws for a failing check. */
export async function runCriuCheck(binary: string): Promise<{ ok: boolean; lines: string[] }> {
  try {
    const res = await runCommand(binary, ['check'], { timeoutMs: CRIU_CHECK_TIMEOUT_MS });
    const output = `${res.stdout}\n${res.stderr}`;
    const ok = res.code === 0 && /Looks good/.test(output);
    return { ok, lines: decisiveCheckLines(output, ok) };
  } catch (err) {
    return { ok: false, lines: [errorMessage(err)] };
  }
}

/** `--version` of a CRIU binary, then (only when it is >= MIN_CRIU_VERSION) `criu check`. Never throws. */
export async function probeCriu(binary: string): Promise<CriuProbe> {
  let version: string | undefined;
  try {
    const res = await runCommand(binary, ['--version'], { timeoutMs: 30_000 });
    version = parseCriuVersion(`${res.stdout}\n${res.stderr}`);
    if (version === undefined) {
      return { binary, version, checkOk: false, checkLines: lastLines(`${res.stdout}\n${res.stderr}`, 3) };
    }
  } catch (err) {
    return { binary, version: undefined, checkOk: false, checkLines: [errorMessage(err)] };
  }
  if (!isSupportedCriuVersion(version)) {
    return {
      binary,
      version,
      checkOk: false,
      checkLines: [`criu check not run: ${version} < ${MIN_CRIU_VERSION}`],
    };
  }
  const check = await runCriuCheck(binary);
  return { binary, version, checkOk: check.ok, checkLines: check.lines };
}

/** The first `criu` executable in PATH or the sbin directories whose real path is not inside `excludeDir`. */
export async function findSystemCriu(excludeDir?: string): Promise<string | undefined> {
  const exclude = excludeDir === undefined ? undefined : await realpathOr(excludeDir);
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir.startsWith('/')) continue;
    const candidate = join(dir, 'criu');
    if (!(await isExecutable(candidate))) continue;
    const real = await realpathOr(candidate);
    if (exclude !== undefined && (real === exclude || real.startsWith(`${exclude}/`))) continue;
    return candidate;
  }
  return undefined;
}

/** The system CRIU (not godwit's own wrapper under `excludeDir`) probed for version and `criu check`; undefined if absent. */
export async function probeSystemCriu(opts: { excludeDir?: string } = {}): Promise<CriuProbe | undefined> {
  const binary = await findSystemCriu(opts.excludeDir);
  return binary === undefined ? undefined : probeCriu(binary);
}

/** Quotes a string for a POSIX shell. Pure. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The dynamic loader and library directory of a Debian tree, relative to its root, for a Node `process.arch`. */
export function debianLoader(arch: string = process.arch): { loader: string; triplet: string } {
  if (arch === 'x64') return { loader: 'lib64/ld-linux-x86-64.so.2', triplet: 'x86_64-linux-gnu' };
  if (arch === 'arm64') return { loader: 'lib/ld-linux-aarch64.so.1', triplet: 'aarch64-linux-gnu' };
  throw new FailedPreconditionError(ErrorCode.ToolMissing, `provisioning CRIU is not supported on ${arch}`, {
    hint: `install CRIU >= ${MIN_CRIU_VERSION} on the system instead`,
  });
}

/** The wrapper script that runs the criu of a debootstrapped tree at `root` through that tree's own loader. Pure. */
export function provisionedCriuWrapper(root: string, version: string, arch: string = process.arch): string {
  const { loader, triplet } = debianLoader(arch);
  const libs = `${root}/lib/${triplet}:${root}/usr/lib/${triplet}`;
  return [
    '#!/bin/sh',
    `# godwit: criu ${version} from Debian ${CRIU_SUITE}, provisioned by \`godwit setup\`. Generated; do not edit.`,
    `exec ${shellQuote(`${root}/${loader}`)} --library-path ${shellQuote(libs)} ${shellQuote(`${root}/usr/sbin/criu`)} "$@"`,
    '',
  ].join('\n');
}

/** The wrapper script that runs the system's criu at `binary`. Pure. */
export function systemCriuWrapper(binary: string, version: string): string {
  return [
    '#!/bin/sh',
    `# godwit: the system's criu ${version}, chosen by \`godwit setup\`. Generated; do not edit.`,
    `exec ${shellQuote(binary)} "$@"`,
    '',
  ].join('\n');
}

/** The installed version of `pkg` in a dpkg status file's text, or undefined. Pure. */
export function parseDpkgStatusVersion(statusText: string, pkg: string): string | undefined {
  for (const stanza of statusText.split(/\n\s*\n/)) {
    const field = (name: string): string | undefined =>
      new RegExp(`^${name}:\\s*(.+)$`, 'm').exec(stanza)?.[1]?.trim();
    if (field('Package') !== pkg) continue;
    if (!(field('Status') ?? '').endsWith(' installed')) continue;
    return field('Version');
  }
  return undefined;
}

/** The CRIU behind <toolsDir>/bin/criu after ensureCriu/provisionCriu. */
export interface CriuSetup {
  /** The wrapper path (<toolsDir>/bin/criu). */
  wrapper: string;
  version: string;
  source: CriuRecord['source'];
  /** The real criu binary. */
  binary: string;
  packageVersion?: string;
  /** False when everything was already in place and nothing was written. */
  changed: boolean;
}

/** Options of provisionCriu and ensureCriu. */
export interface ProvisionOptions {
  toolsDir: string;
  /** Debian mirror; default from resolveDebianMirror. */
  mirror?: string;
  log: (line: string) => void;
}

interface TreeMarker {
  criuVersion: string;
  packageVersion?: string;
  mirror: string;
  provisionedAt: string;
}

/**
 * Makes <toolsDir>/bin/criu run Debian testing's CRIU from <toolsDir>/criu-root, debootstrapping that tree first
 * unless a complete one is already there. A new tree is built in a temp dir beside the target, checked
 * (`--version` >= MIN_CRIU_VERSION, `criu check` passes) and only then renamed into place, so an interrupted run
 * never leaves a tree that looks valid. Throws ToolMissing (no debootstrap), SetupFailed (debootstrap failed),
 * ToolTooOld, or CriuCheckFailed with the decisive lines of `criu check`. Callers serialise via the setup lock.
 */
export async function provisionCriu(opts: ProvisionOptions): Promise<CriuSetup> {
  const paths = toolPaths(opts.toolsDir);
  await mkdir(paths.binDir, { recursive: true });
  await removeStaleTemps(opts.toolsDir, opts.log);

  let marker = await readMarker(paths.criuRoot);
  if (marker !== undefined) {
    const probe = await probeTree(paths.criuRoot, opts.toolsDir);
    if (probe.version === undefined) {
      opts.log(
        `setup: criu: existing ${paths.criuRoot} is broken (${probe.checkLines.join('; ')}); provisioning again`,
      );
      marker = undefined;
    } else {
      assertUsable(probe, paths.criuRoot);
      if (probe.version !== marker.criuVersion) marker = { ...marker, criuVersion: probe.version };
    }
  }
  let fresh = false;
  if (marker === undefined) {
    marker = await debootstrapTree(opts, paths.criuRoot);
    fresh = true;
  }
  const binary = join(paths.criuRoot, 'usr/sbin/criu');
  const changedWrapper = await writeFileIfChanged(
    paths.criu,
    provisionedCriuWrapper(paths.criuRoot, marker.criuVersion),
  );
  const version = parseCriuVersion((await runCommand(paths.criu, ['--version'])).stdout);
  if (version === undefined || !isSupportedCriuVersion(version)) {
    throw new FailedPreconditionError(
      ErrorCode.ToolTooOld,
      `${paths.criu} does not report criu >= ${MIN_CRIU_VERSION}`,
      {
        hint: `remove ${paths.criuRoot} and run \`godwit setup\` again`,
      },
    );
  }
  const record: CriuRecord = {
    version,
    source: 'debian-testing',
    binary,
    ...(marker.packageVersion === undefined ? {} : { packageVersion: marker.packageVersion }),
    provisionedAt: marker.provisionedAt,
  };
  const changedRecord = await recordCriu(opts.toolsDir, record);
  return {
    wrapper: paths.criu,
    version,
    source: 'debian-testing',
    binary,
    ...(marker.packageVersion === undefined ? {} : { packageVersion: marker.packageVersion }),
    changed: fresh || changedWrapper || changedRecord,
  };
}

/**
 * Makes <toolsDir>/bin/criu usable: it points at the system criu when that is >= MIN_CRIU_VERSION and passes
 * `criu check`, otherwise at a CRIU provisioned from Debian testing (provisionCriu). Idempotent.
 */
export async function ensureCriu(opts: ProvisionOptions): Promise<CriuSetup> {
  const paths = toolPaths(opts.toolsDir);
  const system = await probeSystemCriu({ excludeDir: opts.toolsDir });
  if (system?.version !== undefined && isSupportedCriuVersion(system.version) && system.checkOk) {
    await mkdir(paths.binDir, { recursive: true });
    const binary = await realpathOr(system.binary);
    const changedWrapper = await writeFileIfChanged(paths.criu, systemCriuWrapper(binary, system.version));
    const previous = await readCriuRecord(opts.toolsDir);
    const same =
      previous?.source === 'system' && previous.binary === binary && previous.version === system.version;
    const changedRecord = await recordCriu(opts.toolsDir, {
      version: system.version,
      source: 'system',
      binary,
      provisionedAt: same && previous ? previous.provisionedAt : new Date().toISOString(),
    });
    return {
      wrapper: paths.criu,
      version: system.version,
      source: 'system',
      binary,
      changed: changedWrapper || changedRecord,
    };
  }
  if (system === undefined) opts.log(`setup: criu: none on the system; using Debian ${CRIU_SUITE}'s`);
  else if (system.version === undefined) {
    opts.log(
      `setup: criu: ${system.binary} does not run (${system.checkLines.join('; ')}); using Debian ${CRIU_SUITE}'s`,
    );
  } else if (!isSupportedCriuVersion(system.version)) {
    opts.log(
      `setup: criu: system criu ${system.version} (${system.binary}) is older than ${MIN_CRIU_VERSION}; using Debian ${CRIU_SUITE}'s`,
    );
  } else {
    opts.log(
      `setup: criu: system criu ${system.version} fails \`criu check\` (${system.checkLines[0] ?? '?'}); using Debian ${CRIU_SUITE}'s`,
    );
  }
  return provisionCriu(opts);
}

function assertUsable(probe: CriuProbe, root: string): void {
  const version = probe.version ?? 'unknown';
  if (compareVersions(version, MIN_CRIU_VERSION) < 0) {
    throw new FailedPreconditionError(
      ErrorCode.ToolTooOld,
      `Debian ${CRIU_SUITE} provides criu ${version} in ${root}, older than the ${MIN_CRIU_VERSION} godwit needs`,
      { hint: `install CRIU >= ${MIN_CRIU_VERSION} on the system, then run \`godwit setup\` again` },
    );
  }
  if (!probe.checkOk) {
    throw new FailedPreconditionError(
      ErrorCode.CriuCheckFailed,
      `criu ${version} fails \`criu check\` on this kernel`,
      {
        details: probe.checkLines,
        hint: 'see the lines above; the kernel may lack a feature CRIU needs (run `godwit doctor`)',
      },
    );
  }
}

async function debootstrapTree(opts: ProvisionOptions, target: string): Promise<TreeMarker> {
  const debootstrap = await which('debootstrap');
  if (debootstrap === undefined) {
    throw new FailedPreconditionError(
      ErrorCode.ToolMissing,
      'debootstrap is needed to provision CRIU but is not installed',
      {
        hint: 'apt-get install debootstrap (or run `godwit setup`, which installs it)',
      },
    );
  }
  if (!existsSync(DEBOOTSTRAP_SCRIPT)) {
    throw new FailedPreconditionError(
      ErrorCode.ToolMissing,
      `debootstrap script ${DEBOOTSTRAP_SCRIPT} not found`,
      {
        hint: 'apt-get install --reinstall debootstrap',
      },
    );
  }
  const { mirror } =
    opts.mirror === undefined ? await resolveDebianMirror() : await resolveDebianMirror(opts.mirror);
  const tmp = join(dirname(target), `${TEMP_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  opts.log(`setup: criu: debootstrapping Debian ${CRIU_SUITE} from ${mirror} into ${target} (about 240 MB)…`);
  const started = performance.now();
  try {
    const res = await runCommand(
      debootstrap,
      ['--variant=minbase', '--include=criu,iptables', CRIU_SUITE, tmp, mirror, DEBOOTSTRAP_SCRIPT],
      { timeoutMs: DEBOOTSTRAP_TIMEOUT_MS, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } },
    );
    if (res.code !== 0) {
      let logTail: string[] = [];
      try {
        logTail = lastLines(await readFile(join(tmp, 'debootstrap/debootstrap.log'), 'utf8'), 4);
      } catch {
        // no log
      }
      throw new UnavailableError(
        ErrorCode.SetupFailed,
        `debootstrap of Debian ${CRIU_SUITE} from ${mirror} failed (exit ${res.code})`,
        {
          details: debootstrapErrors(res.stderr || res.stdout, logTail),
          hint: `check that ${mirror} is reachable, or choose another mirror with --mirror / GODWIT_DEBIAN_MIRROR`,
        },
      );
    }
    opts.log(`setup: criu: debootstrap done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    await unmountUnder(tmp);
    await trimTree(tmp);
    const probe = await probeTree(tmp, opts.toolsDir);
    if (probe.version === undefined) {
      throw new UnavailableError(
        ErrorCode.SetupFailed,
        `the criu debootstrapped from ${mirror} does not run`,
        {
          details: probe.checkLines,
          hint: `run \`godwit setup\` again; if it persists, try another mirror (--mirror)`,
        },
      );
    }
    assertUsable(probe, target);
    const packageVersion = parseDpkgStatusVersion(
      await readFile(join(tmp, 'var/lib/dpkg/status'), 'utf8'),
      'criu',
    );
    const marker: TreeMarker = {
      criuVersion: probe.version,
      ...(packageVersion === undefined ? {} : { packageVersion }),
      mirror,
      provisionedAt: new Date().toISOString(),
    };
    await writeFile(join(tmp, MARKER), `${JSON.stringify(marker, null, 2)}\n`);
    if (existsSync(target)) {
      const old = join(dirname(target), `${OLD_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
      await rename(target, old);
      await rename(tmp, target);
      await removeTree(old);
    } else {
      await rename(tmp, target);
    }
    return marker;
  } finally {
    if (existsSync(tmp)) await removeTree(tmp).catch(() => undefined);
  }
}

/** The decisive lines of a failed debootstrap: its E: lines (else its last lines), then the log's tail. Pure. */
export function debootstrapErrors(output: string, logTail: readonly string[]): string[] {
  const errs = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('E:'));
  const head = errs.length > 0 ? errs.slice(0, 4) : lastLines(output, 4);
  return [...head, ...logTail.filter((l) => !head.includes(l.trim()))];
}

/** Probes the criu of the tree at `root` through a throw-away wrapper (so a tree can be checked before it is in place). */
async function probeTree(root: string, toolsDir: string): Promise<CriuProbe> {
  const path = join(toolsDir, `${CHECK_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(path, provisionedCriuWrapper(root, 'probe'), { mode: 0o755 });
    await chmod(path, 0o755);
    return await probeCriu(path);
  } finally {
    await rm(path, { force: true });
  }
}

async function readMarker(root: string): Promise<TreeMarker | undefined> {
  try {
    const raw: unknown = JSON.parse(await readFile(join(root, MARKER), 'utf8'));
    if (typeof raw !== 'object' || raw === null) return undefined;
    const r = raw as Record<string, unknown>;
    if (typeof r['criuVersion'] !== 'string' || typeof r['mirror'] !== 'string') return undefined;
    if (typeof r['provisionedAt'] !== 'string') return undefined;
    if (!existsSync(join(root, 'usr/sbin/criu'))) return undefined;
    return {
      criuVersion: r['criuVersion'],
      ...(typeof r['packageVersion'] === 'string' ? { packageVersion: r['packageVersion'] } : {}),
      mirror: r['mirror'],
      provisionedAt: r['provisionedAt'],
    };
  } catch {
    return undefined;
  }
}

async function readCriuRecord(toolsDir: string): Promise<CriuRecord | undefined> {
  try {
    return (await readToolsRecord(toolsDir)).criu;
  } catch {
    return undefined;
  }
}

/** Records `record` as tools.json's criu section; returns false when it was already exactly that. */
async function recordCriu(toolsDir: string, record: CriuRecord): Promise<boolean> {
  const previous = await readCriuRecord(toolsDir);
  if (previous !== undefined && JSON.stringify(previous) === JSON.stringify(record)) return false;
  await updateToolsRecord(toolsDir, { criu: record });
  return true;
}

/** Atomically writes an executable file unless it already has exactly this content; returns whether it wrote. */
async function writeFileIfChanged(path: string, content: string): Promise<boolean> {
  try {
    if ((await readFile(path, 'utf8')) === content && (await isExecutable(path))) return false;
  } catch {
    // absent
  }
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, content, { mode: 0o755 });
  await chmod(tmp, 0o755);
  await rename(tmp, path);
  return true;
}

/** Drops apt's downloaded packages and lists (about 100 MB) from a fresh tree; dpkg's status stays. */
async function trimTree(root: string): Promise<void> {
  for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    let names: string[] = [];
    try {
      names = await readdir(join(root, dir));
    } catch {
      continue;
    }
    for (const name of names) {
      if (name === 'partial' || name === 'lock') continue;
      await rm(join(root, dir, name), { recursive: true, force: true });
    }
  }
  for (const name of await readdir(join(root, 'var/cache/apt')).catch(() => [] as string[])) {
    if (name.endsWith('.bin')) await rm(join(root, 'var/cache/apt', name), { force: true });
  }
}

/** Removes temp and old trees left by runs that died (their pid is gone). */
async function removeStaleTemps(toolsDir: string, log: (line: string) => void): Promise<void> {
  let names: string[];
  try {
    names = await readdir(toolsDir);
  } catch {
    return;
  }
  for (const name of names) {
    const prefix = [TEMP_PREFIX, OLD_PREFIX, CHECK_PREFIX].find((p) => name.startsWith(p));
    if (prefix === undefined) continue;
    const pid = Number.parseInt(name.slice(prefix.length), 10);
    if (Number.isNaN(pid) || pid === process.pid || isAlive(pid)) continue;
    if (prefix !== CHECK_PREFIX)
      log(`setup: criu: removing ${join(toolsDir, name)} left by an interrupted run`);
    await removeTree(join(toolsDir, name));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Mount points at or below `dir`, deepest first, from /proc/self/mountinfo. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_m, oct: string) =>
      String.fromCharCode(Number.parseInt(oct, 8)),
    );
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Unmounts (lazily) whatever debootstrap left mounted below `dir`; throws if something stays mounted. */
async function unmountUnder(dir: string): Promise<void> {
  for (const mp of await mountsUnder(dir)) await runCommand('umount', ['-l', mp]);
  const left = await mountsUnder(dir);
  if (left.length > 0) {
    throw new UnavailableError(ErrorCode.SetupFailed, `cannot unmount ${left.join(', ')}`, {
      hint: `unmount them by hand, then remove ${dir}`,
    });
  }
}

/** Removes a tree after unmounting anything below it (never deletes through a mount such as /proc or /dev). */
async function removeTree(dir: string): Promise<void> {
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true });
}

async function realpathOr(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return path;
  }
}
