/**
 * A page server for CRIU's lazy-pages daemon (`criu lazy-pages --page-server --address A
 * --port P`), serving the restored processes' pages from a `LazyPageProvider`.
 *
 * Protocol (criu/page-xfer.c, criu/uffd.c; header layout in page-server-iov.ts): the daemon
 * connects and sends PS_IOV_GET(nr_pages, vaddr, dst_id = the process's virtual pid), several
 * of them outstanding at once. Each is answered with a header ADD_F|PE_PRESENT carrying
 * k (1 ≤ k ≤ nr_pages), vaddr and dst_id, then k pages. The daemon matches answers to requests
 * by position, so answers leave strictly in request order whatever order the provider
 * resolves in. There is no "no pages" answer CRIU survives (k = 0 makes its UFFDIO_COPY fail),
 * so a page the provider cannot supply closes the connection. PS_IOV_CLOSE / FORCE_CLOSE is
 * answered with an int32 0 after every earlier answer; then the daemon closes.
 *
 * Anything else a peer sends (a header that does not decode, another command, nr_pages 0 or
 * above the limit, an unaligned vaddr) closes that connection and is logged; nothing a peer
 * or the provider does can throw out of an event handler, and once a connection is closed
 * no provider result is written to it.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { PAGE_SIZE } from '../core/chunks.js';
import { systemClock, type Clock } from '../core/clock.js';
import {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  InternalError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import {
  PS_IOV_SIZE,
  PsCmd,
  decodePageServerIov,
  encodeGetAnswer,
  isPageAligned,
  psCommand,
  psFlags,
  type PageServerIov,
} from './page-server-iov.js';

/** Where the pages come from (a local store, the source host, …). */
export interface LazyPageProvider {
  /**
   * Resolves with k·4096 bytes, the pages at `vaddr`, `vaddr + 4096`, … of process `vpid`
   * (1 ≤ k ≤ nrPages: fewer pages than asked is fine). Rejects for pages it cannot supply.
   * `hint.fault` is true for 1-page requests, which CRIU sends for page faults.
   */
  read(vpid: number, vaddr: number, nrPages: number, hint: { fault: boolean }): Promise<Buffer>;
}

/** Counters of a page server since it started (all connections). */
export interface PageServerStats {
  connections: number;
  /** GET requests received. */
  requests: number;
  /** GET requests of one page (page faults). */
  faultRequests: number;
  /** Pages and bytes of page data written in answers. */
  pagesServed: number;
  bytesServed: number;
  /** Connections closed because of an error (protocol, provider, disconnect, abort). */
  errors: number;
  /** Per fault request, ms from its header being read to its answer being handed to the kernel. */
  faultLatenciesMs: number[];
}

/** How the first client session ended. */
export interface PageServerSessionResult {
  ok: boolean;
  error?: string;
  /** The godwit error code of `error`. */
  code?: string;
}

export interface CriuPageServer {
  readonly address: string;
  readonly port: number;
  /** A snapshot of the counters. */
  stats(): PageServerStats;
  /** Drops every connection at once (e.g. after the container was killed); later ones are refused. */
  abort(reason: string): void;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
  /** Settles when the first client session ends: ok after PS_IOV_CLOSE, otherwise the error. */
  readonly session: Promise<PageServerSessionResult>;
}

export interface CriuPageServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port; see `CriuPageServer.port`). */
  port?: number;
  provider: LazyPageProvider;
  log: Logger;
  clock?: Clock;
  /** GETs of more pages are refused (the connection is closed). Default 16384 (64 MiB). */
  maxPagesPerRequest?: number;
  /** Requests read ahead of their answers per connection before reading pauses. Default 64. */
  maxOutstandingRequests?: number;
}

export const DEFAULT_MAX_PAGES_PER_REQUEST = 16384;
export const DEFAULT_MAX_OUTSTANDING_REQUESTS = 64;
/** Largest pid Linux hands out (PID_MAX_LIMIT on 64-bit). */
const PID_MAX_LIMIT = 4 * 1024 * 1024;

/**
 * The value at percentile `p` (0–100) of `values` by nearest rank, or undefined when empty.
 * `percentile(latencies, 50)` is the median.
 */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is not in 0..100`);
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

function protocolError(message: string): GodwitError {
  return new InvalidArgumentError(ErrorCode.TransferProtocol, `page server: ${message}`);
}

interface GetEntry {
  kind: 'get';
  iov: PageServerIov;
  fault: boolean;
  receivedAt: number;
  /** The pages, once the provider resolved. */
  data?: Buffer;
}
interface CloseEntry {
  kind: 'close';
}
type Entry = GetEntry | CloseEntry;

interface ConnectionContext {
  provider: LazyPageProvider;
  log: Logger;
  clock: Clock;
  maxPages: number;
  maxOutstanding: number;
  stats: PageServerStats;
  onEnd(conn: PageServerConnection, result: PageServerSessionResult): void;
}

/** One client connection: parses headers, asks the provider, answers in request order. */
class PageServerConnection {
  private input: Buffer = Buffer.alloc(0);
  private readonly queue: Entry[] = [];
  private closeReceived = false;
  private done = false;
  private paused = false;
  private trailingWarned = false;

  constructor(
    readonly socket: Socket,
    readonly id: number,
    private readonly ctx: ConnectionContext,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.guard(() => this.onData(chunk)));
    socket.on('drain', () => this.guard(() => this.pump()));
    socket.on('error', (err) => this.guard(() => this.onSocketError(err)));
    socket.on('close', () => this.guard(() => this.onClose()));
  }

  /** Closes the connection: with `err` unless it already ended (then just drops the socket). */
  drop(err: GodwitError): void {
    if (this.done) this.socket.destroy();
    else this.fail(err);
  }

  /** Ends the connection with `err` (no-op once ended). */
  fail(err: GodwitError): void {
    if (this.done) return;
    this.done = true;
    this.queue.length = 0;
    this.input = Buffer.alloc(0);
    this.ctx.stats.errors++;
    this.ctx.log.warn('page server connection failed', {
      conn: this.id,
      code: err.code,
      err: err.message,
    });
    this.socket.destroy();
    this.ctx.onEnd(this, { ok: false, error: err.message, code: err.code });
  }

  /** Runs an event handler; anything it throws fails the connection instead of escaping. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(new InternalError(ErrorCode.Internal, `page server: ${errorMessage(err)}`, { cause: err }));
    }
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    if (this.closeReceived) {
      if (!this.trailingWarned) {
        this.trailingWarned = true;
        this.ctx.log.warn('page server: bytes after PS_IOV_CLOSE ignored', { conn: this.id });
      }
      return;
    }
    this.input = this.input.length === 0 ? chunk : Buffer.concat([this.input, chunk]);
    this.pump();
  }

  /** Parses buffered headers while there is room for more outstanding requests, then flow control. */
  private pump(): void {
    let off = 0;
    while (
      !this.done &&
      !this.closeReceived &&
      this.queue.length < this.ctx.maxOutstanding &&
      this.input.length - off >= PS_IOV_SIZE
    ) {
      const iov = decodePageServerIov(this.input, off);
      off += PS_IOV_SIZE;
      if (typeof iov === 'string') return this.fail(protocolError(`malformed header: ${iov}`));
      this.handle(iov);
    }
    if (this.done) return;
    if (off > 0) this.input = this.input.subarray(off);
    if (this.closeReceived && this.input.length > 0) {
      this.input = Buffer.alloc(0);
      if (!this.trailingWarned) {
        this.trailingWarned = true;
        this.ctx.log.warn('page server: bytes after PS_IOV_CLOSE ignored', { conn: this.id });
      }
    }
    const pause = this.queue.length >= this.ctx.maxOutstanding || this.socket.writableNeedDrain;
    if (pause && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!pause && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private handle(iov: PageServerIov): void {
    const cmd = psCommand(iov.cmd);
    const flags = psFlags(iov.cmd);
    switch (cmd) {
      case PsCmd.Get:
        return this.handleGet(iov, flags);
      case PsCmd.Close:
      case PsCmd.ForceClose:
        if (flags !== 0) return this.fail(protocolError(`PS_IOV_CLOSE with flags 0x${flags.toString(16)}`));
        this.closeReceived = true;
        this.queue.push({ kind: 'close' });
        return this.flush(); // pump's caller is already parsing; no pump() here
      case PsCmd.Add:
      case PsCmd.Hole:
      case PsCmd.Open:
      case PsCmd.Open2:
      case PsCmd.Parent:
      case PsCmd.AddF:
        return this.fail(
          protocolError(`command ${cmd} (dump side) is not served; this server only answers GET`),
        );
      default:
        return this.fail(protocolError(`unknown command 0x${iov.cmd.toString(16)}`));
    }
  }

  private handleGet(iov: PageServerIov, flags: number): void {
    const { nrPages, vaddr, dstId } = iov;
    const what = `GET ${nrPages} pages at 0x${vaddr.toString(16)} of pid ${dstId}`;
    if (flags !== 0) return this.fail(protocolError(`${what}: flags 0x${flags.toString(16)}`));
    if (nrPages === 0) return this.fail(protocolError(`${what}: no pages asked for`));
    if (nrPages > this.ctx.maxPages) {
      return this.fail(
        new InvalidArgumentError(
          ErrorCode.TransferTooLarge,
          `page server: ${what}: more than ${this.ctx.maxPages} pages`,
        ),
      );
    }
    if (!isPageAligned(vaddr)) return this.fail(protocolError(`${what}: vaddr not page-aligned`));
    if (vaddr + nrPages * PAGE_SIZE > Number.MAX_SAFE_INTEGER) {
      return this.fail(protocolError(`${what}: range out of bounds`));
    }
    if (dstId < 1 || dstId > PID_MAX_LIMIT) return this.fail(protocolError(`${what}: not a pid`));

    const fault = nrPages === 1;
    const entry: GetEntry = { kind: 'get', iov, fault, receivedAt: this.ctx.clock.monotonic() };
    this.queue.push(entry);
    this.ctx.stats.requests++;
    if (fault) this.ctx.stats.faultRequests++;

    let pages: Promise<Buffer>;
    try {
      pages = Promise.resolve(this.ctx.provider.read(dstId, vaddr, nrPages, { fault }));
    } catch (err) {
      pages = Promise.reject(err);
    }
    pages.then(
      (data) => this.guard(() => this.resolved(entry, data, what)),
      (err: unknown) => this.guard(() => this.rejected(err, what)),
    );
  }

  private resolved(entry: GetEntry, data: unknown, what: string): void {
    if (this.done) return; // closed meanwhile: the result goes nowhere
    if (
      !Buffer.isBuffer(data) ||
      data.length === 0 ||
      data.length % PAGE_SIZE !== 0 ||
      data.length > entry.iov.nrPages * PAGE_SIZE
    ) {
      const got = Buffer.isBuffer(data) ? `${data.length} bytes` : typeof data;
      return this.fail(
        new InternalError(
          ErrorCode.Internal,
          `page server: provider answered ${what} with ${got}, not 1..${entry.iov.nrPages} whole pages`,
        ),
      );
    }
    entry.data = data;
    this.flush();
    this.pump();
  }

  private rejected(err: unknown, what: string): void {
    if (this.done) return;
    const message = `page server: provider cannot supply ${what}: ${errorMessage(err)}`;
    this.fail(
      err instanceof GodwitError
        ? new UnavailableError(err.code, message, { cause: err })
        : new UnavailableError(ErrorCode.TransferFailed, message, { cause: err }),
    );
  }

  /** Writes every answer at the head of the queue that is ready, in request order. */
  private flush(): void {
    while (!this.done) {
      const head = this.queue[0];
      if (head === undefined) break;
      if (head.kind === 'close') {
        this.queue.shift();
        const status = Buffer.alloc(4); // int32 0: success
        this.socket.write(status, (err) => this.guard(() => this.closeWritten(err)));
        this.socket.end();
        break;
      }
      const data = head.data;
      if (data === undefined) break;
      this.queue.shift();
      const k = data.length / PAGE_SIZE;
      const { vaddr, dstId } = head.iov;
      this.ctx.stats.pagesServed += k;
      this.ctx.stats.bytesServed += data.length;
      this.socket.cork();
      this.socket.write(encodeGetAnswer(vaddr, k, dstId));
      this.socket.write(data, (err) => {
        if (err == null && head.fault) {
          this.ctx.stats.faultLatenciesMs.push(this.ctx.clock.monotonic() - head.receivedAt);
        }
      });
      this.socket.uncork();
    }
  }

  private closeWritten(err: Error | null | undefined): void {
    if (this.done) return;
    if (err) {
      this.fail(
        new UnavailableError(
          ErrorCode.TransferConnectionLost,
          `page server: cannot answer PS_IOV_CLOSE: ${err.message}`,
          { cause: err },
        ),
      );
      return;
    }
    this.done = true; // the peer closes next; nothing more to read or write
    this.ctx.log.info('page server session closed by client', { conn: this.id });
    this.ctx.onEnd(this, { ok: true });
  }

  private onSocketError(err: Error): void {
    this.fail(
      new UnavailableError(
        ErrorCode.TransferConnectionLost,
        `page server: connection error: ${err.message}`,
        {
          cause: err,
        },
      ),
    );
  }

  private onClose(): void {
    if (this.done) return;
    const pending = this.queue.length;
    const partial = this.input.length;
    const why =
      pending > 0
        ? `peer disconnected with ${pending} request(s) unanswered`
        : partial > 0
          ? `peer disconnected after ${partial} byte(s) of a header`
          : this.closeReceived
            ? 'peer disconnected before the PS_IOV_CLOSE answer was written'
            : 'peer disconnected without PS_IOV_CLOSE';
    this.fail(new UnavailableError(ErrorCode.TransferConnectionLost, `page server: ${why}`));
  }
}

class PageServer implements CriuPageServer {
  readonly address: string;
  readonly port: number;
  readonly session: Promise<PageServerSessionResult>;
  private settleSession!: (r: PageServerSessionResult) => void;
  private sessionSettled = false;
  private first: PageServerConnection | undefined;
  private readonly conns = new Set<PageServerConnection>();
  private readonly counters: PageServerStats = {
    connections: 0,
    requests: 0,
    faultRequests: 0,
    pagesServed: 0,
    bytesServed: 0,
    errors: 0,
    faultLatenciesMs: [],
  };
  private readonly ctx: ConnectionContext;
  private nextId = 1;
  private refusing: string | undefined;
  private closed: Promise<void> | undefined;

  constructor(
    private readonly server: Server,
    private readonly log: Logger,
    opts: CriuPageServerOptions,
  ) {
    const addr = server.address() as AddressInfo;
    this.address = addr.address;
    this.port = addr.port;
    this.session = new Promise((resolve) => (this.settleSession = resolve));
    this.ctx = {
      provider: opts.provider,
      log,
      clock: opts.clock ?? systemClock,
      maxPages: opts.maxPagesPerRequest ?? DEFAULT_MAX_PAGES_PER_REQUEST,
      maxOutstanding: opts.maxOutstandingRequests ?? DEFAULT_MAX_OUTSTANDING_REQUESTS,
      stats: this.counters,
      onEnd: (conn, result) => this.ended(conn, result),
    };
    server.on('connection', (socket) => this.accept(socket));
    server.on('error', (err) => log.error('page server error', { err: errorMessage(err) }));
  }

  stats(): PageServerStats {
    return { ...this.counters, faultLatenciesMs: [...this.counters.faultLatenciesMs] };
  }

  abort(reason: string): void {
    this.refusing ??= `page server aborted: ${reason}`;
    this.log.warn('page server aborted', { reason, connections: this.conns.size });
    this.dropAll(new FailedPreconditionError(ErrorCode.TransferAborted, `page server aborted: ${reason}`));
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.refusing ??= 'page server closed';
      const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.dropAll(new FailedPreconditionError(ErrorCode.TransferAborted, 'page server closed'));
      await stopped;
      this.log.info('page server closed', { ...this.summary() });
    })();
    return this.closed;
  }

  private dropAll(err: GodwitError): void {
    for (const c of [...this.conns]) c.drop(err);
    this.settle({ ok: false, error: err.message, code: err.code });
  }

  private accept(socket: Socket): void {
    try {
      if (this.refusing !== undefined) {
        socket.on('error', () => undefined);
        socket.destroy();
        return;
      }
      const conn = new PageServerConnection(socket, this.nextId++, this.ctx);
      this.conns.add(conn);
      socket.once('close', () => this.conns.delete(conn));
      this.counters.connections++;
      this.first ??= conn;
      this.log.info('page server connection', {
        conn: conn.id,
        peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
      });
    } catch (err) {
      this.log.error('page server cannot accept a connection', { err: errorMessage(err) });
      socket.destroy();
    }
  }

  private ended(conn: PageServerConnection, result: PageServerSessionResult): void {
    if (conn === this.first) this.settle(result);
    if (result.ok) this.log.info('page server session ended', { conn: conn.id, ...this.summary() });
  }

  private settle(result: PageServerSessionResult): void {
    if (this.sessionSettled) return;
    this.sessionSettled = true;
    this.settleSession(result);
  }

  private summary(): Record<string, number> {
    const { connections, requests, faultRequests, pagesServed, bytesServed, errors } = this.counters;
    return { connections, requests, faultRequests, pagesServed, bytesServed, errors };
  }
}

/** Starts a page server for CRIU's lazy-pages daemon; resolves once it listens. */
export async function startCriuPageServer(opts: CriuPageServerOptions): Promise<CriuPageServer> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 0;
  const maxPages = opts.maxPagesPerRequest ?? DEFAULT_MAX_PAGES_PER_REQUEST;
  if (!Number.isSafeInteger(maxPages) || maxPages < 1) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `maxPagesPerRequest ${maxPages} is not a positive integer`,
    );
  }
  const maxOutstanding = opts.maxOutstandingRequests ?? DEFAULT_MAX_OUTSTANDING_REQUESTS;
  if (!Number.isSafeInteger(maxOutstanding) || maxOutstanding < 1) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `maxOutstandingRequests ${maxOutstanding} is not a positive integer`,
    );
  }
  const log = opts.log.child({ component: 'criu-page-server' });
  const server = createServer({ noDelay: true });
  await new Promise<void>((resolve, reject) => {
    const where = `${host}:${port}`;
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'EADDRINUSE'
          ? new AlreadyExistsError(ErrorCode.AddressInUse, `page server cannot listen on ${where}: in use`, {
              cause: err,
            })
          : new UnavailableError(
              ErrorCode.TransferFailed,
              `page server cannot listen on ${where}: ${err.message}`,
              {
                cause: err,
              },
            ),
      );
    });
    server.listen(port, host, () => resolve());
  });
  server.removeAllListeners('error');
  const ps = new PageServer(server, log, opts);
  log.info('page server listening', { address: ps.address, port: ps.port });
  return ps;
}
