/**
 * A socket speaking frames (internal to transfer/). Reading: frames are decoded as bytes
 * arrive and queued; the socket is paused while the queue holds more than a few frames or
 * MiB, so a fast peer cannot make us buffer without bound. Writing: `send` resolves once the
 * socket's buffer is below a limit, so callers that await it respect backpressure. An ERROR
 * frame from the peer, a decode error, an idle timeout or a socket error fail the
 * connection: every pending and later `next`/`send` rejects with that error.
 */
import type { Socket } from 'node:net';
import { ErrorCode, GodwitError, UnavailableError } from '../core/errors.js';
import { connectionLost, fromWireError, protocolError, toWireError } from './errors.js';
import {
  encodeFrame,
  encodeJsonFrame,
  FrameDecoder,
  FrameType,
  type Frame,
  type FrameLimits,
} from './frames.js';

/** Options of a FrameConnection. */
export interface FrameConnectionOptions {
  accept: ReadonlySet<FrameType>;
  /** Types the peer's first frame may have. */
  first?: ReadonlySet<FrameType>;
  limits?: Partial<FrameLimits>;
  /** Fail the connection after this long without traffic either way. */
  idleTimeoutMs: number;
  /** Who the peer is, for error messages (e.g. `receiver 10.0.0.2:7001`). */
  peer: string;
}

/** Queue bounds past which the socket is paused. */
const MAX_QUEUED_FRAMES = 64;
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** `send` waits for 'drain' once this much is buffered in the socket. */
export const WRITE_BUFFER_LIMIT = 1024 * 1024;

function frameBytes(f: Frame): number {
  switch (f.type) {
    case FrameType.Chunk:
      return f.data.length;
    case FrameType.Offer:
      return f.bytes;
    case FrameType.Want:
      return f.digests.length * 32;
    default:
      return 64;
  }
}

export class FrameConnection {
  readonly socket: Socket;
  private readonly decoder: FrameDecoder;
  private readonly peer: string;
  private readonly queue: Frame[] = [];
  private queuedBytes = 0;
  private waiter: (() => void) | undefined;
  private drainWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: GodwitError | undefined;
  private ended = false;
  private paused = false;

  constructor(socket: Socket, opts: FrameConnectionOptions) {
    this.socket = socket;
    this.peer = opts.peer;
    this.decoder = new FrameDecoder(opts.accept, opts.limits, opts.first);
    socket.setNoDelay(true);
    socket.setTimeout(opts.idleTimeoutMs);
    socket.on('data', (buf: Buffer) => this.onData(buf));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err) =>
      this.fail(connectionLost(`connection to ${this.peer} failed: ${err.message}`, err)),
    );
    socket.on('close', () => {
      if (!this.ended) this.fail(connectionLost(`connection to ${this.peer} closed`));
      this.rejectDrainWaiters(this.failure ?? connectionLost(`connection to ${this.peer} closed`));
    });
    socket.on('timeout', () => {
      this.fail(
        new UnavailableError(ErrorCode.Timeout, `no traffic from ${this.peer} for ${opts.idleTimeoutMs} ms`),
      );
      socket.destroy();
    });
    socket.on('drain', () => {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w.resolve();
    });
  }

  /** The error that failed the connection, if any. */
  get error(): GodwitError | undefined {
    return this.failure;
  }

  get bytesWritten(): number {
    return this.socket.bytesWritten;
  }

  get bytesRead(): number {
    return this.socket.bytesRead;
  }

  /**
   * The next frame; undefined when the peer closed cleanly between frames. PING is answered
   * here and never returned. Rejects once the connection failed.
   */
  async next(): Promise<Frame | undefined> {
    for (;;) {
      const f = this.queue.shift();
      if (f !== undefined) {
        this.queuedBytes -= frameBytes(f);
        if (
          this.paused &&
          this.queue.length < MAX_QUEUED_FRAMES / 2 &&
          this.queuedBytes < MAX_QUEUED_BYTES / 2
        ) {
          this.paused = false;
          this.socket.resume();
        }
        if (f.type === FrameType.Ping) {
          await this.send(encodeFrame(FrameType.Pong, f.payload));
          continue;
        }
        if (f.type === FrameType.Pong) continue;
        return f;
      }
      if (this.failure) throw this.failure;
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /** The next frame, which must be of `type`; anything else (or a clean close) is an error. */
  async expect<T extends FrameType>(type: T, what: string): Promise<Extract<Frame, { type: T }>> {
    const f = await this.next();
    if (f === undefined) throw connectionLost(`${this.peer} closed the connection while ${what}`);
    if (f.type !== type) {
      throw protocolError(
        `${this.peer} sent ${FrameType[f.type]} while ${what} (expected ${FrameType[type]})`,
      );
    }
    return f as Extract<Frame, { type: T }>;
  }

  /** Writes one encoded frame; resolves when the socket can take more. */
  send(frame: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.socket.destroyed || !this.socket.writable) {
      return Promise.reject(connectionLost(`connection to ${this.peer} is closed`));
    }
    const ok = this.socket.write(frame);
    if (ok || this.socket.writableLength < WRITE_BUFFER_LIMIT) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  /** Ends our side after the buffered frames are written; resolves when the socket closed. */
  async close(): Promise<void> {
    if (this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    });
  }

  /**
   * Tells the peer why (best effort, as an ERROR frame), then closes. The connection is
   * failed with `err` from now on.
   */
  abort(err: unknown): void {
    if (
      !this.socket.destroyed &&
      this.socket.writable &&
      !(err instanceof GodwitError && this.failure === err)
    ) {
      try {
        this.socket.write(encodeJsonFrame(FrameType.Error, toWireError(err)));
      } catch {
        // the socket is going anyway
      }
    }
    this.fail(err instanceof GodwitError ? err : connectionLost(`connection to ${this.peer} aborted`, err));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Closes at once without telling the peer. */
  destroy(err?: GodwitError): void {
    if (err) this.fail(err);
    this.socket.destroy();
  }

  private onData(buf: Buffer): void {
    if (this.failure) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(buf);
    } catch (err) {
      this.abort(err);
      return;
    }
    for (const f of frames) {
      if (f.type === FrameType.Error) {
        // The peer gave up on this connection; it will close it.
        this.fail(fromWireError(f.error, this.peer));
        this.socket.destroy();
        return;
      }
      this.queue.push(f);
      this.queuedBytes += frameBytes(f);
    }
    if (!this.paused && (this.queue.length >= MAX_QUEUED_FRAMES || this.queuedBytes >= MAX_QUEUED_BYTES)) {
      this.paused = true;
      this.socket.pause();
    }
    this.wake();
  }

  private onEnd(): void {
    try {
      this.decoder.finish();
      this.ended = true;
      this.wake();
    } catch (err) {
      this.fail(err instanceof GodwitError ? err : connectionLost(`connection to ${this.peer} ended`, err));
      this.socket.destroy();
    }
  }

  private wake(): void {
    const w = this.waiter;
    if (w !== undefined && (this.queue.length > 0 || this.failure !== undefined || this.ended)) {
      this.waiter = undefined;
      w();
    }
  }

  private fail(err: GodwitError): void {
    if (this.failure) return;
    this.failure = err;
    this.wake();
    this.rejectDrainWaiters(err);
  }

  private rejectDrainWaiters(err: GodwitError): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w.reject(err);
  }
}
