/**
 * ContainerRuntime over an agent's HTTP API: the CLI's `--host`, and later the controller
 * and other agents. Errors come back as the GodwitError the agent raised (same class,
 * code, message, hint, details); a transport failure is AgentUnavailable.
 */
import { Agent, request, type IncomingMessage } from 'node:http';
import { resolve as resolvePath } from 'node:path';
import {
  ErrorCode,
  UnavailableError,
  errorMessage,
  isGodwitError,
  type GodwitError,
} from '../core/errors.js';
import type {
  CheckpointOptions,
  CheckpointResult,
  ContainerInfo,
  ContainerRuntime,
  ExecResult,
  RestoreOptions,
  RestoreResult,
  RunSpec,
} from '../core/runtime.js';
import {
  ApiPath,
  checkpointResponse,
  containerInfoResponse,
  execResponse,
  healthResponse,
  listResponse,
  restoreResponse,
  type AgentHealth,
  type CheckpointRequest,
  type RestoreRequest,
} from './api.js';
import { errorFromResponse } from './http-errors.js';
import type { Schema } from './schema.js';

/** Where an agent listens: its unix socket, or TCP. */
export type AgentAddress = { socketPath: string } | { host: string; port: number };

/** Options of an AgentClient. */
export interface AgentClientOptions {
  /** Limit of one API call, ms; default 10 minutes (checkpoints, restores and execs can be long). */
  requestTimeoutMs?: number;
  /** Limit of `health()`, ms; default 5 s. */
  healthTimeoutMs?: number;
  /**
   * Where `exec` without `capture` writes the command's output once it has finished (the API
   * always captures); default this process's stdout and stderr.
   */
  output?: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
}

/** Default of `AgentClientOptions.requestTimeoutMs`. */
export const REQUEST_TIMEOUT_MS = 600_000;
const HEALTH_TIMEOUT_MS = 5_000;

/** Human form of an address: the socket path, or `host:port`. */
export function formatAgentAddress(address: AgentAddress): string {
  if ('socketPath' in address) return address.socketPath;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

interface RawResponse {
  status: number;
  contentType: string;
  text: string;
}

/**
 * A ContainerRuntime served by a godwit agent. Relative checkpoint paths are resolved
 * against this process's working directory: right for the unix socket (same machine);
 * over TCP, pass paths of the agent's host. `close()` releases pooled connections.
 */
export class AgentClient implements ContainerRuntime {
  private readonly pool = new Agent({ keepAlive: true, maxSockets: 16 });
  private readonly requestTimeoutMs: number;
  private readonly healthTimeoutMs: number;
  private readonly output: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  private readonly where: string;

  constructor(
    readonly address: AgentAddress,
    opts: AgentClientOptions = {},
  ) {
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.healthTimeoutMs = opts.healthTimeoutMs ?? HEALTH_TIMEOUT_MS;
    this.output = opts.output ?? { stdout: process.stdout, stderr: process.stderr };
    this.where = `the godwit agent at ${formatAgentAddress(address)}`;
  }

  /** The agent's health; fails with AgentUnavailable when it does not answer. */
  async health(): Promise<AgentHealth> {
    return this.json('GET', ApiPath.health, healthResponse, undefined, this.healthTimeoutMs);
  }

  async run(spec: RunSpec): Promise<ContainerInfo> {
    return this.json('POST', ApiPath.containers, containerInfoResponse, spec);
  }

  async inspect(name: string): Promise<ContainerInfo> {
    return this.json('GET', ApiPath.container(name), containerInfoResponse);
  }

  async list(): Promise<ContainerInfo[]> {
    return (await this.json('GET', ApiPath.containers, listResponse)).containers;
  }

  async exec(name: string, args: readonly string[], opts: { capture?: boolean } = {}): Promise<ExecResult> {
    const res = await this.json('POST', ApiPath.exec(name), execResponse, { args });
    if (opts.capture) return { exitCode: res.exitCode, stdout: res.stdout, stderr: res.stderr };
    await write(this.output.stdout, res.stdout);
    await write(this.output.stderr, res.stderr);
    return { exitCode: res.exitCode, stdout: '', stderr: '' };
  }

  async kill(name: string, signal?: string): Promise<void> {
    await this.none('POST', ApiPath.kill(name), signal === undefined ? {} : { signal });
  }

  async stop(name: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.none(
      'POST',
      ApiPath.stop(name),
      opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs },
    );
  }

  async remove(name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.none('DELETE', ApiPath.container(name) + (opts.force ? '?force=true' : ''));
  }

  async checkpoint(name: string, opts: CheckpointOptions): Promise<CheckpointResult> {
    const body: CheckpointRequest = { ...opts, dir: resolvePath(opts.dir) };
    if (opts.workDir !== undefined) body.workDir = resolvePath(opts.workDir);
    return this.json('POST', ApiPath.checkpoint(name), checkpointResponse, body);
  }

  async restore(opts: RestoreOptions): Promise<RestoreResult> {
    const body: RestoreRequest = { ...opts, dir: resolvePath(opts.dir) };
    if (opts.workDir !== undefined) body.workDir = resolvePath(opts.workDir);
    return this.json('POST', ApiPath.restore, restoreResponse, body);
  }

  async logs(name: string): Promise<string> {
    const res = await this.send('GET', ApiPath.logs(name), undefined, this.requestTimeoutMs);
    if (!res.contentType.startsWith('text/plain'))
      throw this.protocolError(`logs came as ${res.contentType}`);
    return res.text;
  }

  /** Closes pooled keep-alive connections. The client stays usable (new connections are made). */
  close(): void {
    this.pool.destroy();
  }

  /**
   * Calls any JSON endpoint of the agent (used by the migration API): the answer is
   * validated with `schema`; errors come back as the agent's typed GodwitErrors.
   */
  call<T>(method: string, path: string, schema: Schema<T>, body?: unknown, timeoutMs?: number): Promise<T> {
    return this.json(method, path, schema, body, timeoutMs);
  }

  // ---- transport ----

  private async json<T>(
    method: string,
    path: string,
    schema: Schema<T>,
    body?: unknown,
    timeoutMs = this.requestTimeoutMs,
  ): Promise<T> {
    const res = await this.send(method, path, body, timeoutMs);
    let value: unknown;
    try {
      value = JSON.parse(res.text) as unknown;
    } catch {
      throw this.protocolError(`${method} ${path} answered ${res.status} with a body that is not JSON`);
    }
    try {
      return schema.parse(value, '');
    } catch (err) {
      throw this.protocolError(`${method} ${path}: unexpected answer: ${errorMessage(err)}`);
    }
  }

  private async none(method: string, path: string, body?: unknown): Promise<void> {
    await this.send(method, path, body, this.requestTimeoutMs);
  }

  /** Sends one request; resolves with a 2xx response, rejects with the agent's error otherwise. */
  private async send(method: string, path: string, body: unknown, timeoutMs: number): Promise<RawResponse> {
    let res: RawResponse;
    try {
      res = await this.once(method, path, body, timeoutMs);
    } catch (err) {
      // A pooled connection the agent closed as we reused it: safe to retry a GET once.
      if (!(err instanceof StaleSocketError)) throw err;
      if (method !== 'GET') throw this.transportError(err.cause);
      res = await this.once(method, path, body, timeoutMs);
    }
    if (res.status >= 200 && res.status < 300) return res;
    let parsed: unknown = res.text;
    if (res.contentType.startsWith('application/json')) {
      try {
        parsed = JSON.parse(res.text) as unknown;
      } catch {
        // quoted as text below
      }
    }
    throw errorFromResponse(res.status, parsed, this.where);
  }

  private once(method: string, path: string, body: unknown, timeoutMs: number): Promise<RawResponse> {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (data !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(data);
    }
    const target =
      'socketPath' in this.address
        ? { socketPath: this.address.socketPath }
        : { host: this.address.host, port: this.address.port };
    return new Promise<RawResponse>((resolve, reject) => {
      let settled = false;
      const finish = (err: GodwitError | Error | undefined, res?: RawResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else if (res) resolve(res);
      };
      const req = request({ ...target, method, path, headers, agent: this.pool }, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => finish(this.transportError(err)));
        res.on('end', () =>
          finish(undefined, {
            status: res.statusCode ?? 0,
            contentType: String(res.headers['content-type'] ?? ''),
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      });
      const timer = setTimeout(() => {
        const err = new UnavailableError(
          ErrorCode.Timeout,
          `${method} ${path}: ${this.where} did not answer within ${timeoutMs} ms`,
        );
        finish(err);
        req.destroy(err);
      }, timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (req.reusedSocket && err.code === 'ECONNRESET') finish(new StaleSocketError(err));
        else finish(isGodwitError(err) ? err : this.transportError(err));
      });
      req.end(data);
    });
  }

  private transportError(err: NodeJS.ErrnoException): UnavailableError {
    const code = err.code ?? err.message;
    let hint = 'is the agent running? start it with `godwit agent`, or check --host';
    if (err.code === 'EACCES') hint = 'the agent socket is root-only (mode 0600): run as root';
    return new UnavailableError(ErrorCode.AgentUnavailable, `cannot reach ${this.where}: ${code}`, {
      hint,
      cause: err,
    });
  }

  private protocolError(message: string): UnavailableError {
    return new UnavailableError(ErrorCode.AgentProtocol, `${this.where}: ${message}`, {
      hint: 'the CLI and the agent may be different godwit versions',
    });
  }
}

/** A pooled connection was reset: the agent may have closed it just as it was reused. */
class StaleSocketError extends Error {
  constructor(override readonly cause: NodeJS.ErrnoException) {
    super(cause.message);
  }
}

function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  if (!text) return Promise.resolve();
  return new Promise((resolve) => stream.write(text, () => resolve()));
}
