/**
 * The tools directory, shared by every godwit host on one machine and filled by `godwit setup`:
 *
 *   <toolsDir>/bin/criu            wrapper script; execs the system criu (>= 4.2, passes `criu check`)
 *                                  or the provisioned one
 *   <toolsDir>/criu-root/          debootstrapped Debian testing tree, only when the system criu won't do
 *   <toolsDir>/bin/godwit-shim     compiled from native/godwit-shim.c
 *   <toolsDir>/bin/godwit-memload  compiled (static) from native/godwit-memload.c
 *   <toolsDir>/bin/godwit-counterd compiled (static) from native/godwit-counterd.c
 *   <toolsDir>/bin/godwit-wptrack  compiled from native/godwit-wptrack.c
 *   <toolsDir>/bin/godwit-criu     compiled from native/godwit-criu.c; runc's `--criu` (runs bin/criu)
 *   <toolsDir>/tools.json          what was installed (ToolsRecord)
 *
 * Every file here is replaced by rename, so readers never see a half-written one.
 */
import { existsSync, readFileSync } from 'node:fs';
import { access, constants, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, FailedPreconditionError, InternalError } from '../core/errors.js';
import { isSupportedCriuVersion, MIN_CRIU_VERSION } from '../criu/version.js';
import { which } from './exec.js';

/** The tools directory used when none is given: $GODWIT_TOOLS_DIR, else /var/lib/godwit/tools. */
export function defaultToolsDir(): string {
  return process.env['GODWIT_TOOLS_DIR'] ?? '/var/lib/godwit/tools';
}

/** Where a CRIU binary came from: the host's own package, or a tree debootstrapped from Debian testing. */
export type CriuSource = 'system' | 'debian-testing';

/** tools.json's record of the CRIU behind the wrapper. */
export interface CriuRecord {
  version: string;
  source: CriuSource;
  /** The real criu binary the wrapper runs. */
  binary: string;
  /** The Debian package version (e.g. "4.2.1-1") when known. */
  packageVersion?: string;
  /** ISO timestamp of when this CRIU was chosen or provisioned. */
  provisionedAt: string;
}

/** tools.json's record of a compiled native helper. */
export interface NativeRecord {
  /** sha256 (hex) of the C source the binary was built from. */
  sourceSha256: string;
}

/** The contents of tools.json; a section is absent until its setup step has run. */
export interface ToolsRecord {
  criu?: CriuRecord;
  shim?: NativeRecord;
  memload?: NativeRecord;
  counterd?: NativeRecord;
  wptrack?: NativeRecord;
  criuFront?: NativeRecord;
}

/** Absolute paths of everything inside a tools directory. */
export interface ToolPaths {
  toolsDir: string;
  binDir: string;
  criu: string;
  criuRoot: string;
  shim: string;
  memload: string;
  counterd: string;
  wptrack: string;
  criuFront: string;
  record: string;
}

/** The layout of `toolsDir` (pure; nothing is checked on disk). */
export function toolPaths(toolsDir: string): ToolPaths {
  const binDir = join(toolsDir, 'bin');
  return {
    toolsDir,
    binDir,
    criu: join(binDir, 'criu'),
    criuRoot: join(toolsDir, 'criu-root'),
    shim: join(binDir, 'godwit-shim'),
    memload: join(binDir, 'godwit-memload'),
    counterd: join(binDir, 'godwit-counterd'),
    wptrack: join(binDir, 'godwit-wptrack'),
    criuFront: join(binDir, 'godwit-criu'),
    record: join(toolsDir, 'tools.json'),
  };
}

/** Verified tools, ready to use: every path exists and is executable. */
export interface Tools {
  toolsDir: string;
  /** The CRIU wrapper (<toolsDir>/bin/criu); pass it to runc as `--criu`. */
  criu: string;
  criuVersion: string;
  criuSource: CriuSource;
  /** Absolute path of runc. */
  runc: string;
  shim: string;
  memload: string;
  /** The HTTP counter service (static; copy it into images like memload). */
  counterd: string;
  /** The write tracker (native/godwit-wptrack.c): exact pre-copy dirty pages without soft-dirty. */
  wptrack: string;
  /**
   * The CRIU front (native/godwit-criu.c) to pass to runc as `--criu`: it runs `criu` (the wrapper)
   * but answers runc's version and feature questions from a cache (~10 ms each while stopped).
   */
  criuFront: string;
}

/**
 * Parses tools.json text, validating every field; throws InvalidState on malformed content.
 * Unknown fields are dropped.
 */
export function parseToolsRecord(text: string): ToolsRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new FailedPreconditionError(ErrorCode.InvalidState, `tools.json is not valid JSON`, { cause: err });
  }
  if (!isObject(raw)) throw invalid('not an object');
  const out: ToolsRecord = {};
  if (raw['criu'] !== undefined) {
    const c = raw['criu'];
    if (!isObject(c)) throw invalid('criu is not an object');
    const { version, source, binary, packageVersion, provisionedAt } = c;
    if (typeof version !== 'string' || !/^\d+(\.\d+)*$/.test(version)) throw invalid('criu.version');
    if (source !== 'system' && source !== 'debian-testing') throw invalid('criu.source');
    if (typeof binary !== 'string' || !binary.startsWith('/')) throw invalid('criu.binary');
    if (packageVersion !== undefined && typeof packageVersion !== 'string')
      throw invalid('criu.packageVersion');
    if (typeof provisionedAt !== 'string') throw invalid('criu.provisionedAt');
    out.criu = {
      version,
      source,
      binary,
      ...(packageVersion === undefined ? {} : { packageVersion }),
      provisionedAt,
    };
  }
  for (const key of ['shim', 'memload', 'counterd', 'wptrack', 'criuFront'] as const) {
    const n = raw[key];
    if (n === undefined) continue;
    if (!isObject(n) || typeof n['sourceSha256'] !== 'string' || !/^[0-9a-f]{64}$/.test(n['sourceSha256'])) {
      throw invalid(`${key}.sourceSha256`);
    }
    out[key] = { sourceSha256: n['sourceSha256'] };
  }
  return out;
}

/** tools.json of `toolsDir`, or an empty record when the file does not exist; throws InvalidState when corrupt. */
export async function readToolsRecord(toolsDir: string): Promise<ToolsRecord> {
  let text: string;
  try {
    text = await readFile(toolsPathsRecord(toolsDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  return parseToolsRecord(text);
}

/**
 * Replaces sections of tools.json (read, merge, write to a temp file, rename). A corrupt file is overwritten.
 * Callers serialise through the setup lock.
 */
export async function updateToolsRecord(toolsDir: string, patch: ToolsRecord): Promise<ToolsRecord> {
  let current: ToolsRecord;
  try {
    current = await readToolsRecord(toolsDir);
  } catch {
    current = {};
  }
  const next: ToolsRecord = { ...current, ...patch };
  await mkdir(toolsDir, { recursive: true });
  const path = toolsPathsRecord(toolsDir);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o644 });
  await rename(tmp, path);
  return next;
}

/**
 * The tools recorded in `toolsDir`, after checking that each exists and is executable.
 * Throws ToolMissing (hint: run `godwit setup`) naming everything missing, ToolTooOld when the recorded
 * CRIU is older than MIN_CRIU_VERSION.
 */
export async function loadTools(toolsDir: string = defaultToolsDir()): Promise<Tools> {
  const paths = toolPaths(toolsDir);
  const hint = 'run `godwit setup`';
  let record: ToolsRecord;
  try {
    record = await readToolsRecord(toolsDir);
  } catch (err) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, `${paths.record} is unreadable or corrupt`, {
      cause: err,
      hint,
    });
  }
  const missing: string[] = [];
  if (!record.criu) missing.push(`criu (no record in ${paths.record})`);
  if (!record.shim) missing.push(`godwit-shim (no record in ${paths.record})`);
  if (!record.memload) missing.push(`godwit-memload (no record in ${paths.record})`);
  if (!record.counterd) missing.push(`godwit-counterd (no record in ${paths.record})`);
  for (const [name, path] of [
    ['criu wrapper', paths.criu],
    ['godwit-shim', paths.shim],
    ['godwit-memload', paths.memload],
    ['godwit-counterd', paths.counterd],
    ['godwit-wptrack', paths.wptrack],
    ['godwit-criu', paths.criuFront],
    ...(record.criu ? [['criu binary', record.criu.binary] as const] : []),
  ] as const) {
    if (!(await isExecutable(path))) missing.push(`${name} (${path})`);
  }
  const runc = await which('runc');
  if (runc === undefined) missing.push('runc (not in PATH)');
  if (missing.length > 0 || !record.criu || runc === undefined) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, `godwit tools missing: ${missing.join(', ')}`, {
      hint,
    });
  }
  if (!isSupportedCriuVersion(record.criu.version)) {
    throw new FailedPreconditionError(
      ErrorCode.ToolTooOld,
      `criu ${record.criu.version} (${record.criu.binary}) is older than ${MIN_CRIU_VERSION}`,
      { hint },
    );
  }
  return {
    toolsDir,
    criu: paths.criu,
    criuVersion: record.criu.version,
    criuSource: record.criu.source,
    runc,
    shim: paths.shim,
    memload: paths.memload,
    counterd: paths.counterd,
    wptrack: paths.wptrack,
    criuFront: paths.criuFront,
  };
}

/** The nearest ancestor of `fromDir` (itself included) holding a package.json named "godwit", or undefined. */
export function findProjectRoot(fromDir: string): string | undefined {
  let dir = fromDir;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
        if (isObject(parsed) && parsed['name'] === 'godwit') return dir;
      } catch {
        // not ours; keep climbing
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

let cachedRoot: string | undefined;

/** The godwit project root (found from this module's location, so it works from src/ and dist/); throws Internal if absent. */
export function projectRoot(): string {
  if (cachedRoot === undefined) {
    const root = findProjectRoot(dirname(fileURLToPath(import.meta.url)));
    if (root === undefined) {
      throw new InternalError(
        ErrorCode.Internal,
        'cannot find the godwit project root (package.json named "godwit")',
      );
    }
    cachedRoot = root;
  }
  return cachedRoot;
}

/** The project's native/ directory holding the C sources of godwit's helpers. */
export function nativeDir(): string {
  return join(projectRoot(), 'native');
}

/** True when `path` exists and is executable by this process. */
export async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function toolsPathsRecord(toolsDir: string): string {
  return toolPaths(toolsDir).record;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(what: string): FailedPreconditionError {
  return new FailedPreconditionError(ErrorCode.InvalidState, `tools.json: invalid ${what}`);
}
