/**
 * Starts child processes from a small helper process instead of from the caller.
 *
 * Why: Node spawns with fork + exec, and fork copies the parent's page tables, so a spawn costs
 * time in proportion to the parent's resident memory. Measured here: 2 ms from a 47 MB process,
 * 36 ms from one of 1 GB (an agent holding a few migrations' chunks in memory). A checkpoint or
 * a restore runs a dozen commands (runc, the shim, tar, ip, iptables-restore), so an agent's
 * checkpoint + restore grew from 1.0 s to 1.9 s over five migrations. The helper is started
 * while the agent is small and stays small; the agent asks it over an IPC channel.
 *
 * Contract: `run` behaves like spawning directly and waiting for 'close' (exit code, signal,
 * captured stdout/stderr, stdin from `input`), with `timeoutMs` killing the child (SIGKILL).
 * If the helper dies, calls in flight fail with Unavailable and later calls spawn directly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode, FailedPreconditionError, UnavailableError } from '../core/errors.js';

/** What the helper is asked to run. */
export interface SpawnRequest {
  file: string;
  args: readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  /** Start the child in its own process group (a daemonising shim). */
  detached?: boolean;
}

/** What came back. `timedOut`: killed after `timeoutMs`. `spawnError`: it could not start. */
export interface SpawnResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  spawnError?: { code?: string; message: string };
}

/** The helper's program: plain JS, run with `node -e`. */
const HELPER = `
const { spawn } = require('node:child_process');
process.on('message', (m) => {
  let out = '', err = '', timedOut = false, done = false;
  const finish = (r) => { if (!done) { done = true; process.send({ id: m.id, ...r }); } };
  let child;
  try {
    child = spawn(m.file, m.args, {
      cwd: m.cwd, env: m.env || process.env, detached: !!m.detached,
      stdio: [m.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
  } catch (e) { finish({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, spawnError: { code: e.code, message: e.message } }); return; }
  const timer = m.timeoutMs === undefined ? undefined : setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, m.timeoutMs);
  child.stdout.setEncoding('utf8').on('data', (c) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c) => (err += c));
  if (m.input !== undefined) child.stdin.end(Buffer.from(m.input, 'base64'));
  child.on('error', (e) => { if (timer) clearTimeout(timer); finish({ code: null, signal: null, stdout: out, stderr: err, timedOut, spawnError: { code: e.code, message: e.message } }); });
  child.on('close', (code, signal) => { if (timer) clearTimeout(timer); finish({ code, signal, stdout: out, stderr: err, timedOut }); });
  if (m.detached) child.unref();
});
process.on('disconnect', () => process.exit(0));
`;

/** A running helper. */
export class Spawner {
  private readonly pending = new Map<
    number,
    { resolve: (r: SpawnResult) => void; reject: (e: Error) => void }
  >();
  private nextId = 1;
  private dead = false;

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: SpawnResult & { id: number }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.channel()?.unref?.();
      p.resolve(m);
    });
    child.on('exit', () => {
      this.dead = true;
      for (const p of this.pending.values()) {
        p.reject(new UnavailableError(ErrorCode.CommandFailed, 'the spawn helper exited'));
      }
      this.pending.clear();
    });
    // Idle, the helper keeps nothing alive (it exits when the channel closes); with requests
    // in flight the channel is referenced, so their answers are awaited.
    child.unref();
    this.channel()?.unref?.();
  }

  private channel(): { ref?: () => void; unref?: () => void } | undefined {
    return this.child.channel as { ref?: () => void; unref?: () => void } | undefined;
  }

  /** Starts a helper (do it early, while this process is small). */
  static start(): Spawner {
    const child = spawn(process.execPath, ['-e', HELPER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Spawner(child);
  }

  /** Whether the helper still runs. */
  get alive(): boolean {
    return !this.dead;
  }

  run(req: SpawnRequest): Promise<SpawnResult> {
    if (this.dead)
      return Promise.reject(new UnavailableError(ErrorCode.CommandFailed, 'the spawn helper exited'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.channel()?.ref?.();
      this.pending.set(id, { resolve, reject });
      const msg = {
        id,
        file: req.file,
        args: [...req.args],
        ...(req.cwd === undefined ? {} : { cwd: req.cwd }),
        ...(req.env === undefined ? {} : { env: req.env }),
        ...(req.input === undefined ? {} : { input: Buffer.from(req.input).toString('base64') }),
        ...(req.timeoutMs === undefined ? {} : { timeoutMs: req.timeoutMs }),
        ...(req.detached ? { detached: true } : {}),
      };
      const ok = this.child.send(msg, (err) => {
        if (err && this.pending.delete(id))
          reject(new UnavailableError(ErrorCode.CommandFailed, err.message));
      });
      if (!ok && this.dead && this.pending.delete(id)) {
        reject(new UnavailableError(ErrorCode.CommandFailed, 'the spawn helper exited'));
      }
    });
  }

  /** Stops the helper (children it started keep running). */
  close(): void {
    if (!this.dead) this.child.disconnect?.();
  }
}

let shared: Spawner | undefined;

/** Routes `runCommand` and the runtime's spawns of this process through a helper from now on. */
export function useSpawner(): Spawner {
  shared ??= Spawner.start();
  return shared;
}

/** The helper in use, if any and alive. */
export function currentSpawner(): Spawner | undefined {
  return shared?.alive ? shared : undefined;
}

/** Maps a helper's spawn failure to the error a direct spawn would have raised. */
export function spawnFailure(file: string, e: { code?: string; message: string }): Error {
  if (e.code === 'ENOENT') {
    return new FailedPreconditionError(ErrorCode.ToolMissing, `${file}: command not found`, {
      hint: 'run `godwit setup` to install what godwit needs',
    });
  }
  return new UnavailableError(ErrorCode.CommandFailed, `${file}: ${e.message}`);
}
