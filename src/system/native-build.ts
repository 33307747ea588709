import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FailedPreconditionError } from '../core/errors.js';
import { lastLines, runCommand, which } from './exec.js';
import {
  isExecutable,
  nativeDir,
  readToolsRecord,
  toolPaths,
  updateToolsRecord,
  type ToolsRecord,
} from './tools.js';

/** A native helper godwit compiles at setup: its tools.json key, binary name, source file and gcc flags. */
export interface NativeProgram {
  key: 'shim' | 'memload' | 'counterd' | 'wptrack' | 'criuFront';
  name: string;
  source: string;
  flags: readonly string[];
}

/**
 * The helpers built into <toolsDir>/bin: the container shim, the write tracker and the CRIU front
 * (dynamic), the
 * memory workload and the HTTP counter service (static, so they run inside the busybox image).
 */
export const NATIVE_PROGRAMS: readonly NativeProgram[] = [
  { key: 'shim', name: 'godwit-shim', source: 'godwit-shim.c', flags: ['-O2', '-Wall'] },
  { key: 'memload', name: 'godwit-memload', source: 'godwit-memload.c', flags: ['-O2', '-Wall', '-static'] },
  {
    key: 'counterd',
    name: 'godwit-counterd',
    source: 'godwit-counterd.c',
    flags: ['-O2', '-Wall', '-static'],
  },
  { key: 'wptrack', name: 'godwit-wptrack', source: 'godwit-wptrack.c', flags: ['-O2', '-Wall'] },
  { key: 'criuFront', name: 'godwit-criu', source: 'godwit-criu.c', flags: ['-O2', '-Wall'] },
];

/** Outcome for one helper. */
export interface NativeBuildResult {
  name: string;
  binary: string;
  sourceSha256: string;
  /** False when the binary was already built from this exact source. */
  built: boolean;
}

/** Options of buildNative. */
export interface BuildNativeOptions {
  toolsDir: string;
  log: (line: string) => void;
  /** Directory holding the C sources; default: the project's native/. */
  sourceDir?: string;
  /** Only these helpers (tests: one helper without the static builds); default all. */
  only?: readonly NativeProgram['key'][];
}

/**
 * sha256 (hex) of what a helper is compiled from: its .c file, then every native/*.h header (sorted by name;
 * each hashed as its name, a NUL, its length, a NUL and its contents), so editing a shared header rebuilds.
 */
export async function nativeSourceSha256(
  program: NativeProgram,
  sourceDir: string = nativeDir(),
): Promise<string> {
  const hash = createHash('sha256').update(await readFile(join(sourceDir, program.source)));
  const headers = (await readdir(sourceDir)).filter((name) => name.endsWith('.h')).sort();
  for (const name of headers) {
    const contents = await readFile(join(sourceDir, name));
    hash.update(`\0${name}\0${contents.length}\0`).update(contents);
  }
  return hash.digest('hex');
}

/**
 * Compiles each NATIVE_PROGRAMS helper into <toolsDir>/bin (into a temp file, then renamed) and records its source
 * sha256 in tools.json; a helper whose binary exists and whose recorded sha256 matches the source is skipped.
 * Throws ToolMissing without gcc, NativeBuildFailed with gcc's errors when compilation fails.
 */
export async function buildNative(opts: BuildNativeOptions): Promise<NativeBuildResult[]> {
  const sourceDir = opts.sourceDir ?? nativeDir();
  const binDir = toolPaths(opts.toolsDir).binDir;
  await mkdir(binDir, { recursive: true });
  let record: ToolsRecord;
  try {
    record = await readToolsRecord(opts.toolsDir);
  } catch {
    record = {};
  }
  const results: NativeBuildResult[] = [];
  for (const program of NATIVE_PROGRAMS) {
    if (opts.only && !opts.only.includes(program.key)) continue;
    const source = join(sourceDir, program.source);
    const binary = join(binDir, program.name);
    const sha = await nativeSourceSha256(program, sourceDir);
    if (record[program.key]?.sourceSha256 === sha && (await isExecutable(binary))) {
      results.push({ name: program.name, binary, sourceSha256: sha, built: false });
      continue;
    }
    const gcc = await which('gcc');
    if (gcc === undefined) {
      throw new FailedPreconditionError(
        ErrorCode.ToolMissing,
        `gcc is needed to build ${program.name} but is not installed`,
        {
          hint: 'apt-get install gcc libc6-dev (or run `godwit setup`)',
        },
      );
    }
    opts.log(`setup: compiling ${program.name} (gcc ${program.flags.join(' ')})…`);
    const tmp = `${binary}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      const res = await runCommand(gcc, [...program.flags, '-o', tmp, source], { timeoutMs: 5 * 60_000 });
      if (res.code !== 0) {
        const errors = res.stderr.split('\n').filter((l) => /error|undefined reference|cannot find/i.test(l));
        throw new FailedPreconditionError(
          ErrorCode.NativeBuildFailed,
          `gcc failed to build ${program.name} from ${source}`,
          {
            details: errors.length > 0 ? errors.slice(0, 8) : lastLines(res.stderr, 6),
            hint: program.flags.includes('-static')
              ? 'a static build needs libc6-dev (apt-get install libc6-dev)'
              : 'apt-get install gcc libc6-dev',
          },
        );
      }
      await chmod(tmp, 0o755);
      await rename(tmp, binary);
    } finally {
      await rm(tmp, { force: true });
    }
    await updateToolsRecord(opts.toolsDir, { [program.key]: { sourceSha256: sha } });
    record = { ...record, [program.key]: { sourceSha256: sha } };
    results.push({ name: program.name, binary, sourceSha256: sha, built: true });
  }
  return results;
}
