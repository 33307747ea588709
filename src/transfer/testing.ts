/**
 * Test and benchmark helpers for the sync protocol: in-memory manifests, a loopback TCP
 * proxy that cuts connections after N bytes, a store wrapper that counts writes, and a raw
 * frame client for playing a hostile sender. Loopback only.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  MANIFEST_VERSION,
  type ChunkRef,
  type ChunkStore,
  type Digest,
  type Manifest,
  type ManifestEntry,
} from '../core/chunks.js';
import { GodwitError } from '../core/errors.js';
import { nullLogger } from '../core/logger.js';
import { digestOf, isZero, MemoryChunkStore } from '../chunks/index.js';
import { FrameDecoder, SENDER_ACCEPTS, type Frame } from './frames.js';
import { startTransferServer, type TransferServer, type TransferServerOptions } from './server.js';

/** A file for `buildManifest`. */
export interface TestFile {
  path: string;
  data: Buffer;
  mode?: number;
}

/**
 * Cuts each file into `chunkSize` chunks, stores the non-zero ones in `store`, records
 * all-zero chunks as zero runs and files under `inlineMax` bytes inline.
 */
export async function buildManifest(
  store: ChunkStore,
  files: readonly TestFile[],
  opts: { chunkSize?: number; inlineMax?: number; label?: string } = {},
): Promise<Manifest> {
  const chunkSize = opts.chunkSize ?? 65536;
  const inlineMax = opts.inlineMax ?? 0;
  const entries: ManifestEntry[] = [];
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!dirs.has(dir)) {
        dirs.add(dir);
        entries.push({ type: 'dir', path: dir, mode: 0o755 });
      }
    }
    const mode = f.mode ?? 0o644;
    if (f.data.length > 0 && f.data.length <= inlineMax) {
      entries.push({
        type: 'file',
        path: f.path,
        mode,
        size: f.data.length,
        inline: f.data.toString('base64'),
      });
      continue;
    }
    const chunks: ChunkRef[] = [];
    for (let off = 0; off < f.data.length; off += chunkSize) {
      const piece = f.data.subarray(off, Math.min(off + chunkSize, f.data.length));
      const last = chunks[chunks.length - 1];
      if (isZero(piece)) {
        if (last !== undefined && 'zero' in last) last.zero += piece.length;
        else chunks.push({ zero: piece.length });
        continue;
      }
      const digest = digestOf(piece);
      await store.put(digest, piece);
      chunks.push({ digest, size: piece.length });
    }
    entries.push({ type: 'file', path: f.path, mode, size: f.data.length, chunks });
  }
  return {
    version: MANIFEST_VERSION,
    label: opts.label ?? 'test',
    createdAt: new Date(0).toISOString(),
    entries,
  };
}

/** A ChunkStore wrapper that counts `put` calls per digest. */
export class CountingStore implements ChunkStore {
  readonly puts = new Map<Digest, number>();
  constructor(readonly inner: ChunkStore) {}
  has(d: Digest): Promise<boolean> {
    return this.inner.has(d);
  }
  missing(ds: readonly Digest[]): Promise<Digest[]> {
    return this.inner.missing(ds);
  }
  get(d: Digest): Promise<Buffer> {
    return this.inner.get(d);
  }
  async put(d: Digest, data: Buffer): Promise<void> {
    this.puts.set(d, (this.puts.get(d) ?? 0) + 1);
    await this.inner.put(d, data);
  }
  retain(name: string, m: Manifest): Promise<void> {
    return this.inner.retain(name, m);
  }
  release(name: string): Promise<void> {
    return this.inner.release(name);
  }
  gc(): Promise<{ chunks: number; bytes: number }> {
    return this.inner.gc();
  }
  usage(): Promise<{ chunks: number; bytes: number }> {
    return this.inner.usage();
  }
}

/** A loopback TCP proxy; `cutAfter(i)` gives the client→server bytes after which connection i is cut. */
export class CutProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  /** Connections accepted so far, and how many were cut. */
  connections = 0;
  cuts = 0;

  constructor(
    private readonly target: { host: string; port: number },
    private readonly cutAfter: (connIndex: number) => number | undefined,
  ) {}

  async start(): Promise<number> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', () => resolve()));
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: Socket): void {
    const index = this.connections++;
    const limit = this.cutAfter(index);
    const upstream = connect(this.target);
    this.sockets.add(client);
    this.sockets.add(upstream);
    let forwarded = 0;
    const cut = (): void => {
      this.cuts++;
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (buf: Buffer) => {
      if (limit !== undefined && forwarded + buf.length >= limit) {
        upstream.write(buf.subarray(0, Math.max(0, limit - forwarded)), () => cut());
        forwarded = limit;
        client.pause();
        return;
      }
      forwarded += buf.length;
      if (!upstream.write(buf)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.on('data', (buf: Buffer) => {
      if (!client.write(buf)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    const done = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', done);
    upstream.on('error', done);
    client.on('close', done);
    upstream.on('close', done);
  }
}

/** A raw protocol client: writes arbitrary bytes and reads decoded frames from a receiver. */
export class RawClient {
  private readonly decoder = new FrameDecoder(SENDER_ACCEPTS);
  readonly frames: Frame[] = [];
  closed = false;
  decodeError: unknown;
  private readonly socket: Socket;
  private readonly closedP: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (b: Buffer) => {
      try {
        this.frames.push(...this.decoder.push(b));
      } catch (err) {
        this.decodeError = err;
      }
    });
    socket.on('error', () => undefined);
    this.closedP = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  static async connect(port: number): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  write(buf: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(buf);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Waits until a frame matching `pred` arrived (or throws after `ms`). */
  async waitFor(pred: (f: Frame) => boolean, ms = 5000): Promise<Frame> {
    const deadline = Date.now() + ms;
    for (;;) {
      const f = this.frames.find(pred);
      if (f) return f;
      if (this.closed || Date.now() > deadline) {
        throw new Error(
          `no matching frame (closed=${this.closed}, got ${this.frames.map((x) => x.type).join(',')})`,
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Resolves when the receiver closed the connection (or throws after `ms`). */
  async waitClosed(ms = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closedP,
      new Promise<void>((_, reject) => {
        timer = setTimeout(() => reject(new Error('connection not closed')), ms);
      }),
    ]).finally(() => clearTimeout(timer));
  }
}

/** For `assert.rejects`: the error is a GodwitError with `code` (anything else is rethrown). */
export function hasCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    if (err instanceof GodwitError && err.code === code) return true;
    throw err;
  };
}

let receivers = 0;

/**
 * A transfer server on loopback over a counting in-memory store, recording its sessions in a
 * fresh directory under `parentDir`.
 */
export async function startTestReceiver(
  parentDir: string,
  opts: Partial<TransferServerOptions> = {},
): Promise<{ server: TransferServer; store: CountingStore; mem: MemoryChunkStore; dataDir: string }> {
  const mem = new MemoryChunkStore();
  const store = new CountingStore(mem);
  const dataDir = join(parentDir, `recv-${receivers++}`);
  const server = await startTransferServer({
    store,
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    log: nullLogger,
    idleTimeoutMs: 10_000,
    ...opts,
  });
  return { server, store, mem, dataDir };
}
