/**
 * The sending side of the sync protocol. `sendManifest` offers a manifest to a receiver,
 * sends the chunks it wants (read from the source store with bounded read-ahead,
 * compressed, on 1–16 parallel connections that share one work queue, each awaiting its
 * socket's backpressure), and returns once the receiver reports the session complete.
 *
 * Failures of the link (refused, reset, cut, idle timeout, receiver busy) are retried with
 * exponential backoff: every attempt reconnects with the session's resume token and
 * re-offers, and the receiver's fresh WANT lists only what it still lacks, so verified
 * chunks never cross twice. `retries` counts consecutive attempts that made no progress (the
 * WANT did not shrink). Anything else (invalid manifest, digest mismatch, protocol
 * violation, abort) fails at once.
 */
import { connect } from 'node:net';
import type { ChunkStore, Digest, Manifest } from '../core/chunks.js';
import { systemClock, type Clock } from '../core/clock.js';
import {
  ErrorCode,
  FailedPreconditionError,
  GodwitError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
} from '../core/errors.js';
import { nullLogger, type Logger } from '../core/logger.js';
import { encodeManifestDelta, manifestStats, parseManifest } from '../chunks/index.js';
import { ChunkCompressor, DEFAULT_CODEC, type CodecName } from './codec.js';
import { FrameConnection } from './connection.js';
import { abortedError, connectionLost, isRetryable, protocolError, tooLargeError } from './errors.js';
import {
  DEFAULT_MAX_OFFER_BYTES,
  encodeChunk,
  encodeJsonFrame,
  encodeOffer,
  FrameType,
  SENDER_ACCEPTS,
  SENDER_FIRST,
} from './frames.js';
import {
  MAX_STREAMS,
  PROTOCOL_VERSION,
  SESSION_ID_RE,
  type DoneMessage,
  type HelloOkMessage,
} from './messages.js';

/**
 * Default parallel connections: 1. Measured on loopback with a 256 MiB tree (bench-main.ts,
 * zstd 1): 1.75 s with one stream, 1.72 s with two, 1.59 s with four, within noise: the CPU
 * (compression here, decompression and hashing at the receiver) is the bottleneck, not one
 * TCP flow, and the same holds on a clean 1 Gbit/s link. More streams (up to 4) pay off on
 * long, lossy links where a single flow's window cannot fill the pipe (wan: 100 ms RTT, 0.1%
 * loss); callers that know the link is such pass `streams`.
 */
export const DEFAULT_STREAMS = 1;
export const DEFAULT_RETRIES = 5;
/** Chunk bytes read ahead of the sockets, over all streams. */
export const DEFAULT_READ_AHEAD_BYTES = 8 * 1024 * 1024;
/** A stream is opened for at most every this many wanted bytes. */
const BYTES_PER_EXTRA_STREAM = 4 * 1024 * 1024;
const PROGRESS_INTERVAL_MS = 100;

/** What `onProgress` reports. `bytes*` count raw chunk bytes the receiver wanted at first. */
export interface TransferProgress {
  bytesDone: number;
  bytesTotal: number;
  chunksDone: number;
  chunksTotal: number;
  wireBytes: number;
  reconnects: number;
}

/** Options of `sendManifest`. */
export interface SendManifestOptions {
  host: string;
  port: number;
  /** Names the transfer on the receiver (and its directory there). */
  sessionId: string;
  manifest: Manifest;
  /**
   * The manifest was built by this process (a snapshot, a pre-copy round): used as it is, not
   * validated again (a 1 GiB memory image is 262,000 page references). Default false.
   */
  trusted?: boolean;
  /**
   * A manifest the receiver holds as the completed session `name`: the offer is then a delta
   * against it (see manifest-delta.ts), and falls back to the whole manifest if the receiver
   * does not have that base.
   */
  base?: { name: string; manifest: Manifest };
  /** Source of the chunks. */
  store: ChunkStore;
  /** Parallel connections, 1–16. Default 1. */
  streams?: number;
  codec?: CodecName;
  /** zstd level (-7..19). Default 1. */
  level?: number;
  /** Consecutive attempts without progress before giving up. Default 5. */
  retries?: number;
  /** First retry delay; doubles per failed attempt (with jitter) up to maxRetryDelayMs. Default 200 ms. */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Fail a connection after this long without traffic. Default 60 s. */
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  readAheadBytes?: number;
  signal?: AbortSignal;
  onProgress?: (p: TransferProgress) => void;
  log?: Logger;
  clock?: Clock;
}

/** The outcome of `sendManifest`. */
export interface TransferStats {
  /** From the manifest: sum of file sizes, bytes in zero runs, bytes carried inline. */
  logicalBytes: number;
  zeroBytes: number;
  inlineBytes: number;
  /** Distinct chunks of the manifest and their bytes. */
  uniqueChunks: number;
  uniqueChunkBytes: number;
  /** Chunks the receiver lacked at the first offer; the rest it already had (dedup). */
  chunksWanted: number;
  chunksAlreadyThere: number;
  /** Bytes of the distinct chunks the receiver already had. */
  dedupBytes: number;
  /** CHUNK frames written (a chunk cut off in flight is counted again when resent). */
  chunksSent: number;
  /** Uncompressed bytes of the chunks sent, and their encoded size. */
  rawBytesSent: number;
  encodedBytesSent: number;
  /** Every byte written to the sockets, framing and control included. */
  wireBytes: number;
  /** rawBytesSent / encodedBytesSent (1 when nothing was sent). */
  compressionRatio: number;
  durationMs: number;
  /** rawBytesSent in MB (10^6) per second of durationMs. */
  throughputMBps: number;
  /** Attempts after the first. */
  reconnects: number;
  /** Most connections used at once. */
  streams: number;
  codec: CodecName;
  level: number;
}

function invalid(message: string): InvalidArgumentError {
  return new InvalidArgumentError(ErrorCode.InvalidFlag, message);
}

function checkInt(name: string, v: number | undefined, min: number, max: number, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw invalid(`${name} must be an integer in ${min}..${max}`);
  return n;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortedError(signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortedError(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Reads wanted chunks ahead of the senders, holding at most `budget` bytes (or one chunk). */
class ReadAhead {
  private next_ = 0;
  private held = 0;
  private readonly queue: { digest: Digest; size: number; data: Promise<Buffer> }[] = [];

  constructor(
    private readonly store: ChunkStore,
    private readonly digests: readonly Digest[],
    private readonly sizes: ReadonlyMap<Digest, number>,
    private readonly budget: number,
  ) {}

  /** The next chunk and its bytes, or undefined when all were handed out. */
  async next(): Promise<{ digest: Digest; data: Buffer } | undefined> {
    this.fill();
    const item = this.queue.shift();
    if (item === undefined) return undefined;
    try {
      const data = await item.data;
      if (data.length !== item.size) {
        throw new FailedPreconditionError(
          ErrorCode.ChunkStoreCorrupt,
          `source store returned ${data.length} bytes for ${item.digest}, the manifest says ${item.size}`,
        );
      }
      return { digest: item.digest, data };
    } finally {
      this.held -= item.size;
      this.fill();
    }
  }

  private fill(): void {
    while (this.next_ < this.digests.length) {
      const digest = this.digests[this.next_] as Digest;
      const size = this.sizes.get(digest) ?? 0;
      if (this.queue.length > 0 && this.held + size > this.budget) return;
      this.next_++;
      this.held += size;
      const data = this.store.get(digest);
      data.catch(() => undefined); // awaited in next(); never an unhandled rejection
      this.queue.push({ digest, size, data });
    }
  }
}

class SendRun {
  private readonly o: SendManifestOptions;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly peer: string;
  private readonly manifest: Manifest;
  private offer: Buffer;
  /** Whether `offer` is a delta against `SendManifestOptions.base`. */
  private delta: boolean;
  /** ms spent checking the manifest and encoding the offer. */
  private readonly prepareMs: number;
  private readonly sizes = new Map<Digest, number>();
  private readonly maxChunk: number;
  private readonly compressor: ChunkCompressor;
  private readonly streams: number;
  private readonly idleTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly readAheadBytes: number;
  private token: string | undefined;

  // accounting
  private firstWant: { chunks: number; bytes: number } | undefined;
  private leastWanted = Infinity;
  private progressed = false;
  private attemptBase = { bytes: 0, chunks: 0 };
  private attemptSent = { bytes: 0, chunks: 0 };
  private chunksSent = 0;
  private rawBytesSent = 0;
  private encodedBytesSent = 0;
  private wireBytesClosed = 0;
  private readonly live = new Set<FrameConnection>();
  private reconnects = 0;
  private maxStreamsUsed = 0;
  private lastProgressAt = -Infinity;

  constructor(o: SendManifestOptions) {
    this.o = o;
    this.log = (o.log ?? nullLogger).child({ component: 'transfer-client', sessionId: o.sessionId });
    this.clock = o.clock ?? systemClock;
    this.peer = `receiver ${o.host}:${o.port}`;
    if (typeof o.sessionId !== 'string' || !SESSION_ID_RE.test(o.sessionId)) {
      throw new InvalidArgumentError(
        ErrorCode.InvalidName,
        `invalid transfer session id ${JSON.stringify(o.sessionId)}`,
      );
    }
    checkInt('port', o.port, 1, 65_535, 0);
    this.streams = checkInt('streams', o.streams, 1, MAX_STREAMS, DEFAULT_STREAMS);
    checkInt('retries', o.retries, 0, 1000, DEFAULT_RETRIES);
    this.idleTimeoutMs = checkInt('idleTimeoutMs', o.idleTimeoutMs, 1, 86_400_000, 60_000);
    this.connectTimeoutMs = checkInt('connectTimeoutMs', o.connectTimeoutMs, 1, 600_000, 10_000);
    this.readAheadBytes = checkInt('readAheadBytes', o.readAheadBytes, 0, 1 << 30, DEFAULT_READ_AHEAD_BYTES);
    this.compressor = new ChunkCompressor(o.codec ?? DEFAULT_CODEC, o.level);
    const t0 = performance.now();
    this.manifest = o.trusted === true ? o.manifest : parseManifest(o.manifest);
    this.offer = Buffer.from(
      JSON.stringify(
        o.base ? encodeManifestDelta(this.manifest, o.base.manifest, o.base.name) : this.manifest,
      ),
    );
    this.delta = o.base !== undefined;
    this.prepareMs = Math.round(performance.now() - t0);
    if (this.offer.length > DEFAULT_MAX_OFFER_BYTES) {
      throw tooLargeError(
        `manifest of ${this.offer.length} bytes exceeds the offer limit ${DEFAULT_MAX_OFFER_BYTES}`,
      );
    }
    let maxChunk = 0;
    for (const e of this.manifest.entries) {
      if (e.type !== 'file') continue;
      for (const c of e.chunks ?? []) {
        if ('digest' in c) {
          this.sizes.set(c.digest, c.size);
          maxChunk = Math.max(maxChunk, c.size);
        }
      }
    }
    this.maxChunk = maxChunk;
  }

  async run(): Promise<TransferStats> {
    const { signal } = this.o;
    const retries = this.o.retries ?? DEFAULT_RETRIES;
    const started = this.clock.monotonic();
    let failures = 0;
    this.log.info('transfer started', {
      to: this.peer,
      streams: this.streams,
      codec: this.compressor.codec,
      offerBytes: this.offer.length,
      prepareMs: this.prepareMs,
    });
    for (;;) {
      if (signal?.aborted) throw abortedError(signal.reason);
      try {
        await this.attempt();
        break;
      } catch (err) {
        if (signal?.aborted) throw abortedError(signal.reason);
        if (this.delta && (err as GodwitError).code === ErrorCode.ManifestBaseNotFound) {
          this.log.warn('receiver lacks the delta base, offering the whole manifest', {
            err: errorMessage(err),
          });
          this.delta = false;
          this.offer = Buffer.from(JSON.stringify(this.manifest));
          continue;
        }
        if (!isRetryable(err)) throw err;
        if (this.progressed) failures = 0;
        this.progressed = false;
        failures++;
        if (failures > retries) {
          throw new UnavailableError(
            ErrorCode.TransferFailed,
            `transfer ${this.o.sessionId} to ${this.o.host}:${this.o.port} failed after ${failures} attempts without progress: ${errorMessage(err)}`,
            { cause: err, hint: 'check that the destination agent runs and the link is up' },
          );
        }
        const base = this.o.retryDelayMs ?? 200;
        const ceiling = this.o.maxRetryDelayMs ?? 10_000;
        const delay = Math.min(ceiling, base * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);
        this.reconnects++;
        this.log.warn('transfer attempt failed, retrying', {
          err: errorMessage(err),
          code: (err as GodwitError).code,
          attempt: this.reconnects,
          delayMs: Math.round(delay),
        });
        await sleep(delay, signal);
      }
    }
    const durationMs = this.clock.monotonic() - started;
    const stats = this.stats(durationMs);
    this.report(true);
    this.log.info('transfer complete', { ...stats });
    return stats;
  }

  private stats(durationMs: number): TransferStats {
    const m = manifestStats(this.manifest);
    const want = this.firstWant ?? { chunks: 0, bytes: 0 };
    return {
      logicalBytes: m.logicalBytes,
      zeroBytes: m.zeroBytes,
      inlineBytes: m.inlineBytes,
      uniqueChunks: m.uniqueChunks,
      uniqueChunkBytes: m.uniqueChunkBytes,
      chunksWanted: want.chunks,
      chunksAlreadyThere: m.uniqueChunks - want.chunks,
      dedupBytes: m.uniqueChunkBytes - want.bytes,
      chunksSent: this.chunksSent,
      rawBytesSent: this.rawBytesSent,
      encodedBytesSent: this.encodedBytesSent,
      wireBytes: this.wireBytes(),
      compressionRatio: this.encodedBytesSent > 0 ? this.rawBytesSent / this.encodedBytesSent : 1,
      durationMs,
      throughputMBps: durationMs > 0 ? this.rawBytesSent / 1e6 / (durationMs / 1000) : 0,
      reconnects: this.reconnects,
      streams: this.maxStreamsUsed,
      codec: this.compressor.codec,
      level: this.compressor.level,
    };
  }

  private wireBytes(): number {
    let n = this.wireBytesClosed;
    for (const c of this.live) n += c.bytesWritten;
    return n;
  }

  private report(final = false): void {
    const cb = this.o.onProgress;
    if (cb === undefined) return;
    const now = this.clock.monotonic();
    if (!final && now - this.lastProgressAt < PROGRESS_INTERVAL_MS) return;
    this.lastProgressAt = now;
    const total = this.firstWant ?? { chunks: 0, bytes: 0 };
    const p: TransferProgress = {
      bytesDone: final ? total.bytes : Math.min(total.bytes, this.attemptBase.bytes + this.attemptSent.bytes),
      bytesTotal: total.bytes,
      chunksDone: final
        ? total.chunks
        : Math.min(total.chunks, this.attemptBase.chunks + this.attemptSent.chunks),
      chunksTotal: total.chunks,
      wireBytes: this.wireBytes(),
      reconnects: this.reconnects,
    };
    try {
      cb(p);
    } catch (err) {
      this.log.warn('progress callback failed', { err: errorMessage(err) });
    }
  }

  /** One connection: connect, HELLO, HELLO_OK. */
  private async open(stream: number, streams: number, conns: FrameConnection[]): Promise<HelloOkMessage> {
    const socket = connect({ host: this.o.host, port: this.o.port, noDelay: true });
    const conn = new FrameConnection(socket, {
      accept: SENDER_ACCEPTS,
      first: SENDER_FIRST,
      limits: { maxChunkSize: 1 },
      idleTimeoutMs: this.idleTimeoutMs,
      peer: this.peer,
    });
    conns.push(conn);
    this.live.add(conn);
    socket.once('close', () => {
      if (this.live.delete(conn)) this.wireBytesClosed += conn.bytesWritten;
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.destroy(
          connectionLost(`connecting to ${this.peer} timed out after ${this.connectTimeoutMs} ms`),
        );
      }, this.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('close', () => {
        clearTimeout(timer);
        reject(conn.error ?? connectionLost(`cannot connect to ${this.peer}`));
      });
    });
    await conn.send(
      encodeJsonFrame(FrameType.Hello, {
        protocol: PROTOCOL_VERSION,
        role: 'sender',
        sessionId: this.o.sessionId,
        stream,
        streams,
        ...(this.token === undefined ? {} : { resumeToken: this.token }),
      }),
    );
    const { ok } = await conn.expect(FrameType.HelloOk, 'waiting for HELLO_OK');
    if (ok.protocol !== PROTOCOL_VERSION || ok.sessionId !== this.o.sessionId) {
      throw protocolError(`${this.peer} answered for session ${ok.sessionId}, protocol ${ok.protocol}`);
    }
    if (this.token !== undefined && ok.resumeToken !== this.token && stream > 0) {
      throw protocolError(`${this.peer} changed the resume token within an attempt`);
    }
    this.token = ok.resumeToken;
    return ok;
  }

  private async attempt(): Promise<void> {
    const conns: FrameConnection[] = [];
    const { signal } = this.o;
    let failure: unknown;
    const failAll = (err: unknown): void => {
      failure ??= err;
      const e = err instanceof GodwitError ? err : connectionLost('transfer attempt failed', err);
      for (const c of conns) c.destroy(e);
    };
    const onAbort = (): void => failAll(abortedError(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const ok = await this.open(0, this.streams, conns);
      const primary = conns[0] as FrameConnection;
      if (this.offer.length > ok.maxOfferBytes) {
        throw tooLargeError(
          `manifest of ${this.offer.length} bytes exceeds the receiver's limit ${ok.maxOfferBytes}`,
        );
      }
      if (this.maxChunk > ok.maxChunkSize) {
        throw tooLargeError(
          `manifest has a chunk of ${this.maxChunk} bytes, over the receiver's limit ${ok.maxChunkSize}`,
        );
      }
      await primary.send(encodeOffer(this.offer));
      const wanted = await this.readWant(primary);
      const wantedBytes = wanted.reduce((n, d) => n + (this.sizes.get(d) ?? 0), 0);
      this.firstWant ??= { chunks: wanted.length, bytes: wantedBytes };
      if (wanted.length < this.leastWanted) {
        if (this.leastWanted !== Infinity) this.progressed = true;
        this.leastWanted = wanted.length;
      }
      this.attemptBase = {
        bytes: Math.max(0, this.firstWant.bytes - wantedBytes),
        chunks: Math.max(0, this.firstWant.chunks - wanted.length),
      };
      this.attemptSent = { bytes: 0, chunks: 0 };
      this.report();

      const n = Math.max(
        1,
        Math.min(this.streams, wanted.length, Math.ceil(wantedBytes / BYTES_PER_EXTRA_STREAM)),
      );
      if (n > 1) {
        await Promise.all(Array.from({ length: n - 1 }, (_, i) => this.open(i + 1, n, conns)));
      }
      this.maxStreamsUsed = Math.max(this.maxStreamsUsed, n);
      const reader = new ReadAhead(this.o.store, wanted, this.sizes, this.readAheadBytes);
      const dones = await Promise.all(
        conns.map((c) =>
          this.pump(c, reader).catch((err: unknown) => {
            failAll(err);
            throw failure;
          }),
        ),
      );
      if (!dones.some((d) => d.complete)) {
        const missing = Math.min(...dones.map((d) => d.missing));
        throw new UnavailableError(
          ErrorCode.TransferUnfinished,
          `${this.peer} still lacks ${missing} chunks of session ${this.o.sessionId}`,
        );
      }
      await Promise.all(conns.map((c) => c.close()));
    } catch (err) {
      failAll(err);
      throw failure;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      for (const c of conns) c.destroy();
    }
  }

  /** Reads WANT frames up to the last one; every digest must be one the manifest offers. */
  private async readWant(conn: FrameConnection): Promise<Digest[]> {
    const seen = new Set<Digest>();
    const out: Digest[] = [];
    for (;;) {
      const f = await conn.expect(FrameType.Want, 'waiting for WANT');
      for (const d of f.digests) {
        if (!this.sizes.has(d))
          throw protocolError(`${this.peer} wants ${d}, which the manifest does not list`);
        if (!seen.has(d)) {
          seen.add(d);
          out.push(d);
        }
      }
      if (f.last) return out;
    }
  }

  /** Sends chunks from the shared reader until it runs dry, then END; resolves with DONE. */
  private async pump(conn: FrameConnection, reader: ReadAhead): Promise<DoneMessage> {
    let chunks = 0;
    let rawBytes = 0;
    for (;;) {
      if (conn.error) throw conn.error;
      const item = await reader.next();
      if (item === undefined) break;
      const enc = this.compressor.compress(item.data);
      await conn.send(encodeChunk(item.digest, enc.codec, item.data.length, enc.data));
      chunks++;
      rawBytes += item.data.length;
      this.chunksSent++;
      this.rawBytesSent += item.data.length;
      this.encodedBytesSent += enc.data.length;
      this.attemptSent.bytes += item.data.length;
      this.attemptSent.chunks++;
      this.report();
    }
    await conn.send(encodeJsonFrame(FrameType.End, { chunks, rawBytes }));
    const { done } = await conn.expect(FrameType.Done, 'waiting for DONE');
    return done;
  }
}

/**
 * Sends `manifest` and the chunks the receiver lacks; resolves when the receiver has stored
 * every chunk and recorded the manifest. Rejects with TransferFailed after `retries`
 * attempts in a row without progress, TransferAborted when `signal` fires, and at once with
 * the receiver's error for anything that retrying cannot fix.
 */
export async function sendManifest(opts: SendManifestOptions): Promise<TransferStats> {
  return new SendRun(opts).run();
}
