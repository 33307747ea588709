/**
 * The agent: a per-host daemon serving the container runtime over a versioned JSON API
 * (see `api.ts`) on a unix socket and, optionally, TCP. It holds no state of its own:
 * everything it reports comes from the runtime (the state directory), so a restarted
 * agent sees exactly what the previous one left. Containers belong to their godwit-shim
 * processes, not to the agent, and outlive it.
 */
import { chmod, lstat, mkdir, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import {
  ErrorCode,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { CheckpointOptions, ContainerRuntime, RestoreOptions, RunSpec } from '../core/runtime.js';
import {
  API_VERSION,
  MAX_BODY_BYTES,
  checkpointRequest,
  containerName,
  execRequest,
  killRequest,
  restoreRequest,
  runRequest,
  stopRequest,
  type AgentHealth,
} from './api.js';
import { discardBody, readJsonBody } from './body.js';
import { toHttpError } from './http-errors.js';
import { KeyedMutex } from './keyed-mutex.js';
import { invalid, isPlainObject, type Schema } from './schema.js';

/** What `startAgent` needs. */
export interface AgentOptions {
  /** The host's runtime; the agent serves it and nothing else. */
  runtime: ContainerRuntime;
  /** Unix socket to serve on (created with mode 0600). */
  socketPath: string;
  /** Also serve on TCP (port 0 picks a free port; see `AgentHandle.tcp`). The TCP API is unauthenticated. */
  listen?: { host: string; port: number };
  log: Logger;
  /** godwit's version, reported by /healthz. */
  version: string;
  /** The host's id (StateDir.hostId), reported by /healthz. */
  hostId?: string;
  /** How long `close` waits for in-flight requests before cutting connections; default 30 s. */
  shutdownGraceMs?: number;
  clock?: Clock;
  /** More routes (e.g. the migration API), matched before the built-in ones. */
  routes?: readonly Route[];
}

/** A running agent. */
export interface AgentHandle {
  readonly socketPath: string;
  /** The bound TCP address (with the real port), when serving TCP. */
  readonly tcp?: { host: string; port: number };
  /**
   * Stops accepting connections, lets in-flight requests finish (for at most the grace
   * period, default `shutdownGraceMs`), then removes the socket. Containers keep running.
   * Idempotent; a later call with `graceMs: 0` cuts the wait short.
   */
  close(opts?: { graceMs?: number }): Promise<void>;
}

/** Default grace period of `close`. */
export const SHUTDOWN_GRACE_MS = 30_000;

/** How long the start-up probe waits for an existing socket to answer. */
const PROBE_TIMEOUT_MS = 2_000;

/** Keep-alive of idle client connections; the client agent follows the server's hint. */
const KEEP_ALIVE_MS = 30_000;

/**
 * Starts an agent. Fails with AgentRunning when another agent (or anything else) answers
 * on `socketPath`; a stale socket file left by a dead agent is removed.
 */
export async function startAgent(opts: AgentOptions): Promise<AgentHandle> {
  const log = opts.log;
  await prepareSocketPath(opts.socketPath, log);
  const api = new AgentApi(opts);
  const unix = api.newServer();
  await listenUnix(unix, opts.socketPath);
  const socketIno = (await lstat(opts.socketPath)).ino;
  const servers: Server[] = [unix];
  let tcp: { host: string; port: number } | undefined;
  if (opts.listen) {
    const server = api.newServer();
    try {
      await listenTcp(server, opts.listen.host, opts.listen.port);
    } catch (err) {
      await closeServer(unix);
      await rm(opts.socketPath, { force: true });
      throw err;
    }
    servers.push(server);
    tcp = { host: opts.listen.host, port: (server.address() as AddressInfo).port };
  }
  log.info('agent listening', { socket: opts.socketPath, tcp, version: opts.version, pid: process.pid });

  let closing: Promise<void> | undefined;
  let cutShort: (() => void) | undefined;
  const handle: AgentHandle = {
    socketPath: opts.socketPath,
    ...(tcp ? { tcp } : {}),
    close(closeOpts = {}) {
      const graceMs = closeOpts.graceMs ?? opts.shutdownGraceMs ?? SHUTDOWN_GRACE_MS;
      if (closing) {
        if (graceMs === 0) cutShort?.();
        return closing;
      }
      closing = (async () => {
        log.info('agent stopping', { inFlight: api.inFlight });
        api.closing = true;
        const allClosed = Promise.all(servers.map((s) => closeServer(s)));
        for (const s of servers) s.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<'grace'>((resolve) => {
          const cut = (): void => resolve('grace');
          cutShort = cut;
          timer = setTimeout(cut, graceMs);
        });
        const outcome = await Promise.race([allClosed.then(() => 'closed' as const), grace]);
        clearTimeout(timer);
        if (outcome === 'grace') {
          log.warn('shutdown grace period over; closing remaining connections', { inFlight: api.inFlight });
          for (const s of servers) s.closeAllConnections();
          await allClosed;
        }
        await removeSocket(opts.socketPath, socketIno);
        log.info('agent stopped');
      })();
      return closing;
    },
  };
  return handle;
}

// ---- HTTP ----

/** A handler's answer: JSON, text, or no content. */
export type Reply = { status: number; json: unknown } | { status: number; text: string } | { status: 204 };

/** One request as a handler sees it. */
export interface Call {
  /** Decoded path parameters (container names, validated). */
  params: string[];
  query: URLSearchParams;
  /** Reads and validates the JSON body; an empty body reads as `{}`. */
  body<T>(schema: Schema<T>): Promise<T>;
}

/** Answers one request; throw a GodwitError to answer with an error. */
export type Handler = (call: Call) => Promise<Reply>;

/** A path pattern (capture groups become `params`) and its handlers. */
export interface Route {
  pattern: RegExp;
  /** Handlers by method; `*` answers every method. */
  methods: Partial<Record<string, Handler>>;
  /** Allowed query parameters. */
  query?: readonly string[];
}

class AgentApi {
  inFlight = 0;
  closing = false;
  private readonly routes: Route[];
  private readonly locks = new KeyedMutex();
  private readonly clock: Clock;

  constructor(private readonly opts: AgentOptions) {
    this.clock = opts.clock ?? systemClock;
    const rt = opts.runtime;
    const name = `([^/]+)`;
    const v = API_VERSION;
    this.routes = [
      ...(opts.routes ?? []),
      { pattern: /^\/healthz$/, methods: { GET: async () => ({ status: 200, json: this.health() }) } },
      {
        pattern: new RegExp(`^/${v}/containers$`),
        methods: {
          GET: async () => ({ status: 200, json: { containers: await rt.list() } }),
          POST: async (c) => {
            const b = await c.body(runRequest);
            const spec: RunSpec = { ...b, env: b.env ?? {} };
            return { status: 201, json: await this.locks.run(spec.name, () => rt.run(spec)) };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}$`),
        query: ['force'],
        methods: {
          GET: async (c) => ({ status: 200, json: await rt.inspect(param(c)) }),
          DELETE: async (c) => {
            const force = flag(c.query, 'force');
            await this.locks.run(param(c), () => rt.remove(param(c), { force }));
            return { status: 204 };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}/exec$`),
        methods: {
          POST: async (c) => {
            const b = await c.body(execRequest);
            return { status: 200, json: await rt.exec(param(c), b.args, { capture: true }) };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}/kill$`),
        methods: {
          POST: async (c) => {
            const b = await c.body(killRequest);
            await this.locks.run(param(c), () =>
              b.signal === undefined ? rt.kill(param(c)) : rt.kill(param(c), b.signal),
            );
            return { status: 204 };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}/stop$`),
        methods: {
          POST: async (c) => {
            const b = await c.body(stopRequest);
            await this.locks.run(param(c), () => rt.stop(param(c), b));
            return { status: 204 };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}/logs$`),
        methods: { GET: async (c) => ({ status: 200, text: await rt.logs(param(c)) }) },
      },
      {
        pattern: new RegExp(`^/${v}/containers/${name}/checkpoint$`),
        methods: {
          POST: async (c) => {
            const b: CheckpointOptions = await c.body(checkpointRequest);
            return { status: 200, json: await this.locks.run(param(c), () => rt.checkpoint(param(c), b)) };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/restore$`),
        methods: {
          POST: async (c) => {
            const b: RestoreOptions = await c.body(restoreRequest);
            return { status: 201, json: await this.locks.run(b.name, () => rt.restore(b)) };
          },
        },
      },
      {
        pattern: new RegExp(`^/${v}/migrations(/.*)?$`),
        methods: {
          '*': async () => {
            throw new FailedPreconditionError(
              ErrorCode.NotImplemented,
              'migrations are not implemented by this agent yet',
              { hint: `/${v}/migrations is reserved for the migration API` },
            );
          },
        },
      },
    ];
  }

  newServer(): Server {
    const server = createServer((req, res) => {
      this.serve(req, res).catch((err: unknown) => {
        // Only a failure to write the error response itself gets here.
        this.opts.log.error('cannot answer request', { path: req.url, err: errorMessage(err) });
        res.destroy();
      });
    });
    server.keepAliveTimeout = KEEP_ALIVE_MS;
    server.on('clientError', (err, socket) => {
      this.opts.log.warn('bad HTTP from client', { err: errorMessage(err) });
      if (socket.writable)
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    return server;
  }

  private health(): AgentHealth {
    return {
      ok: true,
      version: this.opts.version,
      api: API_VERSION,
      pid: process.pid,
      ...(this.opts.hostId === undefined ? {} : { hostId: this.opts.hostId }),
    };
  }

  /** Serves one request. Never throws: every failure becomes an error response. */
  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = this.clock.monotonic();
    const method = req.method ?? 'GET';
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    let code: string | undefined;
    this.inFlight++;
    res.on('close', () => {
      this.inFlight--;
      this.opts.log.info('request', {
        method,
        path,
        status: res.statusCode,
        ms: Math.round((this.clock.monotonic() - started) * 10) / 10,
        ...(code === undefined ? {} : { code }),
        ...(res.writableFinished ? {} : { aborted: true }),
      });
    });
    try {
      if (this.closing) {
        throw new UnavailableError(ErrorCode.AgentUnavailable, 'the agent is shutting down', {
          hint: 'retry once it has restarted',
        });
      }
      const reply = await this.dispatch(
        method,
        path,
        new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1)),
        req,
      );
      send(res, reply, this.closing);
    } catch (err) {
      const e = toHttpError(err);
      code = e.error.code;
      if (e.unexpected) {
        this.opts.log.error('request failed unexpectedly', {
          method,
          path,
          err: errorMessage(err),
          stack: err instanceof Error ? err.stack : undefined,
        });
      }
      const headers: Record<string, string> = {};
      if (err instanceof MethodNotAllowedError) headers['allow'] = err.allow.join(', ');
      if (e.error.code === ErrorCode.RequestTooLarge) headers['connection'] = 'close';
      send(res, { status: e.status, json: e.body }, this.closing, headers);
    } finally {
      discardBody(req);
    }
  }

  private async dispatch(
    method: string,
    path: string,
    query: URLSearchParams,
    req: IncomingMessage,
  ): Promise<Reply> {
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      const handler = route.methods[method] ?? route.methods['*'];
      if (!handler) {
        throw new MethodNotAllowedError(method, path, Object.keys(route.methods));
      }
      for (const key of query.keys()) {
        if (!(route.query ?? []).includes(key)) {
          throw invalid('', `unknown query parameter ${JSON.stringify(key)}`);
        }
      }
      const params = m.slice(1).filter((p): p is string => p !== undefined && !p.startsWith('/'));
      const call: Call = {
        params: params.map((p) => containerName.parse(decodeSegment(p), 'name')),
        query,
        body: async <T>(schema: Schema<T>): Promise<T> => {
          const raw = (await readJsonBody(req, MAX_BODY_BYTES)) ?? {};
          if (!isPlainObject(raw)) throw invalid('request body', 'expected a JSON object');
          return schema.parse(raw, '');
        },
      };
      return handler(call);
    }
    throw new NotFoundError(ErrorCode.RouteNotFound, `no such endpoint: ${path}`, {
      hint: `the API lives under /${API_VERSION}/ (GET /healthz for a health check)`,
    });
  }
}

/** 405: the path exists but not with this method. */
class MethodNotAllowedError extends InvalidArgumentError {
  constructor(
    method: string,
    path: string,
    readonly allow: readonly string[],
  ) {
    super(ErrorCode.MethodNotAllowed, `${method} is not allowed on ${path}`, {
      hint: `allowed: ${allow.join(', ')}`,
    });
  }
}

function param(c: Call): string {
  const p = c.params[0];
  if (p === undefined) throw new Error('route without a name parameter');
  return p;
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw invalid('name', `malformed percent-encoding in ${JSON.stringify(s)}`);
  }
}

/** A boolean query parameter: absent, `true`/`1` or `false`/`0`. */
function flag(query: URLSearchParams, key: string): boolean {
  const v = query.get(key);
  if (v === null || v === 'false' || v === '0') return false;
  if (v === 'true' || v === '1' || v === '') return true;
  throw invalid(key, `expected true or false, got ${JSON.stringify(v)}`);
}

function send(
  res: ServerResponse,
  reply: Reply,
  closing: boolean,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  if (closing) headers['connection'] = 'close';
  if ('json' in reply) {
    const data = JSON.stringify(reply.json);
    res.writeHead(reply.status, {
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(data),
    });
    res.end(data);
  } else if ('text' in reply) {
    res.writeHead(reply.status, {
      ...headers,
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(reply.text),
    });
    res.end(reply.text);
  } else {
    res.writeHead(reply.status, headers);
    res.end();
  }
}

// ---- sockets ----

/**
 * Makes `path` free for a new socket: removes a stale socket (nobody accepts on it), and
 * refuses when something answers there or the path is not a socket.
 */
async function prepareSocketPath(path: string, log: Logger): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) {
      throw new FailedPreconditionError(ErrorCode.InvalidState, `${path} exists and is not a socket`, {
        hint: 'choose another --socket path',
      });
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      return;
    }
    throw err;
  }
  const probe = await probeSocket(path);
  if (probe.alive) {
    throw new FailedPreconditionError(
      ErrorCode.AgentRunning,
      probe.pid === undefined
        ? `something is already listening on ${path}`
        : `another godwit agent (pid ${probe.pid}) is already serving ${path}`,
      { hint: 'stop it first, or choose another --socket' },
    );
  }
  await rm(path, { force: true });
  log.info('removed stale socket', { socket: path });
}

/** Whether something accepts connections on the unix socket `path`, and the agent's pid if it is one. */
function probeSocket(path: string): Promise<{ alive: boolean; pid?: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: path, path: '/healthz', method: 'GET', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c.length < 65_536 ? c : ''));
      res.on('end', () => {
        try {
          const h = JSON.parse(body) as { pid?: unknown };
          resolve(typeof h.pid === 'number' ? { alive: true, pid: h.pid } : { alive: true });
        } catch {
          resolve({ alive: true });
        }
      });
      res.on('error', () => resolve({ alive: true }));
    });
    req.setTimeout(PROBE_TIMEOUT_MS, () => {
      // It accepted the connection but does not answer: alive, and not ours to remove.
      req.destroy();
      resolve({ alive: true });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve({ alive: false });
      else if (err.code === 'ECONNRESET') resolve({ alive: true });
      else reject(new UnavailableError(ErrorCode.AgentUnavailable, `cannot probe ${path}: ${err.message}`));
    });
    req.end();
  });
}

/** Removes the socket file if it is still the one this agent created (inode `ino`). */
async function removeSocket(path: string, ino: number): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st && st.isSocket() && st.ino === ino) await rm(path, { force: true });
}

/** Listens on a unix socket that only root (the owner) can connect to: created under umask 0177. */
async function listenUnix(server: Server, path: string): Promise<void> {
  const listening = onceListening(server, `unix socket ${path}`);
  const previous = process.umask(0o177);
  try {
    server.listen(path);
  } finally {
    process.umask(previous);
  }
  await listening;
  await chmod(path, 0o600);
}

async function listenTcp(server: Server, host: string, port: number): Promise<void> {
  const listening = onceListening(server, `${host}:${port}`);
  server.listen(port, host);
  await listening;
}

function onceListening(server: Server, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      const hint = err.code === 'EADDRINUSE' ? 'another process is using it' : undefined;
      reject(
        new FailedPreconditionError(
          ErrorCode.InvalidState,
          `cannot listen on ${what}: ${err.code ?? err.message}`,
          {
            cause: err,
            ...(hint ? { hint } : {}),
          },
        ),
      );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
  });
}

/** Stops accepting; resolves once every connection of `server` has closed. */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
