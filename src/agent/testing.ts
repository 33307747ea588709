/**
 * Test helpers for code that talks to an agent: raw HTTP requests (to send what a well-
 * behaved client never would) and an in-memory ContainerRuntime to serve without root.
 */
import { request } from 'node:http';
import { AlreadyExistsError, ErrorCode, FailedPreconditionError, NotFoundError } from '../core/errors.js';
import {
  ContainerStatus,
  type CheckpointOptions,
  type CheckpointResult,
  type ContainerInfo,
  type ContainerRuntime,
  type ExecResult,
  type RestoreOptions,
  type RestoreResult,
  type RunSpec,
} from '../core/runtime.js';
import { validateName } from '../runtime/state-dir.js';

/** A response as received, body undecoded. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, when it is JSON. */
  json: unknown;
}

/** Sends one request over a fresh connection. `body` is sent as is (no content-type unless given). */
export function rawRequest(
  target: { socketPath: string } | { host: string; port: number },
  method: string,
  path: string,
  opts: { headers?: Record<string, string | number>; body?: string | Buffer; chunked?: boolean } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, method, path, headers: opts.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text) as unknown;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (opts.body !== undefined && opts.chunked) {
      // Without Content-Length: the server only learns the size by reading.
      const buf = Buffer.from(opts.body);
      const step = 64 * 1024;
      for (let i = 0; i < buf.length; i += step) req.write(buf.subarray(i, i + step));
      req.end();
    } else req.end(opts.body);
  });
}

/** Error message of a godwit error body, or undefined. */
export function errorOf(
  res: RawResponse,
): { code: string; category: string; message: string; hint?: string } | undefined {
  const body = res.json as
    { error?: { code: string; category: string; message: string; hint?: string } } | undefined;
  return body?.error;
}

/**
 * A ContainerRuntime that keeps containers in memory. `exec` of `['sleep', MS]` waits MS
 * milliseconds; `exec` of `['throw']` throws a plain Error (a bug, for 500 tests).
 */
export class MemoryRuntime implements ContainerRuntime {
  readonly containers = new Map<string, { spec: RunSpec; info: ContainerInfo; logs: string }>();
  readonly checkpoints = new Map<string, RunSpec>();
  /** Every call, as `method name`. */
  readonly calls: string[] = [];
  private nextPid = 1000;

  async run(spec: RunSpec): Promise<ContainerInfo> {
    this.calls.push(`run ${spec.name}`);
    validateName(spec.name);
    if (this.containers.has(spec.name)) {
      throw new AlreadyExistsError(
        ErrorCode.ContainerExists,
        `a container named ${spec.name} already exists`,
        {
          hint: `choose another name or remove it: godwit rm -f ${spec.name}`,
        },
      );
    }
    const info: ContainerInfo = {
      name: spec.name,
      image: spec.image,
      args: spec.args,
      status: ContainerStatus.Running,
      pid: this.nextPid++,
      createdAt: new Date(0).toISOString(),
      ...(spec.network ? { network: spec.network } : {}),
    };
    this.containers.set(spec.name, { spec, info, logs: `started ${spec.args.join(' ')}\n` });
    return info;
  }

  async inspect(name: string): Promise<ContainerInfo> {
    return this.get(name).info;
  }

  async list(): Promise<ContainerInfo[]> {
    return [...this.containers.values()].map((c) => c.info).sort((a, b) => a.name.localeCompare(b.name));
  }

  async exec(name: string, args: readonly string[], opts: { capture?: boolean } = {}): Promise<ExecResult> {
    this.calls.push(`exec ${name} ${args.join(' ')} capture=${Boolean(opts.capture)}`);
    this.running(name);
    if (args[0] === 'throw') throw new Error('simulated bug');
    if (args[0] === 'sleep') await new Promise((r) => setTimeout(r, Number(args[1])));
    return { exitCode: args[0] === 'false' ? 1 : 0, stdout: `out: ${args.join(' ')}\n`, stderr: 'err\n' };
  }

  async kill(name: string, signal = 'TERM'): Promise<void> {
    this.calls.push(`kill ${name} ${signal}`);
    this.running(name);
  }

  async stop(name: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.calls.push(`stop ${name} ${opts.timeoutMs ?? '-'}`);
    const c = this.get(name);
    c.info = { ...c.info, status: ContainerStatus.Stopped, exit: '0' };
    delete c.info.pid;
  }

  async remove(name: string, opts: { force?: boolean } = {}): Promise<void> {
    this.calls.push(`remove ${name} force=${Boolean(opts.force)}`);
    const c = this.get(name);
    if (c.info.status === ContainerStatus.Running && !opts.force) {
      throw new FailedPreconditionError(ErrorCode.ContainerRunning, `${name} is running`, {
        hint: `stop it first (godwit stop ${name}) or use rm -f`,
      });
    }
    this.containers.delete(name);
  }

  async checkpoint(name: string, opts: CheckpointOptions): Promise<CheckpointResult> {
    this.calls.push(`checkpoint ${name} ${opts.dir}`);
    const c = this.running(name);
    this.checkpoints.set(opts.dir, c.spec);
    if (!opts.leaveRunning)
      c.info = { ...c.info, status: ContainerStatus.Checkpointed, checkpointedTo: opts.dir };
    return {
      name,
      dir: opts.dir,
      durationMs: 1.5,
      imageBytes: 4096,
      pagesBytes: 1024,
      leftRunning: Boolean(opts.leaveRunning),
    };
  }

  async restore(opts: RestoreOptions): Promise<RestoreResult> {
    this.calls.push(`restore ${opts.name} ${opts.dir}`);
    const spec = this.checkpoints.get(opts.dir);
    if (!spec)
      throw new NotFoundError(ErrorCode.CheckpointNotFound, `no checkpoint directory at ${opts.dir}`);
    const info = await this.run({ ...spec, name: opts.name });
    info.restoredFrom = opts.dir;
    return { name: opts.name, pid: info.pid ?? 0, durationMs: 2.5 };
  }

  async logs(name: string): Promise<string> {
    return this.get(name).logs;
  }

  private get(name: string): { spec: RunSpec; info: ContainerInfo; logs: string } {
    validateName(name);
    const c = this.containers.get(name);
    if (!c) {
      throw new NotFoundError(ErrorCode.ContainerNotFound, `no container named ${name}`, {
        hint: 'godwit ps lists the containers of this host',
      });
    }
    return c;
  }

  private running(name: string): { spec: RunSpec; info: ContainerInfo; logs: string } {
    const c = this.get(name);
    if (c.info.status !== ContainerStatus.Running) {
      throw new FailedPreconditionError(
        ErrorCode.ContainerNotRunning,
        `${name} is ${c.info.status}, not running`,
      );
    }
    return c;
  }
}
