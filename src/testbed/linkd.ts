/**
 * godwit-linkd, the host network's switch with per-pair delay and loss (see native/godwit-linkd.c
 * beside this file and shaping.ts): compiled on first use into <toolsDir>/testbed/, keyed by the
 * source's sha256, and started detached in the switch namespace.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FailedPreconditionError, UnavailableError } from '../core/errors.js';
import { lastLines, runCommand, which } from '../system/exec.js';
import { isExecutable, projectRoot } from '../system/tools.js';
import { isAlive, sleep, spawnInNetns, tailFile } from './system.js';

/** The C source of godwit-linkd. */
export function linkdSource(): string {
  return join(projectRoot(), 'src', 'testbed', 'native', 'godwit-linkd.c');
}

/**
 * Path of a godwit-linkd built from the current source, compiling it with gcc when the binary is
 * missing or was built from another source. Throws ToolMissing without gcc, NativeBuildFailed
 * when it does not compile.
 */
export async function ensureLinkd(
  toolsDir: string,
  log: (line: string) => void = () => undefined,
): Promise<string> {
  const source = linkdSource();
  const sha = createHash('sha256')
    .update(await readFile(source))
    .digest('hex');
  const dir = join(toolsDir, 'testbed');
  const binary = join(dir, 'godwit-linkd');
  const stamp = `${binary}.sha256`;
  const built = await readFile(stamp, 'utf8').catch(() => '');
  if (built.trim() === sha && (await isExecutable(binary))) return binary;

  const gcc = await which('gcc');
  if (gcc === undefined) {
    throw new FailedPreconditionError(ErrorCode.ToolMissing, 'gcc is needed to build godwit-linkd', {
      hint: 'run `godwit setup` (it installs gcc)',
    });
  }
  log(`building godwit-linkd into ${dir}`);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${binary}.tmp-${randomBytes(4).toString('hex')}`;
  const res = await runCommand(gcc, ['-O2', '-Wall', '-o', tmp, source], { timeoutMs: 120_000 });
  if (res.code !== 0) {
    await rm(tmp, { force: true });
    throw new FailedPreconditionError(ErrorCode.NativeBuildFailed, `gcc could not build ${source}`, {
      details: lastLines(res.stderr, 8),
    });
  }
  await chmod(tmp, 0o755);
  await rename(tmp, binary);
  await writeFile(`${stamp}.tmp`, sha + '\n');
  await rename(`${stamp}.tmp`, stamp);
  return binary;
}

/**
 * Starts godwit-linkd with `args` in `netns`, logging to `logFile`, and waits (up to 5 s) until
 * it reports ready. Returns its PID. Throws CommandFailed (quoting its log) when it exits or
 * does not get ready.
 */
export async function startLinkd(
  binary: string,
  netns: string,
  args: readonly string[],
  logFile: string,
): Promise<number> {
  const pid = await spawnInNetns(netns, binary, args, { outFile: logFile });
  const deadline = Date.now() + 5_000;
  for (;;) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    if (/^godwit-linkd ready/m.test(text)) return pid;
    if (!(await isAlive(pid)) || Date.now() > deadline) {
      throw new UnavailableError(ErrorCode.CommandFailed, `godwit-linkd did not start in ${netns}`, {
        details: await tailFile(logFile, 5),
      });
    }
    await sleep(20);
  }
}
