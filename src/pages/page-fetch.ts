/**
 * Pages of a checkpoint that stayed on the source, fetched by the destination while the
 * restored container already runs (post-copy, hybrid). The source serves the page runs of its
 * local CRIU dump by process and address; the destination asks for them on faults and in the
 * background.
 *
 * Wire (little-endian), over one TCP connection per migration:
 *   client → server, first:  16-byte token (the migration's; anything else is refused)
 *   request   24 bytes: u32 id, u32 vpid, u64 vaddr, u32 nrPages, u32 0
 *   response  16 bytes: u32 id, u32 nrPages, u8 codec, 3 × 0, u32 payload length; payload
 *     nrPages > 0: the pages (codec none/zstd/lz4 of nrPages × 4096 bytes), possibly fewer than
 *     asked (the run ends); nrPages = 0: an error, payload = UTF-8 message.
 * Responses come in request order. Malformed input closes the connection.
 *
 * Verdicts (hybrid), pushed by the source between responses, under the reserved id 0:
 *   header as a response's, with id 0 and nrPages = the number of verdict runs (0: the last
 *   verdict frame: every page held has had one); payload (codec) of 24-byte runs:
 *   u64 vaddr, u32 vpid, u32 nrPages, u32 flags (bit 0: the destination's copy from the last
 *   pre-copy round is exact), u32 0.
 */
import type { FileHandle } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PAGE_SIZE } from '../core/chunks.js';
import {
  ErrorCode,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
  type GodwitError,
} from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { readPagesLayouts, type PagesFileLayout } from '../memory/criu-pagemap.js';
import { ChunkCompressor, decompressChunk } from '../transfer/codec.js';
import { OpenFiles } from './open-files.js';

export const PAGE_FETCH_TOKEN_BYTES = 16;
const REQUEST_BYTES = 24;
const RESPONSE_HEADER_BYTES = 16;
const VERDICT_BYTES = 24;
/** Most verdict runs in one frame. */
const MAX_VERDICT_RUNS = 65536;
const VERDICT_KNOWN = 1;
/** How long a fetch may wait for its answer before the source counts as lost. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
/** Largest request the source serves: 4 MiB of pages. */
export const MAX_FETCH_PAGES = 1024;

function protocol(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.PageProtocol, message);
}

/** Runs of one process, sorted by address, each with the file that holds it. */
interface ProcessRuns {
  file: string;
  runs: PagesFileLayout['runs'];
  /** Runs a `--lazy-pages` dump left in the process (read from its memory). */
  lazyRuns: PagesFileLayout['lazyRuns'];
}

/** Finds the run of `runs` (sorted by vaddr) that holds `vaddr`. */
export function findRun<R extends { vaddr: number; nrPages: number }>(
  runs: readonly R[],
  vaddr: number,
): R | undefined {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid] as R;
    if (vaddr < r.vaddr) hi = mid - 1;
    else if (vaddr >= r.vaddr + r.nrPages * PAGE_SIZE) lo = mid + 1;
    else return r;
  }
  return undefined;
}

/**
 * The source's verdict on `nrPages` pages of process `vpid` from `vaddr` on, read from the frozen
 * process: `known` when each equals the content the last pre-copy round gave the destination.
 */
export interface VerdictRun {
  vpid: number;
  vaddr: number;
  nrPages: number;
  known: boolean;
}

/** Encodes one verdict frame (`runs` empty: the last). */
export function encodeVerdictFrame(runs: readonly VerdictRun[], compressor?: ChunkCompressor): Buffer {
  const raw = Buffer.alloc(runs.length * VERDICT_BYTES);
  runs.forEach((r, i) => {
    const o = i * VERDICT_BYTES;
    raw.writeBigUInt64LE(BigInt(r.vaddr), o);
    raw.writeUInt32LE(r.vpid, o + 8);
    raw.writeUInt32LE(r.nrPages, o + 12);
    raw.writeUInt32LE(r.known ? VERDICT_KNOWN : 0, o + 16);
  });
  const enc = raw.length > 0 && compressor ? compressor.compress(raw) : { codec: 0, data: raw };
  const head = Buffer.alloc(RESPONSE_HEADER_BYTES);
  head.writeUInt32LE(runs.length, 4);
  head.writeUInt8(enc.codec, 8);
  head.writeUInt32LE(enc.data.length, 12);
  return Buffer.concat([head, enc.data]);
}

function decodeVerdicts(count: number, codec: number, body: Buffer): VerdictRun[] {
  const raw = decompressChunk(codec, body, count * VERDICT_BYTES);
  if (raw.length !== count * VERDICT_BYTES)
    throw protocol(`verdict frame of ${raw.length} bytes for ${count} runs`);
  const out: VerdictRun[] = [];
  for (let o = 0; o < raw.length; o += VERDICT_BYTES) {
    const vaddr = Number(raw.readBigUInt64LE(o));
    const nrPages = raw.readUInt32LE(o + 12);
    if (!Number.isSafeInteger(vaddr) || vaddr % PAGE_SIZE !== 0 || nrPages === 0)
      throw protocol(`bad verdict: ${nrPages} pages at 0x${vaddr.toString(16)}`);
    out.push({
      vaddr,
      vpid: raw.readUInt32LE(o + 8),
      nrPages,
      known: (raw.readUInt32LE(o + 16) & VERDICT_KNOWN) !== 0,
    });
  }
  return out;
}

/** Statistics of a page source. */
export interface PageSourceStats {
  requests: number;
  pagesServed: number;
  bytesRaw: number;
  bytesWire: number;
}

/** A running page source (source side). */
export interface PageSource {
  readonly address: string;
  readonly port: number;
  stats(): PageSourceStats;
  /**
   * Sends verdicts to the destination (kept and sent on when it connects later); `runs` empty:
   * the last verdicts were sent.
   */
  pushVerdicts(runs: readonly VerdictRun[]): void;
  /** Test hook: drops every connection and refuses new ones, as if the source died. */
  drop(): void;
  /** Stops listening and drops connections. Idempotent. */
  close(): Promise<void>;
}

/** Options of `startPageSource`. */
export interface PageSourceOptions {
  /** Address to listen on (the host's address on the link). */
  host: string;
  port?: number;
  /** The CRIU image directory whose `pages-N.img` files are served. */
  criuDir: string;
  /** Only a client that sends this token first is served. */
  token: Buffer;
  log: Logger;
  /** Test hook: drop every connection once this many pages were served (a source that dies). */
  dropAfterPages?: number;
  /**
   * Test hook: push no verdicts (the destination fetches only what faults ask for, and keeps
   * waiting for the rest), so that a `drop` leaves pages missing there.
   */
  withholdVerdicts?: boolean;
  /**
   * A `--lazy-pages` dump: the processes (virtual pid → host pid), frozen, whose memory holds the
   * pages CRIU left out of the images; they are read through /proc/PID/mem.
   */
  processes?: ReadonlyMap<number, number>;
}

/** Serves a checkpoint's process pages to the destination of a migration. */
export async function startPageSource(opts: PageSourceOptions): Promise<PageSource> {
  if (opts.token.length !== PAGE_FETCH_TOKEN_BYTES) throw protocol('page source token must be 16 bytes');
  const byVpid = new Map<number, ProcessRuns>();
  for (const l of await readPagesLayouts(opts.criuDir)) {
    byVpid.set(l.vpid, {
      file: l.file,
      runs: [...l.runs].sort((a, b) => a.vaddr - b.vaddr),
      lazyRuns: [...l.lazyRuns].sort((a, b) => a.vaddr - b.vaddr),
    });
  }
  const files = new OpenFiles('r');
  const fileOf = (name: string): Promise<FileHandle> =>
    files.get(name.startsWith('/proc/') ? name : join(opts.criuDir, name));
  const stats: PageSourceStats = { requests: 0, pagesServed: 0, bytesRaw: 0, bytesWire: 0 };
  const sockets = new Set<Socket>();
  let closed = false;
  const compressor = new ChunkCompressor('zstd', 1);
  /** Verdict frames so far, for clients that connect later; and the clients that have them. */
  const verdictFrames: Buffer[] = [];
  const authedSockets = new Set<Socket>();
  let dropped = false;

  const answer = async (
    vpid: number,
    vaddr: number,
    nrPages: number,
  ): Promise<{ pages: number; body: Buffer; codec: number }> => {
    const proc = byVpid.get(vpid);
    const run = proc ? findRun(proc.runs, vaddr) : undefined;
    const inProcess = proc && !run ? findRun(proc.lazyRuns, vaddr) : undefined;
    const pid = opts.processes?.get(vpid);
    const r = run ?? (pid !== undefined ? inProcess : undefined);
    if (!proc || !r) {
      throw new InvalidArgumentError(
        ErrorCode.PageNotHeld,
        `no page of process ${vpid} at 0x${vaddr.toString(16)}`,
      );
    }
    const first = (vaddr - r.vaddr) / PAGE_SIZE;
    const pages = Math.min(nrPages, r.nrPages - first);
    const raw = Buffer.allocUnsafe(pages * PAGE_SIZE);
    const fh = await fileOf(run ? proc.file : `/proc/${pid}/mem`);
    const { bytesRead } = await fh.read(raw, 0, raw.length, run ? run.fileOffset + first * PAGE_SIZE : vaddr);
    if (bytesRead !== raw.length) {
      throw new InvalidArgumentError(
        ErrorCode.CheckpointCorrupt,
        run
          ? `${proc.file} is shorter than its pagemap says`
          : `process ${vpid} no longer holds 0x${vaddr.toString(16)}`,
      );
    }
    const enc = compressor.compress(raw);
    return { pages, body: enc.data, codec: enc.codec };
  };

  const serve = (sock: Socket): void => {
    sockets.add(sock);
    sock.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let authed = false;
    const queue: { id: number; vpid: number; vaddr: number; nrPages: number }[] = [];
    let busy = false;
    const fail = (err: unknown): void => {
      opts.log.warn('page source: connection closed', { err: errorMessage(err) });
      sock.destroy();
    };
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (queue.length > 0 && !sock.destroyed) {
          const q = queue.shift() as (typeof queue)[number];
          stats.requests++;
          const head = Buffer.alloc(RESPONSE_HEADER_BYTES);
          head.writeUInt32LE(q.id, 0);
          let body: Buffer;
          try {
            const a = await answer(q.vpid, q.vaddr, q.nrPages);
            head.writeUInt32LE(a.pages, 4);
            head.writeUInt8(a.codec, 8);
            body = a.body;
            stats.pagesServed += a.pages;
            stats.bytesRaw += a.pages * PAGE_SIZE;
          } catch (err) {
            body = Buffer.from(errorMessage(err).slice(0, 1024), 'utf8');
          }
          head.writeUInt32LE(body.length, 12);
          stats.bytesWire += head.length + body.length;
          if (sock.destroyed) return;
          const more = sock.write(Buffer.concat([head, body]));
          if (opts.dropAfterPages !== undefined && stats.pagesServed >= opts.dropAfterPages) {
            opts.log.warn('page source: dropping connections (test hook)', {
              pagesServed: stats.pagesServed,
            });
            for (const s of sockets) s.destroy();
            return;
          }
          if (!more) await new Promise<void>((r) => sock.once('drain', r).once('close', r));
        }
      } catch (err) {
        fail(err);
      } finally {
        busy = false;
      }
    };
    sock.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      if (!authed) {
        if (buf.length < PAGE_FETCH_TOKEN_BYTES) return;
        if (!buf.subarray(0, PAGE_FETCH_TOKEN_BYTES).equals(opts.token)) return fail(protocol('wrong token'));
        if (dropped) return fail(protocol('the source is gone (test hook)'));
        authed = true;
        authedSockets.add(sock);
        for (const f of opts.withholdVerdicts ? [] : verdictFrames) {
          stats.bytesWire += f.length;
          sock.write(f);
        }
        buf = buf.subarray(PAGE_FETCH_TOKEN_BYTES);
      }
      while (buf.length >= REQUEST_BYTES) {
        const id = buf.readUInt32LE(0);
        const vpid = buf.readUInt32LE(4);
        const vaddr = Number(buf.readBigUInt64LE(8));
        const nrPages = buf.readUInt32LE(16);
        buf = buf.subarray(REQUEST_BYTES);
        if (
          nrPages === 0 ||
          nrPages > MAX_FETCH_PAGES ||
          vaddr % PAGE_SIZE !== 0 ||
          !Number.isSafeInteger(vaddr)
        ) {
          return fail(protocol(`bad request: ${nrPages} pages at 0x${vaddr.toString(16)}`));
        }
        queue.push({ id, vpid, vaddr, nrPages });
      }
      void pump();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      sockets.delete(sock);
      authedSockets.delete(sock);
    });
  };

  const server: Server = createServer(serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw protocol('page source has no TCP address');
  return {
    address: opts.host,
    port: addr.port,
    stats: () => ({ ...stats }),
    pushVerdicts(runs) {
      for (let i = 0; i === 0 || i < runs.length; i += MAX_VERDICT_RUNS) {
        const frame = encodeVerdictFrame(runs.slice(i, i + MAX_VERDICT_RUNS), compressor);
        verdictFrames.push(frame);
        for (const s of opts.withholdVerdicts ? [] : authedSockets) {
          stats.bytesWire += frame.length;
          s.write(frame);
        }
      }
    },
    drop() {
      dropped = true;
      opts.log.warn('page source: dropping connections (test hook)', {});
      for (const s of sockets) s.destroy();
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await files.closeAll();
    },
  };
}

/** The client side: fetches pages from a source's PageSource. */
export class PageFetcher {
  private readonly pending = new Map<
    number,
    { resolve: (b: Buffer) => void; reject: (e: Error) => void; nrPages: number; at: number }
  >();
  /** Fails the connection when an answer is overdue (a source that stalls rather than closes). */
  private readonly watchdog: NodeJS.Timeout;
  private nextId = 1;
  private buf: Buffer = Buffer.alloc(0);
  private failure: GodwitError | undefined;
  private readonly failedListeners: ((err: GodwitError) => void)[] = [];
  /** Verdicts that arrived before anyone listened for them, and the listener. */
  private verdictBacklog: (VerdictRun[] | 'end')[] = [];
  private verdictListener: ((v: VerdictRun[] | 'end') => void) | undefined;
  /** Bytes received, headers included. */
  bytesWire = 0;

  private constructor(
    private readonly sock: Socket,
    requestTimeoutMs: number,
  ) {
    sock.setNoDelay(true);
    this.watchdog = setInterval(
      () => {
        const now = performance.now();
        for (const p of this.pending.values()) {
          if (now - p.at > requestTimeoutMs) {
            this.fail(
              new UnavailableError(
                ErrorCode.PageSourceLost,
                `the page source did not answer within ${requestTimeoutMs} ms`,
              ),
            );
            return;
          }
        }
      },
      Math.min(1000, requestTimeoutMs),
    );
    this.watchdog.unref();
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (err) =>
      this.fail(
        new UnavailableError(ErrorCode.PageSourceLost, `page source connection failed: ${err.message}`),
      ),
    );
    sock.on('close', () =>
      this.fail(new UnavailableError(ErrorCode.PageSourceLost, 'the page source closed the connection')),
    );
  }

  /** Connects and authenticates; rejects when the source cannot be reached. */
  static async connect(o: {
    host: string;
    port: number;
    token: Buffer;
    timeoutMs?: number;
    /** An answer later than this fails the connection (the source is lost). Default 15 s. */
    requestTimeoutMs?: number;
  }): Promise<PageFetcher> {
    const sock = connect({ host: o.host, port: o.port });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        sock.destroy();
        reject(
          new UnavailableError(ErrorCode.PageSourceLost, `page source ${o.host}:${o.port} did not answer`),
        );
      }, o.timeoutMs ?? 10_000);
      sock.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(
          new UnavailableError(
            ErrorCode.PageSourceLost,
            `cannot reach the page source ${o.host}:${o.port}: ${err.message}`,
          ),
        );
      });
    });
    sock.write(o.token);
    return new PageFetcher(sock, o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
  }

  /** Calls `fn` once when the connection fails (at once if it already has). */
  onFailed(fn: (err: GodwitError) => void): void {
    if (this.failure) fn(this.failure);
    else this.failedListeners.push(fn);
  }

  /** Calls `fn` with each verdict frame the source pushes (`end` after the last), in order. */
  onVerdicts(fn: (v: VerdictRun[] | 'end') => void): void {
    this.verdictListener = fn;
    for (const v of this.verdictBacklog.splice(0)) fn(v);
  }

  /**
   * `nrPages` pages of process `vpid` from `vaddr` on (or fewer, when its run ends sooner), as
   * k × 4096 bytes. Rejects when the source does not hold them or the connection is lost.
   */
  fetch(vpid: number, vaddr: number, nrPages: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1; // 0 is the verdicts' id
    const req = Buffer.alloc(REQUEST_BYTES);
    req.writeUInt32LE(id, 0);
    req.writeUInt32LE(vpid, 4);
    req.writeBigUInt64LE(BigInt(vaddr), 8);
    req.writeUInt32LE(nrPages, 16);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, nrPages, at: performance.now() });
      this.sock.write(req);
    });
  }

  /** Closes the connection; pending fetches reject. */
  close(): void {
    this.fail(new UnavailableError(ErrorCode.PageSourceLost, 'page fetcher closed'));
  }

  private onData(d: Buffer): void {
    this.bytesWire += d.length;
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.buf.length >= RESPONSE_HEADER_BYTES) {
      const id = this.buf.readUInt32LE(0);
      const pages = this.buf.readUInt32LE(4);
      const codec = this.buf.readUInt8(8);
      const len = this.buf.readUInt32LE(12);
      if (id === 0) {
        if (pages > MAX_VERDICT_RUNS || len > MAX_VERDICT_RUNS * VERDICT_BYTES + 1024) {
          this.fail(protocol(`verdict frame of ${pages} runs, ${len} bytes`));
          return;
        }
        if (this.buf.length < RESPONSE_HEADER_BYTES + len) return;
        const body = this.buf.subarray(RESPONSE_HEADER_BYTES, RESPONSE_HEADER_BYTES + len);
        this.buf = this.buf.subarray(RESPONSE_HEADER_BYTES + len);
        let v: VerdictRun[] | 'end';
        try {
          v = pages === 0 ? 'end' : decodeVerdicts(pages, codec, body);
        } catch (err) {
          this.fail(protocol(`bad verdict frame: ${errorMessage(err)}`));
          return;
        }
        if (this.verdictListener) this.verdictListener(v);
        else this.verdictBacklog.push(v);
        continue;
      }
      const p = this.pending.get(id);
      if (!p || pages > p.nrPages || len > MAX_FETCH_PAGES * PAGE_SIZE + 1024) {
        this.fail(
          new InvalidArgumentError(
            ErrorCode.PageProtocol,
            `unexpected page response ${id} (${pages} pages, ${len} bytes)`,
          ),
        );
        return;
      }
      if (this.buf.length < RESPONSE_HEADER_BYTES + len) return;
      const body = this.buf.subarray(RESPONSE_HEADER_BYTES, RESPONSE_HEADER_BYTES + len);
      this.buf = this.buf.subarray(RESPONSE_HEADER_BYTES + len);
      this.pending.delete(id);
      if (pages === 0) {
        p.reject(new InvalidArgumentError(ErrorCode.PageNotHeld, `the source: ${body.toString('utf8')}`));
        continue;
      }
      try {
        p.resolve(Buffer.from(decompressChunk(codec, body, pages * PAGE_SIZE)));
      } catch (err) {
        this.fail(new InvalidArgumentError(ErrorCode.PageProtocol, `bad page payload: ${errorMessage(err)}`));
        return;
      }
    }
  }

  private fail(err: GodwitError): void {
    if (this.failure) return;
    this.failure = err;
    clearInterval(this.watchdog);
    this.sock.destroy();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const fn of this.failedListeners.splice(0)) fn(err);
  }
}
