import { spawn } from 'node:child_process';
import { ErrorCode, FailedPreconditionError, UnavailableError } from '../core/errors.js';
import { currentSpawner, spawnFailure } from './spawner.js';

/** Outcome of a finished command. */
export interface CommandResult {
  code: number;
  /** Set when the process was killed by a signal. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Options of `runCommand`. */
export interface RunCommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Data written to stdin, which is then closed. Default: stdin is /dev/null. */
  input?: string | Buffer;
  /** Kill the process (SIGKILL) after this many ms and fail with a Timeout error. */
  timeoutMs?: number;
  /** Inherit stdio instead of capturing (output then is empty strings). */
  inherit?: boolean;
  /** Called with each chunk of stderr/stdout as it arrives (for progress). */
  onOutput?: (chunk: string, stream: 'stdout' | 'stderr') => void;
}

/**
 * Runs a command to completion. Never throws for a non-zero exit: the caller decides.
 * Throws ToolMissing when the executable does not exist, Timeout when `timeoutMs` passes.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  opts: RunCommandOptions = {},
): Promise<CommandResult> {
  const started = performance.now();
  // In a process that uses a spawn helper (the agent), plain captured runs go through it.
  const helper = opts.inherit || opts.onOutput ? undefined : currentSpawner();
  if (helper) {
    return helper
      .run({
        file,
        args,
        ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
        ...(opts.env === undefined ? {} : { env: opts.env }),
        ...(opts.input === undefined ? {} : { input: opts.input }),
        ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      })
      .then((r) => {
        if (r.spawnError) throw spawnFailure(file, r.spawnError);
        if (r.timedOut) {
          throw new UnavailableError(
            ErrorCode.Timeout,
            `${file} ${args.join(' ')}: timed out after ${opts.timeoutMs} ms`,
          );
        }
        return {
          code: r.code ?? 128,
          signal: r.signal,
          stdout: r.stdout,
          stderr: r.stderr,
          durationMs: performance.now() - started,
        };
      });
  }
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: opts.inherit ? 'inherit' : [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      opts.onOutput?.(c, 'stdout');
    });
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      opts.onOutput?.(c, 'stderr');
    });
    if (opts.input !== undefined && child.stdin) child.stdin.end(opts.input);
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (err.code === 'ENOENT') {
        reject(
          new FailedPreconditionError(ErrorCode.ToolMissing, `${file}: command not found`, {
            cause: err,
            hint: 'run `godwit setup` to install what godwit needs',
          }),
        );
      } else reject(new UnavailableError(ErrorCode.CommandFailed, `${file}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (timedOut) {
        reject(
          new UnavailableError(
            ErrorCode.Timeout,
            `${file} ${args.join(' ')}: timed out after ${opts.timeoutMs} ms`,
          ),
        );
        return;
      }
      resolve({ code: code ?? 128, signal, stdout, stderr, durationMs: performance.now() - started });
    });
  });
}

/** Like `runCommand`, but throws CommandFailed (quoting stderr's last lines) on a non-zero exit. */
export async function runChecked(
  file: string,
  args: readonly string[],
  opts: RunCommandOptions = {},
): Promise<CommandResult> {
  const res = await runCommand(file, args, opts);
  if (res.code !== 0) {
    const tail = lastLines(res.stderr || res.stdout, 5);
    throw new UnavailableError(ErrorCode.CommandFailed, `${file} ${args.join(' ')} exited with ${res.code}`, {
      details: tail,
    });
  }
  return res;
}

/** The last `n` non-empty lines of a text. */
export function lastLines(text: string, n: number): string[] {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0)
    .slice(-n);
}

/** Absolute path of an executable found in PATH (plus the sbin dirs root expects), or undefined. */
export async function which(name: string): Promise<string | undefined> {
  const { access, constants } = await import('node:fs/promises');
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = `${dir}/${name}`;
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
